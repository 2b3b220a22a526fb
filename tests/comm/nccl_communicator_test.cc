// The NCCL communicator: without NCCL in the build or without a GPU, make_nccl_communicator
// answers kUnavailable with its reason (runs everywhere); with one GPU, a group of one rank, and
// with two GPUs, a group of two ranks on two threads, run every collective (and the in-place
// forms, zero sizes, the half-precision all-reduce, host memory refused, a timeout) on device
// buffers and compare against values computed on the host. The GPU cases carry [gpu] and, on a
// machine without one, say so with WARN and return (Catch2 v2 has no SKIP; docs/toolchain.md §7).
// CUDA is called only after nccl_device_count() found a device (docs/toolchain.md §8).
#include "comm/nccl_communicator.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "comm/comm_test_util.h"

#if MP_COMM_TEST_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace meshpipe::comm {
namespace {

using std::chrono::milliseconds;
using testing::on_each_rank;

TEST_CASE("without NCCL or a GPU, make_nccl_communicator says so with kUnavailable",
          "[comm][nccl]") {
  if (nccl_device_count() > 0) return;  // the GPU cases below cover this machine
  REQUIRE_FALSE(nccl_unavailable_reason().empty());
  NcclOptions options;
  options.prefix = "tp0";
  auto comm = make_nccl_communicator(0, 2, make_in_process_store(), options);
  INFO(comm.status().to_string());
  REQUIRE(comm.status().code() == Errc::kUnavailable);
  REQUIRE_THAT(comm.status().message(), Catch::Contains("rank 0 of 2"));
  REQUIRE_THAT(comm.status().message(), Catch::Contains("'tp0'"));
  if (nccl_available()) {
    REQUIRE_THAT(comm.status().message(), Catch::Contains("no usable CUDA device"));
  } else {
    REQUIRE_THAT(comm.status().message(), Catch::Contains("no NCCL"));
  }
  // A second call answers the same without touching CUDA again.
  auto again = make_nccl_communicator(0, 1, nullptr, NcclOptions{});
  REQUIRE(again.status().code() == Errc::kUnavailable);
}

TEST_CASE("make_nccl_communicator checks its arguments", "[comm][nccl]") {
  if (!nccl_available()) return;  // without NCCL every call is kUnavailable (above)
  const auto code = [](int rank, int size, std::shared_ptr<RendezvousStore> store,
                       milliseconds timeout) {
    NcclOptions options;
    options.timeout = timeout;
    return make_nccl_communicator(rank, size, std::move(store), options).status().code();
  };
  REQUIRE(code(2, 2, make_in_process_store(), milliseconds(100)) == Errc::kInvalidArgument);
  REQUIRE(code(-1, 2, make_in_process_store(), milliseconds(100)) == Errc::kInvalidArgument);
  REQUIRE(code(0, 0, make_in_process_store(), milliseconds(100)) == Errc::kInvalidArgument);
  REQUIRE(code(1, 2, nullptr, milliseconds(100)) == Errc::kInvalidArgument);
  REQUIRE(code(0, 1, nullptr, milliseconds(0)) == Errc::kInvalidArgument);
  if (nccl_device_count() > 0) {
    NcclOptions options;
    options.device = nccl_device_count();
    REQUIRE(make_nccl_communicator(0, 1, nullptr, options).status().code() ==
            Errc::kInvalidArgument);
  }
}

TEST_CASE("the half-precision all-reduce is refused by the CPU backends", "[comm][nccl]") {
  auto group = InProcessGroup::create(1, milliseconds(1000));
  std::unique_ptr<Communicator> comm = group->communicator(0);
  std::vector<uint16_t> data(4, 0);
  const Status s = all_reduce_half(*comm, data.data(), 4, DType::kF16);
  REQUIRE(s.code() == Errc::kUnavailable);
  REQUIRE_THAT(s.message(), Catch::Contains("in-process"));
}

#if MP_COMM_TEST_HAVE_CUDA

// True when this process has `n` GPUs; otherwise says so (the case then passes, skipped).
bool have_gpus(int n) {
  if (nccl_device_count() >= n) return true;
  WARN("needs " << n << " CUDA device(s), found " << nccl_device_count() << ": "
                << nccl_unavailable_reason());
  return false;
}

Status cuda_check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::ok();
  return make_error(Errc::kUnavailable, "{}: {}", what, cudaGetErrorString(err));
}

