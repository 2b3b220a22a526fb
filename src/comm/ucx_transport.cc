// UcxContext and UcxEndpoint: tag-matched transfers between endpoints (one UCP worker each) over
// shared memory or TCP, within and across processes. A UCX tag carries the sender's endpoint id
// in its top 16 bits and the caller's tag in the low 48, and receives match all 64 bits.
#include "comm/transport.h"

#if MP_COMM_HAVE_UCX

#include <ucp/api/ucp.h>

#include <cstdlib>
#include <map>
#include <thread>
#include <vector>

namespace meshpipe::comm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kSenderShift = 48;
constexpr ucp_tag_t kSenderMask = ~ucp_tag_t{0} << kSenderShift;
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};
constexpr int kMaxEndpoints = 1 << 16;
// wait() polls the worker without pause until it has been idle this long, then sleeps
// kIdleSleep between polls, so several endpoints on a 2-core machine leave each other CPU time.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(200);
constexpr auto kIdleSleep = std::chrono::microseconds(20);
// Teardown progresses closing endpoints and cancelled requests at most this long.
constexpr auto kTeardownLimit = std::chrono::seconds(2);

ucp_tag_t make_tag(int sender, uint64_t tag) { return (ucp_tag_t(sender) << kSenderShift) | tag; }

// The one place UCX status codes become a Status.
Status ucs_status(ucs_status_t status, std::string_view what) {
  if (status == UCS_OK) return Status::ok();
  Errc code = Errc::kUnavailable;
  switch (status) {
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_ENDPOINT_TIMEOUT:
      code = Errc::kTimeout;
      break;
    case UCS_ERR_NO_MEMORY:
      code = Errc::kResourceExhausted;
      break;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_MESSAGE_TRUNCATED:
      code = Errc::kInvalidArgument;
      break;
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_CONNECTION_RESET:
      code = Errc::kIo;
      break;
    default:
      break;
  }
  return Status(code, fmt::format("{}: {}", what, ucs_status_string(status)));
}

// An in-flight UCX request and what wait() reports about it.
struct Pending {
  void* request = nullptr;  // nullptr: completed at once, with `result`
  bool is_recv = false;
  int peer = 0;
  uint64_t tag = 0;
  int64_t bytes = 0;
  Status result;
};

// "send to endpoint 1 tag 7 (64 bytes)".
std::string describe(const Pending& p) {
  return fmt::format("{} endpoint {} tag {} ({} bytes)", p.is_recv ? "recv from" : "send to",
                     p.peer, p.tag, p.bytes);
}

class UcxContextImpl;

class UcxEndpointImpl final : public UcxEndpoint {
 public:
  UcxEndpointImpl(std::shared_ptr<UcxContextImpl> context, ucp_worker_h worker, std::string address,
                  int self, int size)
      : context_(std::move(context)),
        worker_(worker),
        address_(std::move(address)),
        self_(self),
        size_(size),
        peers_(size_t(size), nullptr) {}

  ~UcxEndpointImpl() override;

  int self() const override { return self_; }
  int size() const override { return size_; }
  std::string backend() const override { return "ucx"; }
  std::string address() const override { return address_; }

  Status connect(int id, const std::string& address) override;
  Expected<Request> send(int peer, uint64_t tag, const void* data, int64_t bytes) override;
  Expected<Request> recv(int peer, uint64_t tag, void* data, int64_t bytes) override;
  Status wait(Request& request, std::chrono::milliseconds timeout) override;
  bool test(Request& request) override;
  void cancel(Request& request) override;
  void set_abort_flag(const std::atomic<bool>* flag) override { abort_flag_ = flag; }

 private:
  Status check_args(std::string_view verb, int peer, uint64_t tag, const void* data,
                    int64_t bytes) const;
  Request track(Pending pending);
  // Releases a completed request and returns its result.
  Status finish(std::map<int64_t, Pending>::iterator it, ucs_status_t status, size_t length,
                Request& request);

  std::shared_ptr<UcxContextImpl> context_;  // outlives the worker
  ucp_worker_h worker_;
  std::string address_;
  int self_;
  int size_;
  std::vector<ucp_ep_h> peers_;  // nullptr until connect()
  std::map<int64_t, Pending> pending_;
  int64_t next_id_ = 0;
  const std::atomic<bool>* abort_flag_ = nullptr;
};

