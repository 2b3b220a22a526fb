// find_kernel and run_kernel: the lookup in the backend table (kernels/backend.h) and the checks
// every call goes through.
#include "kernels/backend.h"

#include <cmath>
#include <vector>

#include "kernels/half.h"
#include "kernels/internal/backends.h"
#if MP_KERNELS_HAVE_CUDA
#include "kernels/internal/gpu_state.h"
#endif
#if MP_KERNELS_HAVE_CUDA_COLUMN
#include "kernels/internal/cuda_rows.h"
#endif

namespace meshpipe::kernels {

const char* device_name(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "unknown";
}

const OpKernel* find_kernel(Device device, OpKind kind) {
  if (static_cast<size_t>(kind) >= static_cast<size_t>(kNumOpKinds)) return nullptr;
  switch (device) {
    case Device::kCpu:
      return internal::cpu_kernel(kind);
    case Device::kCuda:
#if MP_KERNELS_HAVE_CUDA_COLUMN
      return internal::cuda_kernel(kind);
#else
      return nullptr;  // a build without CUDA has no CUDA column
#endif
  }
  return nullptr;
}

namespace {

bool is_half(DType t) { return t == DType::kF16 || t == DType::kBF16; }

// The CPU backend's storage path for f16 and bf16 (the mixed-precision dtype path): the CPU
// kernels compute in f32, so half inputs are widened into f32 copies, the kernel runs on those,
// and its half outputs are rounded (to nearest even) into their tensors. The copies live in
// buffers of the calling thread that grow to the largest call and are reused; outputs get
// their own copies, so outputs that alias inputs stay correct.
void run_cpu_widened(const OpKernel& k, const KernelArgs& args) {
  thread_local std::vector<std::vector<float>> buffers;
  const size_t n_views = args.in.size() + args.out.size();
  if (buffers.size() < n_views) buffers.resize(n_views);
  std::vector<TensorView> in(args.in.begin(), args.in.end());
  std::vector<TensorView> out(args.out.begin(), args.out.end());
  size_t b = 0;
  auto widen = [&](TensorView& v, bool copy_in) {
    if (!is_half(v.dtype)) return;
    MP_CHECK(v.is_contiguous()) << "half-precision CPU views must be contiguous";
    std::vector<float>& buf = buffers[b++];
    buf.resize(static_cast<size_t>(v.numel()));
    if (copy_in)
      widen_from_half(static_cast<const uint16_t*>(v.data), buf.data(), v.numel(), v.dtype);
    v = TensorView(buf.data(), v.shape, DType::kF32);
  };
  for (TensorView& v : in) widen(v, /*copy_in=*/true);
  for (TensorView& v : out) widen(v, /*copy_in=*/false);
  KernelArgs widened = args;
  widened.in = in;
  widened.out = out;
  k.run(widened);
  for (size_t i = 0; i < out.size(); ++i) {
    if (is_half(args.out[i].dtype)) {
      round_to_half(out[i].f32(), static_cast<uint16_t*>(args.out[i].data), out[i].numel(),
                    args.out[i].dtype);
    }
  }
}

}  // namespace

Status run_kernel(Device device, OpKind kind, const KernelArgs& args) {
  const OpKernel* k = find_kernel(device, kind);
  if (k == nullptr) {
    return make_error(Errc::kUnavailable, "the {} backend has no kernel for {}",
                      device_name(device), op_kind_name(kind));
  }
  if (args.ctx == nullptr || args.attrs == nullptr || args.ctx->device != device) {
    return make_error(Errc::kInternal, "{}: kernel called without a {} context and attributes",
                      op_kind_name(kind), device_name(device));
  }
  const OpKindInfo& info = op_kind_info(kind);
  const bool arity_ok =
      (info.num_inputs < 0 ? !args.in.empty()
                           : args.in.size() == static_cast<size_t>(info.num_inputs)) &&
      args.out.size() == static_cast<size_t>(info.num_outputs);
  if (!arity_ok) {
    return make_error(Errc::kInternal, "{} takes {} inputs and {} outputs, got {} and {}",
                      op_kind_name(kind), info.num_inputs, info.num_outputs, args.in.size(),
                      args.out.size());
  }
  bool any_half = false;
  for (const auto list : {args.in, args.out}) {
    for (const TensorView& v : list) {
      if (v.dtype == DType::kI64) {
        return make_error(Errc::kInvalidArgument,
                          "{}: kernels take f32, f16, bf16 and i32 tensors, got an i64 tensor",
                          op_kind_name(kind));
      }
      any_half = any_half || is_half(v.dtype);
    }
  }
  if (device == Device::kCpu) {
    if (any_half) {
      run_cpu_widened(*k, args);
    } else {
      k->run(args);
    }
    return Status::ok();
  }
#if MP_KERNELS_HAVE_CUDA
  if (args.ctx->gpu == nullptr) {
    return make_error(Errc::kInternal, "{}: CUDA kernel called without a GPU state",
                      op_kind_name(kind));
  }
  // The kernels launch on the GPU's stream and use its library handles, which belong to its
  // device: make that device current on this thread (GpuState::make_current).
  if (!args.ctx->gpu->make_current()) {
    std::string message;
    message.swap(args.ctx->gpu->error);
    return Status(Errc::kInternal, fmt::format("{}: {}", op_kind_name(kind), message));
  }
  k->run(args);
  if (!args.ctx->gpu->error.empty()) {
    std::string message;
    message.swap(args.ctx->gpu->error);
    return Status(Errc::kInternal, std::move(message));
  }
#endif
  return Status::ok();
}

Expected<bool> all_finite(const KernelContext& ctx, std::span<const TensorView> views) {
  if (ctx.device == Device::kCpu) {
    for (const TensorView& v : views) {
      if (!is_floating(v.dtype) || v.data == nullptr) continue;
      const int64_t n = v.numel();
      if (v.dtype == DType::kF32) {
        const float* p = v.f32();
        for (int64_t i = 0; i < n; ++i) {
          if (!std::isfinite(p[i])) return false;
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          if (!std::isfinite(element_as_float(v.data, v.dtype, i))) return false;
        }
      }
    }
    return true;
  }
#if MP_KERNELS_HAVE_CUDA_COLUMN
  if (ctx.gpu == nullptr) {
    return make_error(Errc::kInternal, "all_finite: a CUDA context without a GPU state");
  }
  static_cast<void>(ctx.gpu->make_current());  // a failure is recorded, returned below
  const int finite =
      ctx.gpu->error.empty() ? internal::cuda_all_finite(*ctx.gpu, views.data(), views.size()) : 1;
  if (!ctx.gpu->error.empty()) {
    std::string message;
    message.swap(ctx.gpu->error);
    return Status(Errc::kInternal, std::move(message));
  }
  return finite != 0;
#else
  return make_error(Errc::kUnavailable, "all_finite: this build has no CUDA kernels");
#endif
}

Expected<double> sum_of_squares(const KernelContext& ctx, std::span<const TensorView> views) {
  if (ctx.device == Device::kCpu) {
    double total = 0.0;
    for (const TensorView& v : views) {
      if (!is_floating(v.dtype) || v.data == nullptr) continue;
      const int64_t n = v.numel();
      double part = 0.0;
      if (v.dtype == DType::kF32) {
        const float* p = v.f32();
        for (int64_t i = 0; i < n; ++i) part += static_cast<double>(p[i]) * p[i];
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const double x = element_as_float(v.data, v.dtype, i);
          part += x * x;
        }
      }
      total += part;
    }
    return total;
  }
#if MP_KERNELS_HAVE_CUDA_COLUMN
  if (ctx.gpu == nullptr) {
    return make_error(Errc::kInternal, "sum_of_squares: a CUDA context without a GPU state");
  }
  static_cast<void>(ctx.gpu->make_current());  // a failure is recorded, returned below
  const double total = ctx.gpu->error.empty()
                           ? internal::cuda_sum_of_squares(*ctx.gpu, views.data(), views.size())
                           : 0.0;
  if (!ctx.gpu->error.empty()) {
    std::string message;
    message.swap(ctx.gpu->error);
    return Status(Errc::kInternal, std::move(message));
  }
  return total;
#else
  return make_error(Errc::kUnavailable, "sum_of_squares: this build has no CUDA kernels");
#endif
}

int64_t kernel_workspace_bytes(Device device, OpKind kind, std::span<const Shape> inputs,
                               const OpAttrs& attrs) {
  const OpKernel* k = find_kernel(device, kind);
  if (k == nullptr || k->workspace_bytes == nullptr) return 0;
  return k->workspace_bytes(inputs, attrs);
}

bool kernel_runs_in_place(Device device, OpKind kind, size_t input, size_t output) {
  const OpKernel* k = find_kernel(device, kind);
  if (k == nullptr || output >= k->in_place.size() || input >= 8) return false;
  return (k->in_place[output] >> input) & 1u;
}

}  // namespace meshpipe::kernels