// A device buffer of the current device, freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0 && cudaMalloc(&ptr_, bytes) != cudaSuccess) ptr_ = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  bool ok() const { return bytes_ == 0 || ptr_ != nullptr; }
  template <class T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  template <class T>
  Status upload(const std::vector<T>& host, size_t offset_bytes = 0) {
    return cuda_check(cudaMemcpy(static_cast<uint8_t*>(ptr_) + offset_bytes, host.data(),
                                 host.size() * sizeof(T), cudaMemcpyHostToDevice),
                      "upload");
  }
  template <class T>
  Expected<std::vector<T>> download(size_t count, size_t offset_bytes = 0) const {
    std::vector<T> host(count);
    MP_RETURN_IF_ERROR(
        cuda_check(cudaMemcpy(host.data(), static_cast<uint8_t*>(ptr_) + offset_bytes,
                              count * sizeof(T), cudaMemcpyDeviceToHost),
                   "download"));
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <class T>
Status expect_equal(const std::vector<T>& got, const std::vector<T>& want,
                    const std::string& what) {
  if (got.size() != want.size()) {
    return make_error(Errc::kInternal, "{}: {} values, want {}", what, got.size(), want.size());
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return make_error(Errc::kInternal, "{}: element {} is {}, want {}", what, i,
                        static_cast<double>(got[i]), static_cast<double>(want[i]));
    }
  }
  return Status::ok();
}

// binary16 of a small non-negative integer (exact below 2048), and bfloat16 of one (exact below
// 256): enough for sums the test can predict.
uint16_t f16_of(int k) {
  if (k == 0) return 0;
  int e = 0;
  while ((k >> (e + 1)) != 0) ++e;
  const uint32_t mantissa = (static_cast<uint32_t>(k) << (10 - e)) & 0x3ffu;
  return static_cast<uint16_t>(((e + 15) << 10) | mantissa);
}

uint16_t bf16_of(int k) {
  const float f = static_cast<float>(k);
  uint32_t u = 0;
  std::memcpy(&u, &f, sizeof(u));
  return static_cast<uint16_t>(u >> 16);
}

