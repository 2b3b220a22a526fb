// find_kernel and run_kernel: the lookup in the backend table (kernels/backend.h) and the checks
// every call goes through.
#include "kernels/backend.h"

#include "kernels/internal/backends.h"

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
      return nullptr;  // no CUDA kernels in this build
  }
  return nullptr;
}

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
  if (device == Device::kCpu) {
    for (const auto list : {args.in, args.out}) {
      for (const TensorView& v : list) {
        if (v.dtype != DType::kF32 && v.dtype != DType::kI32) {
          return make_error(Errc::kInvalidArgument,
                            "{}: the CPU kernels compute in f32, got a {} tensor; build the model "
                            "with dtype f32 to run it",
                            op_kind_name(kind), dtype_name(v.dtype));
        }
      }
    }
  }
  k->run(args);
  return Status::ok();
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