class UcxContextImpl final : public UcxContext,
                             public std::enable_shared_from_this<UcxContextImpl> {
 public:
  explicit UcxContextImpl(ucp_context_h context) : context_(context) {}
  ~UcxContextImpl() override { ucp_cleanup(context_); }

  Expected<std::unique_ptr<Transport>> create_endpoint(int id, int size) override {
    if (size < 1 || size > kMaxEndpoints || id < 0 || id >= size) {
      return make_error(Errc::kInvalidArgument, "ucx: endpoint {} of a fabric of {} (at most {})",
                        id, size, kMaxEndpoints);
    }
    // One thread at a time uses an endpoint, not always the one that created it.
    ucp_worker_params_t params{};
    params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
    ucp_worker_h worker = nullptr;
    MP_RETURN_IF_ERROR(ucs_status(ucp_worker_create(context_, &params, &worker),
                                  fmt::format("ucx: creating the worker of endpoint {}", id)));
    ucp_address_t* address = nullptr;
    size_t length = 0;
    Status status = ucs_status(ucp_worker_get_address(worker, &address, &length),
                               fmt::format("ucx: address of endpoint {}", id));
    if (!status.is_ok()) {
      ucp_worker_destroy(worker);
      return status;
    }
    std::string bytes(reinterpret_cast<const char*>(address), length);
    ucp_worker_release_address(worker, address);
    return std::unique_ptr<Transport>(
        std::make_unique<UcxEndpointImpl>(shared_from_this(), worker, std::move(bytes), id, size));
  }

 private:
  ucp_context_h context_;
};

// Force-closes every connection (requests on them end with UCS_ERR_CANCELED), cancels posted
// receives, progresses until all of it is done or kTeardownLimit passes, then frees the worker.
UcxEndpointImpl::~UcxEndpointImpl() {
  std::vector<void*> closing;
  ucp_request_param_t close_param{};
  close_param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  close_param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  for (ucp_ep_h ep : peers_) {
    if (ep == nullptr) continue;
    ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &close_param);
    if (request != nullptr && !UCS_PTR_IS_ERR(request)) closing.push_back(request);
  }
  for (auto& [id, p] : pending_) {
    if (p.request != nullptr) {
      ucp_request_cancel(worker_, p.request);
      closing.push_back(p.request);
    }
  }
  const auto deadline = Clock::now() + kTeardownLimit;
  auto busy = [&] {
    for (void* request : closing) {
      if (ucp_request_check_status(request) == UCS_INPROGRESS) return true;
    }
    return false;
  };
  while (busy() && Clock::now() < deadline) ucp_worker_progress(worker_);
  for (void* request : closing) ucp_request_free(request);
  ucp_worker_destroy(worker_);
}

Status UcxEndpointImpl::connect(int id, const std::string& address) {
  if (id < 0 || id >= size_) {
    return make_error(Errc::kInvalidArgument, "ucx endpoint {}: connect to {} of a fabric of {}",
                      self_, id, size_);
  }
  if (address.empty()) {
    return make_error(Errc::kInvalidArgument, "ucx endpoint {}: empty address for endpoint {}",
                      self_, id);
  }
  if (peers_[size_t(id)] != nullptr) {
    return make_error(Errc::kInvalidArgument, "ucx endpoint {}: already connected to endpoint {}",
                      self_, id);
  }
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  return ucs_status(ucp_ep_create(worker_, &params, &peers_[size_t(id)]),
                    fmt::format("ucx endpoint {}: connecting to endpoint {}", self_, id));
}

Status UcxEndpointImpl::check_args(std::string_view verb, int peer, uint64_t tag, const void* data,
                                   int64_t bytes) const {
  if (peer < 0 || peer >= size_) {
    return make_error(Errc::kInvalidArgument, "{} endpoint {}: not an endpoint of a fabric of {}",
                      verb, peer, size_);
  }
  if (tag > kMaxTransportTag) {
    return make_error(Errc::kInvalidArgument, "{} endpoint {}: tag {} exceeds 2^48 - 1", verb, peer,
                      tag);
  }
  if (bytes < 0 || (bytes > 0 && data == nullptr)) {
    return make_error(Errc::kInvalidArgument, "{} endpoint {} tag {}: bad buffer ({} bytes at {})",
                      verb, peer, tag, bytes, data);
  }
  return Status::ok();
}

Request UcxEndpointImpl::track(Pending pending) {
  const int64_t id = next_id_++;
  pending_.emplace(id, std::move(pending));
  return Request{id};
}