// Every collective of one rank against the host's answer. `n` ranks; values are small integers,
// so every sum is exact whatever order NCCL adds in.
Status check_collectives(Communicator& c) {
  const int n = c.size();
  const int r = c.rank();
  const std::string who = fmt::format("rank {} of {}", r, n);
  const float ranks_sum = static_cast<float>(n * (n + 1) / 2);  // sum of (q + 1) over ranks q

  {  // all-reduce: rank q holds (q + 1) * (i % 97)
    const int64_t count = 1027;
    std::vector<float> in(count);
    std::vector<float> want(count);
    for (int64_t i = 0; i < count; ++i) {
      in[size_t(i)] = float((r + 1) * (i % 97));
      want[size_t(i)] = ranks_sum * float(i % 97);
    }
    DeviceBuffer d(sizeof(float) * count);
    if (!d.ok()) return make_error(Errc::kUnavailable, "cudaMalloc");
    MP_RETURN_IF_ERROR(d.upload(in));
    MP_RETURN_IF_ERROR(c.all_reduce(d.get<float>(), count));
    MP_ASSIGN_OR_RETURN(std::vector<float> got, d.download<float>(count));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " all-reduce"));
  }

  {  // all-gather, out of place and in place
    const int64_t bytes = 333;
    std::vector<uint8_t> in(bytes);
    std::vector<uint8_t> want(static_cast<size_t>(bytes * n));
    for (int64_t j = 0; j < bytes; ++j) in[size_t(j)] = uint8_t(r * 31 + j);
    for (int q = 0; q < n; ++q) {
      for (int64_t j = 0; j < bytes; ++j) want[size_t(q * bytes + j)] = uint8_t(q * 31 + j);
    }
    DeviceBuffer din(static_cast<size_t>(bytes));
    DeviceBuffer dout(static_cast<size_t>(bytes * n));
    if (!din.ok() || !dout.ok()) return make_error(Errc::kUnavailable, "cudaMalloc");
    MP_RETURN_IF_ERROR(din.upload(in));
    MP_RETURN_IF_ERROR(c.all_gather(din.get(), dout.get(), bytes));
    MP_ASSIGN_OR_RETURN(std::vector<uint8_t> got, dout.download<uint8_t>(size_t(bytes * n)));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " all-gather"));

    DeviceBuffer inplace(static_cast<size_t>(bytes * n));
    if (!inplace.ok()) return make_error(Errc::kUnavailable, "cudaMalloc");
    MP_RETURN_IF_ERROR(inplace.upload(in, size_t(r * bytes)));
    MP_RETURN_IF_ERROR(c.all_gather(inplace.get<uint8_t>() + r * bytes, inplace.get(), bytes));
    MP_ASSIGN_OR_RETURN(got, inplace.download<uint8_t>(size_t(bytes * n)));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " all-gather in place"));
  }

  {  // reduce-scatter, out of place and in place: chunk k element i of rank q is (q+1)*f(k, i)
    const int64_t count = 515;
    const auto f = [](int64_t k, int64_t i) { return float((k * 515 + i) % 113); };
    std::vector<float> in(static_cast<size_t>(count * n));
    std::vector<float> want(static_cast<size_t>(count));
    for (int k = 0; k < n; ++k) {
      for (int64_t i = 0; i < count; ++i) in[size_t(k * count + i)] = float(r + 1) * f(k, i);
    }
    for (int64_t i = 0; i < count; ++i) want[size_t(i)] = ranks_sum * f(r, i);
    DeviceBuffer din(sizeof(float) * size_t(count * n));
    DeviceBuffer dout(sizeof(float) * size_t(count));
    if (!din.ok() || !dout.ok()) return make_error(Errc::kUnavailable, "cudaMalloc");
    MP_RETURN_IF_ERROR(din.upload(in));
    MP_RETURN_IF_ERROR(c.reduce_scatter(din.get<float>(), dout.get<float>(), count));
    MP_ASSIGN_OR_RETURN(std::vector<float> got, dout.download<float>(size_t(count)));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " reduce-scatter"));

    MP_RETURN_IF_ERROR(din.upload(in));
    float* own = din.get<float>() + r * count;
    MP_RETURN_IF_ERROR(c.reduce_scatter(din.get<float>(), own, count));
    MP_ASSIGN_OR_RETURN(got, din.download<float>(size_t(count), sizeof(float) * size_t(r * count)));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " reduce-scatter in place"));
  }

  {  // all-to-all, out of place and in place: chunk j of rank q holds q*16 + j*3 + k
    const int64_t bytes = 257;
    std::vector<uint8_t> in(static_cast<size_t>(bytes * n));
    std::vector<uint8_t> want(static_cast<size_t>(bytes * n));
    for (int j = 0; j < n; ++j) {
      for (int64_t k = 0; k < bytes; ++k) {
        in[size_t(j * bytes + k)] = uint8_t(r * 16 + j * 3 + k);
        want[size_t(j * bytes + k)] = uint8_t(j * 16 + r * 3 + k);  // chunk j came from rank j
      }
    }
    DeviceBuffer din(static_cast<size_t>(bytes * n));
    DeviceBuffer dout(static_cast<size_t>(bytes * n));
    if (!din.ok() || !dout.ok()) return make_error(Errc::kUnavailable, "cudaMalloc");
    MP_RETURN_IF_ERROR(din.upload(in));
    MP_RETURN_IF_ERROR(c.all_to_all(din.get(), dout.get(), bytes));
    MP_ASSIGN_OR_RETURN(std::vector<uint8_t> got, dout.download<uint8_t>(size_t(bytes * n)));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " all-to-all"));

    MP_RETURN_IF_ERROR(din.upload(in));
    MP_RETURN_IF_ERROR(c.all_to_all(din.get(), din.get(), bytes));
    MP_ASSIGN_OR_RETURN(got, din.download<uint8_t>(size_t(bytes * n)));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " all-to-all in place"));
  }

  {  // broadcast from the last rank
    const int64_t bytes = 1001;
    const int root = n - 1;
    std::vector<uint8_t> mine(static_cast<size_t>(bytes));
    std::vector<uint8_t> want(static_cast<size_t>(bytes));
    for (int64_t k = 0; k < bytes; ++k) {
      mine[size_t(k)] = uint8_t(r * 7 + k);
      want[size_t(k)] = uint8_t(root * 7 + k);
    }
    DeviceBuffer d(static_cast<size_t>(bytes));
    if (!d.ok()) return make_error(Errc::kUnavailable, "cudaMalloc");
    MP_RETURN_IF_ERROR(d.upload(mine));
    MP_RETURN_IF_ERROR(c.broadcast(d.get(), bytes, root));
    MP_ASSIGN_OR_RETURN(std::vector<uint8_t> got, d.download<uint8_t>(size_t(bytes)));
    MP_RETURN_IF_ERROR(expect_equal(got, want, who + " broadcast"));
  }

  {  // half-precision all-reduces: rank q holds (q + 1) * (i % 13)
    const int64_t count = 301;
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      std::vector<uint16_t> in(static_cast<size_t>(count));
      std::vector<uint16_t> want(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) {
        const int mine = (r + 1) * int(i % 13);
        const int sum = n * (n + 1) / 2 * int(i % 13);
        in[size_t(i)] = dtype == DType::kF16 ? f16_of(mine) : bf16_of(mine);
        want[size_t(i)] = dtype == DType::kF16 ? f16_of(sum) : bf16_of(sum);
      }
      DeviceBuffer d(sizeof(uint16_t) * size_t(count));
      if (!d.ok()) return make_error(Errc::kUnavailable, "cudaMalloc");
      MP_RETURN_IF_ERROR(d.upload(in));
      MP_RETURN_IF_ERROR(all_reduce_half(c, d.get(), count, dtype));
      MP_ASSIGN_OR_RETURN(std::vector<uint16_t> got, d.download<uint16_t>(size_t(count)));
      MP_RETURN_IF_ERROR(
          expect_equal(got, want, who + " all-reduce " + std::string(dtype_name(dtype))));
    }
  }

  // Zero sizes synchronise and touch nothing; then barriers.
  MP_RETURN_IF_ERROR(c.all_reduce(nullptr, 0));
  MP_RETURN_IF_ERROR(c.all_gather(nullptr, nullptr, 0));
  MP_RETURN_IF_ERROR(c.reduce_scatter(nullptr, nullptr, 0));
  MP_RETURN_IF_ERROR(c.all_to_all(nullptr, nullptr, 0));
  MP_RETURN_IF_ERROR(c.broadcast(nullptr, 0, 0));
  for (int i = 0; i < 3; ++i) MP_RETURN_IF_ERROR(c.barrier());

  // Host memory is refused before anything is enqueued (every rank passes it), and the
  // communicator stays usable.
  std::vector<float> host(16, 1.0f);
  const Status refused = c.all_reduce(host.data(), 16);
  if (refused.code() != Errc::kInvalidArgument ||
      refused.message().find("host memory") == std::string::npos) {
    return make_error(Errc::kInternal, "{}: host memory gave '{}'", who, refused.to_string());
  }
  MP_RETURN_IF_ERROR(c.barrier());
  return Status::ok();
}

