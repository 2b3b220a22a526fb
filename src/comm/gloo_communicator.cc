// make_gloo_communicator: collectives over Gloo's TCP transport, across threads or processes,
// with rendezvous through a RendezvousStore. Every Gloo exception is caught here and returned
// as a Status; after a failure the communicator refuses further collectives.
#include "comm/communicator.h"
#include "comm/internal/check.h"

#if MP_COMM_HAVE_GLOO

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <cstring>
#include <exception>
#include <vector>

namespace meshpipe::comm {
namespace {

// Carries a store failure (a rendezvous key that never appeared) through Gloo's code, which
// only knows exceptions, back to make_gloo_communicator.
struct StoreFailure : std::exception {
  explicit StoreFailure(Status s) : status(std::move(s)) {}
  const char* what() const noexcept override { return status.message().c_str(); }
  Status status;
};

// gloo::rendezvous::Store over our RendezvousStore; every key is put under `prefix/`.
class StoreAdapter final : public gloo::rendezvous::Store {
 public:
  StoreAdapter(std::shared_ptr<RendezvousStore> store, std::string prefix,
               std::chrono::milliseconds timeout)
      : store_(std::move(store)), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    store_->set(full_key(key), std::string(data.begin(), data.end()));
  }

  std::vector<char> get(const std::string& key) override {
    Expected<std::string> value = store_->get(full_key(key), timeout_);
    if (!value) throw StoreFailure(value.status());
    return std::vector<char>(value->begin(), value->end());
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (const std::string& key : keys) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      Expected<std::string> value =
          store_->get(full_key(key), std::max(left, std::chrono::milliseconds(1)));
      if (!value) throw StoreFailure(value.status());
    }
  }

 private:
  std::string full_key(const std::string& key) const { return prefix_ + "/" + key; }

  std::shared_ptr<RendezvousStore> store_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

// Gloo reports a timeout only in its message ("Timed out waiting 500ms for recv operation").
bool is_timeout_message(const std::string& message) {
  return message.find("Timed out") != std::string::npos ||
         message.find("timed out") != std::string::npos;
}

// Runs `body`, turning whatever it throws into a Status that starts with `what`.
template <class Body>
Status call_gloo(const std::string& what, Body&& body) {
  try {
    body();
    return Status::ok();
  } catch (const StoreFailure& e) {
    return e.status.with_context(what);
  } catch (const gloo::IoException& e) {
    const std::string message = e.what();
    return Status(is_timeout_message(message) ? Errc::kTimeout : Errc::kIo,
                  fmt::format("{}: {}", what, message));
  } catch (const gloo::EnforceNotMet& e) {
    return make_error(Errc::kInternal, "{}: gloo check failed: {}", what, e.what());
  } catch (const std::exception& e) {
    const std::string message = e.what();
    return Status(is_timeout_message(message) ? Errc::kTimeout : Errc::kUnavailable,
                  fmt::format("{}: {}", what, message));
  }
}

using internal::check_buffer;

// Element-wise sum for Gloo's all-reduce: c = a + b.
void sum_floats(void* c, const void* a, const void* b, size_t n) {
  auto* out = static_cast<float*>(c);
  const auto* x = static_cast<const float*>(a);
  const auto* y = static_cast<const float*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = x[i] + y[i];
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::transport::Device> device,
                   std::shared_ptr<gloo::rendezvous::Context> context,
                   std::chrono::milliseconds timeout)
      : device_(std::move(device)), context_(std::move(context)), timeout_(timeout) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }
  std::string backend() const override { return "gloo"; }

  Status all_reduce(float* data, int64_t count) override {
    MP_RETURN_IF_ERROR(check_buffer(data, count, "all-reduce"));
    return all_reduce_floats(data, count, fmt::format("gloo all-reduce of {} floats", count));
  }

  Status all_gather(const void* in, void* out, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, "all-gather"));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, "all-gather"));
    const std::string what = fmt::format("gloo all-gather of {} bytes", bytes);
    if (bytes == 0) return barrier_as(what);
    // Our chunk goes into `out` first, so Gloo runs in place (output only).
    auto* mine = static_cast<uint8_t*>(out) + rank() * bytes;
    if (mine != in) std::memmove(mine, in, size_t(bytes));
    return guarded(what, [&] {
      gloo::AllgatherOptions opts(context_);
      opts.setOutput(static_cast<uint8_t*>(out), size_t(bytes * size()));
      opts.setTag(next_tag());
      opts.setTimeout(timeout_);
      gloo::allgather(opts);
    });
  }

  // All-reduce of the whole input, then a copy of this rank's chunk: twice the traffic of a
  // true reduce-scatter, chosen over Gloo's legacy ReduceScatterHalvingDoubling (int counts,
  // context-wide timeout only) because it shares the checked all-reduce path.
  Status reduce_scatter(const float* in, float* out, int64_t count) override {
    MP_RETURN_IF_ERROR(check_buffer(in, count, "reduce-scatter"));
    MP_RETURN_IF_ERROR(check_buffer(out, count, "reduce-scatter"));
    const std::string what = fmt::format("gloo reduce-scatter of {} floats", count);
    if (count == 0) return barrier_as(what);
    scratch_.assign(in, in + count * size());
    MP_RETURN_IF_ERROR(all_reduce_floats(scratch_.data(), count * size(), what));
    std::memcpy(out, scratch_.data() + rank() * count, sizeof(float) * size_t(count));
    return Status::ok();
  }

  Status all_to_all(const void* in, void* out, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, "all-to-all"));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, "all-to-all"));
    const std::string what = fmt::format("gloo all-to-all of {} bytes", bytes);
    if (bytes == 0) return barrier_as(what);
    const size_t total = size_t(bytes * size());
    // Gloo needs distinct input and output buffers.
    const auto* src = static_cast<const uint8_t*>(in);
    if (src < static_cast<const uint8_t*>(out) + total &&
        static_cast<const uint8_t*>(out) < src + total) {
      staging_.assign(src, src + total);
      src = staging_.data();
    }
    return guarded(what, [&] {
      gloo::AlltoallOptions opts(context_);
      opts.setInput(const_cast<uint8_t*>(src), total);
      opts.setOutput(static_cast<uint8_t*>(out), total);
      opts.setTag(next_tag());
      opts.setTimeout(timeout_);
      gloo::alltoall(opts);
    });
  }

  Status broadcast(void* data, int64_t bytes, int root) override {
    MP_RETURN_IF_ERROR(check_buffer(data, bytes, "broadcast"));
    if (root < 0 || root >= size()) {
      return make_error(Errc::kInvalidArgument, "broadcast: root {} is not a rank of a group of {}",
                        root, size());
    }
    const std::string what = fmt::format("gloo broadcast of {} bytes from rank {}", bytes, root);
    if (bytes == 0) return barrier_as(what);
    return guarded(what, [&] {
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(static_cast<uint8_t*>(data), size_t(bytes));
      opts.setRoot(root);
      opts.setTag(next_tag());
      opts.setTimeout(timeout_);
      gloo::broadcast(opts);
    });
  }

  Status barrier() override { return barrier_as("gloo barrier"); }

 private:
  Status all_reduce_floats(float* data, int64_t count, const std::string& what) {
    if (count == 0) return barrier_as(what);
    return guarded(what, [&] {
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(data, size_t(count));
      opts.setReduceFunction(&sum_floats);
      opts.setTag(next_tag());
      opts.setTimeout(timeout_);
      gloo::allreduce(opts);
    });
  }

  // A barrier reported under `what`: zero-length collectives still synchronise the group.
  Status barrier_as(const std::string& what) {
    return guarded(what, [&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(next_tag());
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    });
  }

  // Refuses to run after an earlier failure (Gloo's pairs are then in an unknown state), else
  // runs `body` and remembers a failure.
  template <class Body>
  Status guarded(const std::string& what, Body&& body) {
    if (!failure_.is_ok()) {
      return make_error(Errc::kUnavailable, "{}: gloo communicator failed earlier: {}", what,
                        failure_.message());
    }
    Status status = call_gloo(what, std::forward<Body>(body));
    if (!status.is_ok()) failure_ = status;
    return status;
  }

  // A fresh tag per collective; every rank calls collectives in the same order, so tags match.
  uint32_t next_tag() { return next_tag_++; }

  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::chrono::milliseconds timeout_;
  uint32_t next_tag_ = 1;
  Status failure_;
  std::vector<float> scratch_;
  std::vector<uint8_t> staging_;
};

}  // namespace