Expected<Request> UcxEndpointImpl::send(int peer, uint64_t tag, const void* data, int64_t bytes) {
  MP_RETURN_IF_ERROR(check_args("send to", peer, tag, data, bytes));
  ucp_ep_h ep = peers_[size_t(peer)];
  if (ep == nullptr) {
    return make_error(Errc::kUnavailable,
                      "send to endpoint {} tag {}: endpoint {} is not connected", peer, tag, self_);
  }
  ucp_request_param_t param{};
  ucs_status_ptr_t request =
      ucp_tag_send_nbx(ep, data, size_t(bytes), make_tag(self_, tag), &param);
  Pending pending{nullptr, false, peer, tag, bytes, Status::ok()};
  if (request == nullptr) return Request{};  // sent in place
  if (UCS_PTR_IS_ERR(request)) return ucs_status(UCS_PTR_STATUS(request), describe(pending));
  pending.request = request;
  return track(std::move(pending));
}

Expected<Request> UcxEndpointImpl::recv(int peer, uint64_t tag, void* data, int64_t bytes) {
  MP_RETURN_IF_ERROR(check_args("recv from", peer, tag, data, bytes));
  // Deny immediate completion, so the message length is always checked in finish().
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  ucs_status_ptr_t request =
      ucp_tag_recv_nbx(worker_, data, size_t(bytes), make_tag(peer, tag), kFullMask, &param);
  Pending pending{nullptr, true, peer, tag, bytes, Status::ok()};
  if (UCS_PTR_IS_ERR(request)) return ucs_status(UCS_PTR_STATUS(request), describe(pending));
  if (request == nullptr) {
    pending.result =
        make_error(Errc::kInternal, "{}: UCX completed the receive in place", describe(pending));
  }
  pending.request = request;
  return track(std::move(pending));
}

Status UcxEndpointImpl::finish(std::map<int64_t, Pending>::iterator it, ucs_status_t status,
                               size_t length, Request& request) {
  const Pending& p = it->second;
  Status result;
  if (p.request == nullptr) {
    result = p.result;
  } else if (p.is_recv && status == UCS_ERR_MESSAGE_TRUNCATED) {
    // UCX reports the sender's length for eager messages; otherwise only that it was longer.
    const std::string actual = int64_t(length) > p.bytes
                                   ? fmt::format("the message has {} bytes", length)
                                   : std::string("the message is longer");
    result =
        make_error(Errc::kInvalidArgument, "recv from endpoint {} tag {}: expected {} bytes, {}",
                   p.peer, p.tag, p.bytes, actual);
  } else if (p.is_recv && status == UCS_OK && int64_t(length) != p.bytes) {
    result = make_error(Errc::kInvalidArgument,
                        "recv from endpoint {} tag {}: expected {} bytes, the message has {} bytes",
                        p.peer, p.tag, p.bytes, length);
  } else {
    result = ucs_status(status, describe(p));
  }
  if (p.request != nullptr) ucp_request_free(p.request);
  pending_.erase(it);
  request.id = -1;
  return result;
}

Status UcxEndpointImpl::wait(Request& request, std::chrono::milliseconds timeout) {
  if (request.id < 0) return Status::ok();
  auto it = pending_.find(request.id);
  if (it == pending_.end()) {
    return make_error(Errc::kInvalidArgument, "ucx endpoint {}: unknown request {}", self_,
                      request.id);
  }
  const Pending& p = it->second;
  const auto deadline = Clock::now() + timeout;
  auto last_busy = Clock::now();
  while (true) {
    ucp_tag_recv_info_t info{};
    ucs_status_t status = UCS_OK;
    if (p.request != nullptr) {
      status = p.is_recv ? ucp_tag_recv_request_test(p.request, &info)
                         : ucp_request_check_status(p.request);
    }
    if (status != UCS_INPROGRESS) return finish(it, status, info.length, request);
    const auto now = Clock::now();
    if (now >= deadline) {
      return make_error(Errc::kTimeout, "{} did not complete within {} ms", describe(p),
                        timeout.count());
    }
    if (abort_flag_ != nullptr && abort_flag_->load(std::memory_order_relaxed)) {
      return make_error(Errc::kUnavailable, "{} given up: the run was aborted", describe(p));
    }
    if (ucp_worker_progress(worker_) != 0) {
      last_busy = now;
    } else if (now - last_busy > kSpinBeforeSleep) {
      std::this_thread::sleep_for(kIdleSleep);
    }
  }
}