// Creates rank `rank`'s communicator on GPU `rank` and runs `body` with it, all on the calling
// thread (the communicator is also destroyed there: shutting NCCL down may wait for the peers).
Status with_rank(int rank, int size, std::shared_ptr<RendezvousStore> store, NcclOptions options,
                 const std::function<Status(Communicator&)>& body) {
  options.device = rank;
  MP_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                      make_nccl_communicator(rank, size, std::move(store), options));
  if (comm->backend() != "nccl" || comm->rank() != rank || comm->size() != size) {
    return make_error(Errc::kInternal, "rank {}: backend {}, rank {}, size {}", rank,
                      comm->backend(), comm->rank(), comm->size());
  }
  return body(*comm);
}

TEST_CASE("NCCL with one rank: every collective on device buffers", "[nccl][gpu]") {
  if (!have_gpus(1)) return;
  NcclOptions options;
  options.prefix = "one";
  options.timeout = milliseconds(60000);
  const Status own = with_rank(0, 1, nullptr, options, check_collectives);
  INFO(own.to_string());
  REQUIRE(own.is_ok());

  // The same on a stream the caller owns, with a store.
  REQUIRE(cudaSetDevice(0) == cudaSuccess);
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  options.prefix = "one-stream";
  options.stream = stream;
  const Status given = with_rank(0, 1, make_in_process_store(), options, check_collectives);
  REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);
  INFO(given.to_string());
  REQUIRE(given.is_ok());
}