bool gloo_available() { return true; }

Expected<std::unique_ptr<Communicator>> make_gloo_communicator(
    int rank, int size, std::shared_ptr<RendezvousStore> store, const GlooOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return make_error(Errc::kInvalidArgument, "gloo: rank {} of a group of {}", rank, size);
  }
  if (store == nullptr) return make_error(Errc::kInvalidArgument, "gloo: no rendezvous store");
  if (options.timeout.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "gloo: timeout {} ms", options.timeout.count());
  }
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
  const std::string what = fmt::format("gloo rendezvous of rank {} of {} (prefix '{}', host {})",
                                       rank, size, options.prefix, options.hostname);
  Status status = call_gloo(what, [&] {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    device = gloo::transport::tcp::CreateDevice(attr);
    context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(options.timeout);
    StoreAdapter adapter(std::move(store), options.prefix, options.timeout);
    context->connectFullMesh(adapter, device);
  });
  if (!status.is_ok()) return status;
  return std::unique_ptr<Communicator>(
      std::make_unique<GlooCommunicator>(std::move(device), std::move(context), options.timeout));
}

}  // namespace meshpipe::comm

#else  // !MP_COMM_HAVE_GLOO

namespace meshpipe::comm {

bool gloo_available() { return false; }

Expected<std::unique_ptr<Communicator>> make_gloo_communicator(int rank, int size,
                                                               std::shared_ptr<RendezvousStore>,
                                                               const GlooOptions&) {
  return make_error(Errc::kUnavailable,
                    "gloo communicator for rank {} of {}: this build has no Gloo (configure with "
                    "MP_ENABLE_GLOO=AUTO or ON and libgloo-dev installed)",
                    rank, size);
}

}  // namespace meshpipe::comm

#endif  // MP_COMM_HAVE_GLOO