// Cancels the UCX request and progresses until UCX is done with its buffer (kTeardownLimit at
// most: past it the buffer may still be touched, which only a broken peer connection causes).
void UcxEndpointImpl::cancel(Request& request) {
  if (request.id < 0) return;
  auto it = pending_.find(request.id);
  request.id = -1;
  if (it == pending_.end()) return;
  void* r = it->second.request;
  if (r != nullptr) {
    ucp_request_cancel(worker_, r);
    const auto deadline = Clock::now() + kTeardownLimit;
    while (ucp_request_check_status(r) == UCS_INPROGRESS && Clock::now() < deadline) {
      ucp_worker_progress(worker_);
    }
    ucp_request_free(r);
  }
  pending_.erase(it);
}

bool UcxEndpointImpl::test(Request& request) {
  if (request.id < 0) return true;
  auto it = pending_.find(request.id);
  if (it == pending_.end() || it->second.request == nullptr) return true;
  ucp_worker_progress(worker_);
  return ucp_request_check_status(it->second.request) != UCS_INPROGRESS;
}

}  // namespace

bool ucx_available() { return true; }

Expected<std::shared_ptr<UcxContext>> UcxContext::create() {
  ucp_config_t* config = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &config);
  if (status != UCS_OK) {
    return make_error(Errc::kUnavailable, "ucx: reading the configuration (UCX_* variables): {}",
                      ucs_status_string(status));
  }
  // Every message eager, none by rendezvous: a rendezvous send completes only once the sender's
  // worker progresses again after the receiver answers, and a device blocked in a collective
  // (Gloo waits on its own) progresses nothing, so two pipeline stages whose devices also meet
  // in collectives waited on each other forever (gpt-cpu dp 2 x pp 2 on two processes hung in
  // its first step on 256 KiB activations). A user's UCX_RNDV_THRESH wins.
  if (std::getenv("UCX_RNDV_THRESH") == nullptr) {
    status = ucp_config_modify(config, "RNDV_THRESH", "inf");
    if (status != UCS_OK) {
      ucp_config_release(config);
      return make_error(Errc::kUnavailable, "ucx: setting RNDV_THRESH: {}",
                        ucs_status_string(status));
    }
  }
  // Endpoints of this context are driven by different threads, so the context must be
  // thread-safe (mt_workers_shared); each worker is used by one thread at a time.
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                      UCP_PARAM_FIELD_TAG_SENDER_MASK;
  params.features = UCP_FEATURE_TAG;
  params.mt_workers_shared = 1;
  params.tag_sender_mask = kSenderMask;
  ucp_context_h context = nullptr;
  status = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (status != UCS_OK) {
    return make_error(Errc::kUnavailable, "ucx: ucp_init failed: {}", ucs_status_string(status));
  }
  return std::shared_ptr<UcxContext>(std::make_shared<UcxContextImpl>(context));
}

Expected<std::vector<std::unique_ptr<Transport>>> make_ucx_fabric(int size) {
  if (size < 1 || size > kMaxEndpoints) {
    return make_error(Errc::kInvalidArgument, "ucx fabric of {} endpoints (1 to {})", size,
                      kMaxEndpoints);
  }
  MP_ASSIGN_OR_RETURN(std::shared_ptr<UcxContext> context, UcxContext::create());
  std::vector<std::unique_ptr<Transport>> endpoints;
  std::vector<std::string> addresses;
  for (int i = 0; i < size; ++i) {
    MP_ASSIGN_OR_RETURN(std::unique_ptr<Transport> endpoint, context->create_endpoint(i, size));
    addresses.push_back(static_cast<UcxEndpoint&>(*endpoint).address());
    endpoints.push_back(std::move(endpoint));
  }
  // Every pair, self included, so an endpoint may also send to itself.
  for (int i = 0; i < size; ++i) {
    auto& endpoint = static_cast<UcxEndpoint&>(*endpoints[size_t(i)]);
    for (int j = 0; j < size; ++j) MP_RETURN_IF_ERROR(endpoint.connect(j, addresses[size_t(j)]));
  }
  return endpoints;
}

}  // namespace meshpipe::comm

#else  // !MP_COMM_HAVE_UCX

namespace meshpipe::comm {

namespace {
constexpr const char* kNoUcx =
    "this build has no UCX (configure with MP_ENABLE_UCX=AUTO or ON and libucx-dev installed)";
}  // namespace

bool ucx_available() { return false; }

Expected<std::shared_ptr<UcxContext>> UcxContext::create() {
  return make_error(Errc::kUnavailable, "ucx context: {}", kNoUcx);
}

Expected<std::vector<std::unique_ptr<Transport>>> make_ucx_fabric(int size) {
  return make_error(Errc::kUnavailable, "ucx fabric of {} endpoints: {}", size, kNoUcx);
}

}  // namespace meshpipe::comm

#endif  // MP_COMM_HAVE_UCX