TEST_CASE("NCCL with two ranks on two threads: every collective against the host", "[nccl][gpu]") {
  if (!have_gpus(2)) return;
  auto store = make_in_process_store();
  NcclOptions options;
  options.prefix = "two";
  options.timeout = milliseconds(60000);
  const std::vector<Status> results = on_each_rank(
      2, [&](int rank) { return with_rank(rank, 2, store, options, check_collectives); });
  for (const Status& s : results) {
    INFO(s.to_string());
    CHECK(s.is_ok());
  }
}

TEST_CASE("NCCL: a rank that skips a collective times the other out, which then refuses",
          "[nccl][gpu]") {
  if (!have_gpus(2)) return;
  auto store = make_in_process_store();
  NcclOptions options;
  options.prefix = "timeout";
  options.timeout = milliseconds(1500);
  std::vector<Status> later(2, Status::ok());
  std::atomic<bool> done{false};  // rank 0 has had its answer; rank 1 may shut down
  const std::vector<Status> results = on_each_rank(2, [&](int rank) {
    return with_rank(rank, 2, store, options, [&](Communicator& c) -> Status {
      MP_RETURN_IF_ERROR(c.barrier());
      if (rank == 1) {
        // Never arrives at the all-reduce, and keeps its communicator while rank 0 waits (a
        // peer that shut down might be reported as an error rather than a timeout).
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (!done.load() && std::chrono::steady_clock::now() < give_up) {
          std::this_thread::sleep_for(milliseconds(10));
        }
        return Status::ok();
      }
      DeviceBuffer d(sizeof(float) * 64);
      const Status s =
          d.ok() ? c.all_reduce(d.get<float>(), 64) : make_error(Errc::kUnavailable, "cudaMalloc");
      later[0] = c.barrier();
      done.store(true);
      return s;
    });
  });
  INFO(results[0].to_string());
  REQUIRE(results[1].is_ok());
  REQUIRE(results[0].code() == Errc::kTimeout);
  REQUIRE_THAT(results[0].message(), Catch::Contains("all-reduce of 64 floats"));
  REQUIRE_THAT(results[0].message(), Catch::Contains("rank 0 of 2"));
  REQUIRE(later[0].code() == Errc::kUnavailable);
  REQUIRE_THAT(later[0].message(), Catch::Contains("failed earlier"));
}

TEST_CASE("NCCL: a rank whose peer never joins times out initialising", "[nccl][gpu]") {
  if (!have_gpus(1)) return;
  NcclOptions options;
  options.prefix = "alone";
  options.timeout = milliseconds(1500);
  const auto start = std::chrono::steady_clock::now();
  // Rank 0 of 2 publishes the id, then waits for rank 1, which never comes.
  auto comm = make_nccl_communicator(0, 2, make_in_process_store(), options);
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
  INFO(comm.status().to_string());
  REQUIRE(comm.status().code() == Errc::kTimeout);
  REQUIRE_THAT(comm.status().message(), Catch::Contains("initialising"));

  // Rank 1 of 2 waits for an id that never comes.
  auto waiting = make_nccl_communicator(1, 2, make_in_process_store(), options);
  INFO(waiting.status().to_string());
  REQUIRE(waiting.status().code() == Errc::kTimeout);
  REQUIRE_THAT(waiting.status().message(), Catch::Contains("alone/nccl-unique-id"));
}

#else  // !MP_COMM_TEST_HAVE_CUDA

TEST_CASE("NCCL on device buffers (needs a build with NCCL)", "[nccl][gpu]") {
  WARN("this build has no NCCL: " << nccl_unavailable_reason());
}

#endif  // MP_COMM_TEST_HAVE_CUDA

}  // namespace
}  // namespace meshpipe::comm
