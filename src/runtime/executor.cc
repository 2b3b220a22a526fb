// Executor: plan (last uses, in-place candidates) and the run loop, on the host or on one GPU
// (buffers from its caching allocator, kernels queued on its compute stream).
#include "runtime/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "graph/autodiff.h"
#include "kernels/backend.h"
#include "kernels/half.h"
#include "runtime/internal/update_agreement.h"

namespace meshpipe::runtime {

using graph::Op;
using graph::ValueRole;

Executor::Executor(graph::Graph g, ExecutorOptions options)
    : graph_(std::move(g)), options_(std::move(options)) {}

Executor::~Executor() {
  if (gpu_ == nullptr) return;  // the pool frees host memory itself
  // Kernels still queued may use the buffers: wait, then hand every live block back.
  static_cast<void>(gpu_->synchronize());
  for (Buffer& b : buffers_) {
    if (b.block.data != nullptr) gpu_->release(b.block.data);
    b.block = {};
  }
}

Expected<std::unique_ptr<Executor>> Executor::create(const graph::Graph& g,
                                                     ExecutorOptions options) {
  MP_RETURN_IF_ERROR(g.validate());
  for (const graph::Value& v : g.values()) {
    // Activations and their gradients may be f16/bf16 (mixed precision); what is initialised
    // or fed from the host (parameters, optimizer state, inputs) is f32 or i32.
    const bool host_side = v.role == ValueRole::kParameter ||
                           v.role == ValueRole::kOptimizerState || v.role == ValueRole::kInput;
    if (v.dtype == DType::kI64 || (host_side && v.dtype != DType::kF32 && v.dtype != DType::kI32)) {
      return make_error(Errc::kInvalidArgument,
                        "value '{}' is {}; parameters, optimizer state and inputs must be f32 "
                        "(mixed precision converts them inside the graph: --precision)",
                        v.name, dtype_name(v.dtype));
    }
  }
  for (const Op& op : g.ops()) {
    if (kernels::find_kernel(options.device, op.kind) == nullptr) {
      return make_error(Errc::kUnavailable, "op '{}' ({}): no {} kernel", op.name,
                        op_kind_name(op.kind), kernels::device_name(options.device));
    }
  }
  MP_RETURN_IF_ERROR(options.loss_scale.validate());
  if (!(options.clip_grad_norm >= 0.0f) || !std::isfinite(options.clip_grad_norm)) {
    return make_error(Errc::kInvalidArgument,
                      "the gradient clipping norm must be finite and non-negative, got {}",
                      options.clip_grad_norm);
  }
  std::unique_ptr<Executor> e(new Executor(g, std::move(options)));
  if (e->options_.loss_scale.enabled) e->scaler_.emplace(e->options_.loss_scale);
  switch (e->options_.device) {
    case kernels::Device::kCpu:
      break;
    case kernels::Device::kCuda: {
      auto gpu = kernels::GpuDevice::open(e->options_.gpu);
      if (!gpu.has_value()) return gpu.status().with_context("the GPU executor");
      e->gpu_ = std::move(*gpu);
      break;
    }
  }
  MP_RETURN_IF_ERROR(e->plan());
  return e;
}

Status Executor::plan() {
  const size_t nv = static_cast<size_t>(graph_.num_values());
  slot_.assign(nv, -1);
  persistent_.assign(nv, false);
  keep_.assign(nv, false);
  last_use_.assign(nv, -1);
  free_after_.assign(static_cast<size_t>(graph_.num_ops()), {});

  for (size_t i = 0; i < nv; ++i) {
    const graph::Value& v = graph_.values()[i];
    persistent_[i] = v.role == ValueRole::kParameter || v.role == ValueRole::kOptimizerState;
  }
  for (ValueId id : options_.retain) {
    if (!id.is_valid() || id.value() >= graph_.num_values()) {
      return make_error(Errc::kInvalidArgument, "retained value id {} is not in the graph",
                        id.value());
    }
    keep_[id.index()] = true;
  }
  for (ValueId id : graph_.outputs()) keep_[id.index()] = true;
  for (const graph::Alias& a : graph_.aliases()) {
    keep_[a.updated.index()] = true;
    alias_source_of_[a.updated] = a.source;
  }
  for (int64_t i = 0; i < graph_.num_ops(); ++i) {
    for (ValueId in : graph_.ops()[static_cast<size_t>(i)].inputs) last_use_[in.index()] = i;
  }
  for (size_t i = 0; i < nv; ++i) {
    if (persistent_[i] || keep_[i]) continue;
    const graph::Value& v = graph_.values()[i];
    int64_t at = last_use_[i];
    if (at < 0) {
      if (!v.producer.is_valid()) continue;  // an unused data input: dropped after the copy
      at = v.producer.value();               // never read: dropped right after its producer
    }
    free_after_[static_cast<size_t>(at)].push_back(ValueId(static_cast<int32_t>(i)));
  }
  // Persistent values live in the pool (or the GPU's memory) from the start.
  for (size_t i = 0; i < nv; ++i) {
    if (!persistent_[i]) continue;
    const graph::Value& v = graph_.values()[i];
    auto buf = new_buffer(v.bytes());
    if (!buf.has_value()) return buf.status().with_context(fmt::format("value '{}'", v.name));
    slot_[i] = *buf;
  }
  return Status::ok();
}

Expected<int32_t> Executor::new_buffer(int64_t bytes, bool workspace) {
  Buffer b{.block = {}, .refs = 1, .workspace = workspace};
  if (gpu_ != nullptr) {
    // Rounded as the pool rounds, so that the GPU's live and peak bytes are the CPU's.
    const int64_t size = BufferPool::block_bytes(bytes);
    MP_ASSIGN_OR_RETURN(void* p, gpu_->allocate(size));
    b.block = Block{.data = p, .bytes = size};
    gpu_live_ += size;
    gpu_peak_ = std::max(gpu_peak_, gpu_live_);
  } else {
    b.block = pool_.allocate(bytes);
  }
  if (!workspace) {
    live_values_ += b.block.bytes;
    peak_values_ = std::max(peak_values_, live_values_);
  }
  if (!free_buffer_ids_.empty()) {
    const int32_t id = free_buffer_ids_.back();
    free_buffer_ids_.pop_back();
    buffers_[static_cast<size_t>(id)] = b;
    return id;
  }
  buffers_.push_back(b);
  return static_cast<int32_t>(buffers_.size() - 1);
}

void Executor::unref(int32_t buffer) {
  Buffer& b = buffers_[static_cast<size_t>(buffer)];
  if (--b.refs == 0) {
    if (!b.workspace) live_values_ -= b.block.bytes;
    if (gpu_ != nullptr) {
      // Stream-ordered: every later user of the block is queued behind the kernels using it.
      gpu_->release(b.block.data);
      gpu_live_ -= b.block.bytes;
    } else {
      pool_.release(b.block);
    }
    b.block = {};
    free_buffer_ids_.push_back(buffer);
  }
}

void* Executor::data_of(ValueId id) const {
  return buffers_[static_cast<size_t>(slot_[id.index()])].block.data;
}

kernels::TensorView Executor::view_of(ValueId id) const {
  const graph::Value& v = graph_.value(id);
  return kernels::TensorView(data_of(id), v.shape, v.dtype);
}

void fill_initial(const graph::Value& v, uint64_t seed, float* p) {
  const int64_t n = v.shape.numel();
  const uint64_t key = mix64(seed ^ hash_name(v.name));
  switch (v.init.kind) {
    case graph::InitSpec::Kind::kZeros:
      std::memset(p, 0, static_cast<size_t>(n) * sizeof(float));
      break;
    case graph::InitSpec::Kind::kOnes:
      for (int64_t k = 0; k < n; ++k) p[k] = 1.0f;
      break;
    case graph::InitSpec::Kind::kNormal:
      for (int64_t k = 0; k < n; ++k) {
        p[k] = static_cast<float>(normal_at(key, static_cast<uint64_t>(k)) * v.init.scale);
      }
      break;
    case graph::InitSpec::Kind::kUniform:
      for (int64_t k = 0; k < n; ++k) {
        const double u = uniform_at(key, static_cast<uint64_t>(k));
        p[k] = static_cast<float>((2.0 * u - 1.0) * v.init.scale);
      }
      break;
    case graph::InitSpec::Kind::kValues:
      // The graph's builder checked the count (Graph::add_source).
      MP_CHECK(v.init.values != nullptr && static_cast<int64_t>(v.init.values->size()) == n)
          << "parameter '" << v.name << "': initial values do not match its shape";
      std::memcpy(p, v.init.values->data(), static_cast<size_t>(n) * sizeof(float));
      break;
  }
}

Status Executor::initialize(uint64_t seed) {
  std::vector<float> host;  // kCuda: filled here, then copied
  for (size_t i = 0; i < persistent_.size(); ++i) {
    if (!persistent_[i]) continue;
    const graph::Value& v = graph_.values()[i];
    void* data = buffers_[static_cast<size_t>(slot_[i])].block.data;
    if (gpu_ == nullptr) {
      fill_initial(v, seed, static_cast<float*>(data));
      continue;
    }
    host.resize(static_cast<size_t>(v.shape.numel()));
    fill_initial(v, seed, host.data());
    MP_RETURN_IF_ERROR(gpu_->copy_to_device(data, host.data(), v.bytes())
                           .with_context(fmt::format("'{}'", v.name)));
  }
  return Status::ok();
}

Status Executor::set_value(ValueId id, const HostTensor& value) {
  if (!id.is_valid() || id.value() >= graph_.num_values() || !persistent_[id.index()]) {
    return make_error(Errc::kInvalidArgument, "value {} is not a parameter or optimizer state",
                      id.value());
  }
  const graph::Value& v = graph_.value(id);
  if (!(value.shape() == v.shape) || value.dtype() != v.dtype) {
    return make_error(Errc::kInvalidArgument, "value '{}' is {} {}, got {} {}", v.name,
                      v.shape.to_string(), dtype_name(v.dtype), value.shape().to_string(),
                      dtype_name(value.dtype()));
  }
  if (gpu_ != nullptr) {
    return gpu_->copy_to_device(data_of(id), value.data(), value.bytes())
        .with_context(fmt::format("setting '{}'", v.name));
  }
  std::memcpy(buffers_[static_cast<size_t>(slot_[id.index()])].block.data, value.data(),
              static_cast<size_t>(value.bytes()));
  return Status::ok();
}

Expected<kernels::TensorView> Executor::persistent_view(ValueId id) const {
  if (!id.is_valid() || id.value() >= graph_.num_values() || !persistent_[id.index()] ||
      slot_[id.index()] < 0) {
    return make_error(Errc::kInvalidArgument, "value {} is not a persistent value of the graph",
                      id.value());
  }
  if (gpu_ != nullptr) {
    return make_error(Errc::kUnavailable,
                      "value '{}' lives in GPU memory: checkpoints of a GPU executor go through "
                      "get_value/set_value",
                      graph_.value(id).name);
  }
  return view_of(id);
}

Expected<HostTensor> Executor::get_value(ValueId id) const {
  if (!id.is_valid() || id.value() >= graph_.num_values() || slot_[id.index()] < 0) {
    return make_error(Errc::kNotFound,
                      "value {} is not available (only persistent values, outputs and retained "
                      "values can be read after a run)",
                      id.value());
  }
  const graph::Value& v = graph_.value(id);
  HostTensor t(v.shape, v.dtype);
  if (gpu_ != nullptr) {
    MP_RETURN_IF_ERROR(gpu_->copy_to_host(t.data(), data_of(id), t.bytes())
                           .with_context(fmt::format("reading '{}'", v.name)));
    return t;
  }
  std::memcpy(t.data(), buffers_[static_cast<size_t>(slot_[id.index()])].block.data,
              static_cast<size_t>(t.bytes()));
  return t;
}

void Executor::release_transients() {
  for (size_t i = 0; i < slot_.size(); ++i) {
    if (!persistent_[i] && slot_[i] >= 0) {
      unref(slot_[i]);
      slot_[i] = -1;
    }
  }
}

// Fails on the first non-finite element of a floating (f32, f16, bf16) output of `op` (on a
// GPU, read back first).
Status Executor::check_finite(const Op& op, std::span<const kernels::TensorView> outputs) const {
  std::vector<uint8_t> host;
  for (size_t o = 0; o < outputs.size(); ++o) {
    const DType t = outputs[o].dtype;
    if (!is_floating(t)) continue;
    const int64_t n = outputs[o].numel();
    const void* p = nullptr;
    if (gpu_ != nullptr) {
      host.resize(static_cast<size_t>(outputs[o].bytes()));
      MP_RETURN_IF_ERROR(gpu_->copy_to_host(host.data(), outputs[o].data, outputs[o].bytes())
                             .with_context(fmt::format("op '{}': checking its output", op.name)));
      p = host.data();
    } else {
      p = outputs[o].data;
    }
    for (int64_t k = 0; k < n; ++k) {
      const float x = kernels::element_as_float(p, t, k);
      if (!std::isfinite(x)) {
        return make_error(Errc::kNumerics,
                          "op '{}' ({}) wrote a non-finite value ({}) at "
                          "element {} of output {}",
                          op.name, op_kind_name(op.kind), x, k, o);
      }
    }
  }
  return Status::ok();
}

Expected<StepStats> Executor::evaluate(const std::vector<std::pair<ValueId, HostTensor>>& inputs) {
  evaluating_ = true;
  Expected<StepStats> r = run(inputs);
  evaluating_ = false;
  return r;
}

Expected<StepStats> Executor::run(const std::vector<std::pair<ValueId, HostTensor>>& inputs) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  release_transients();
  pool_.reset_peak();
  gpu_peak_ = gpu_live_;
  peak_values_ = live_values_;
  const kernels::Device device = options_.device;

  std::vector<bool> given(slot_.size(), false);
  for (const auto& [id, tensor] : inputs) {
    if (!id.is_valid() || id.value() >= graph_.num_values() ||
        graph_.value(id).role != ValueRole::kInput) {
      return make_error(Errc::kInvalidArgument, "value {} is not a data input of the graph",
                        id.value());
    }
    const graph::Value& v = graph_.value(id);
    if (!(tensor.shape() == v.shape) || tensor.dtype() != v.dtype) {
      return make_error(Errc::kInvalidArgument, "input '{}' must be {} {}, got {} {}", v.name,
                        v.shape.to_string(), dtype_name(v.dtype), tensor.shape().to_string(),
                        dtype_name(tensor.dtype()));
    }
    if (slot_[id.index()] < 0) {
      MP_ASSIGN_OR_RETURN(slot_[id.index()], new_buffer(v.bytes()));
    }
    if (gpu_ != nullptr) {
      MP_RETURN_IF_ERROR(gpu_->copy_to_device(data_of(id), tensor.data(), tensor.bytes())
                             .with_context(fmt::format("input '{}'", v.name)));
    } else {
      std::memcpy(buffers_[static_cast<size_t>(slot_[id.index()])].block.data, tensor.data(),
                  static_cast<size_t>(tensor.bytes()));
    }
    given[id.index()] = true;
  }
  for (ValueId id : graph_.values_with_role(ValueRole::kInput)) {
    if (!given[id.index()] && last_use_[id.index()] >= 0) {
      return make_error(Errc::kInvalidArgument, "data input '{}' {} was not given",
                        graph_.value(id).name, graph_.value(id).shape.to_string());
    }
  }

  const kernels::KernelContext cpu_ctx{kernels::Device::kCpu, nullptr};
  const kernels::KernelContext& ctx = gpu_ != nullptr ? gpu_->context() : cpu_ctx;
  std::vector<kernels::TensorView> in_views;
  std::vector<kernels::TensorView> out_views;
  std::vector<Shape> shapes;
  StepStats stats;
  const float scale = scaler_ ? scaler_->scale() : 1.0f;
  // Evaluating (validation): the loss only; every state update keeps its state and loss
  // scaling's verdict and scale are left alone.
  bool checked = evaluating_;  // loss scaling and clipping: the gradients' verdict is known
  bool skip = evaluating_;
  const bool clipping = options_.clip_grad_norm > 0.0f;
  float clip = 1.0f;  // clipping's factor of this step's gradients
  for (int64_t i = 0; i < graph_.num_ops(); ++i) {
    const Op& op = graph_.ops()[static_cast<size_t>(i)];
    const bool update = op.phase == graph::OpPhase::kUpdate;
    if ((scaler_ || clipping) && update && !checked) {  // every gradient is computed by now
      checked = true;
      MP_ASSIGN_OR_RETURN(const std::vector<kernels::TensorView> grads, update_gradients());
      // With clipping, the squared norm is finite exactly when every gradient is (a square of
      // an f32 stays far inside double's range): one pass serves both.
      double squares = 0.0;
      if (clipping) {
        MP_ASSIGN_OR_RETURN(squares, kernels::sum_of_squares(ctx, grads));
      }
      if (scaler_) {
        bool finite = std::isfinite(squares);
        if (!clipping) {
          MP_ASSIGN_OR_RETURN(finite, kernels::all_finite(ctx, grads));
        }
        skip = !finite;
        MP_RETURN_IF_ERROR(scaler_->update(finite));
      }
      if (clipping) {
        stats.grad_norm = std::sqrt(squares) / static_cast<double>(scale);
        if (!skip) clip = internal::clip_factor(stats.grad_norm, options_.clip_grad_norm);
      }
    }
    OpAttrs scaled;  // loss scaling and clipping: the seed's and the optimizers' attributes
    const OpAttrs* attrs = &op.attrs;
    const bool updates_state =
        update && (is_optimizer_update(op.kind) || op.kind == OpKind::kScale);
    if (scaler_ && graph::is_loss_seed(op)) {
      scaled = op.attrs;
      scaled.alpha *= scale;
      attrs = &scaled;
    } else if ((scaler_ || clipping) && update && is_optimizer_update(op.kind)) {
      scaled = op.attrs;
      scaled.grad_scale = clip / scale;
      attrs = &scaled;
    }
    if (lr_scale_ != 1.0f && update && is_optimizer_update(op.kind)) {  // the schedule's factor
      if (attrs != &scaled) scaled = op.attrs;
      scaled.lr *= lr_scale_;
      attrs = &scaled;
    }
    const kernels::OpKernel* kernel = kernels::find_kernel(device, op.kind);
    if (kernel == nullptr) {
      return make_error(Errc::kUnavailable, "op '{}' ({}): no {} kernel", op.name,
                        op_kind_name(op.kind), kernels::device_name(device));
    }
    in_views.clear();
    out_views.clear();
    for (ValueId in : op.inputs) in_views.push_back(view_of(in));
    for (size_t o = 0; o < op.outputs.size(); ++o) {
      const ValueId out = op.outputs[o];
      const graph::Value& ov = graph_.value(out);
      int32_t buf = -1;
      for (size_t j = 0; j < op.inputs.size() && buf < 0; ++j) {
        const ValueId in = op.inputs[j];
        Buffer& b = buffers_[static_cast<size_t>(slot_[in.index()])];
        if (!kernel->is_view) {
          // In place: the kernel allows it, the input dies here, and no other value shares its
          // buffer. A persistent input may only be overwritten by its own updated value.
          if (!kernels::kernel_runs_in_place(device, op.kind, j, o)) continue;
          if (graph_.value(in).bytes() != ov.bytes() || last_use_[in.index()] != i) continue;
          if (keep_[in.index()] || b.refs != 1) continue;
          if (persistent_[in.index()]) {
            auto it = alias_source_of_.find(out);
            if (it == alias_source_of_.end() || !(it->second == in)) continue;
          }
        }
        // A view (reshape) always shares its input's buffer (read-only sharing).
        buf = slot_[in.index()];
        ++b.refs;
      }
      if (buf < 0) {
        auto fresh = new_buffer(ov.bytes());
        if (!fresh.has_value()) return fresh.status().with_context(fmt::format("op '{}'", op.name));
        buf = *fresh;
      }
      slot_[out.index()] = buf;
      out_views.push_back(view_of(out));
    }
    const bool view_shares =
        kernel->is_view && slot_[op.outputs[0].index()] == slot_[op.inputs[0].index()];
    int32_t ws = -1;
    kernels::TensorView ws_view;
    shapes.clear();
    for (ValueId in : op.inputs) shapes.push_back(graph_.value(in).shape);
    // Each backend declares its own scratch (the CUDA rows differ from the CPU's).
    const int64_t ws_bytes = kernels::kernel_workspace_bytes(device, op.kind, shapes, op.attrs);
    if (ws_bytes > 0) {
      auto fresh = new_buffer(ws_bytes, /*workspace=*/true);
      if (!fresh.has_value()) {
        return fresh.status().with_context(fmt::format("op '{}': its workspace", op.name));
      }
      ws = *fresh;
      ws_view = kernels::TensorView(buffers_[static_cast<size_t>(ws)].block.data,
                                    Shape{(ws_bytes + 3) / 4}, DType::kF32);
    }
    const auto op_t0 = options_.profile ? Clock::now() : Clock::time_point();
    if (skip && updates_state) {
      MP_RETURN_IF_ERROR(internal::keep_state(op.name, in_views, out_views,
                                              [&](void* d, const void* src, int64_t n) -> Status {
                                                if (gpu_ != nullptr)
                                                  return gpu_->copy_on_device(d, src, n);
                                                std::memcpy(d, src, static_cast<size_t>(n));
                                                return Status::ok();
                                              }));
    } else if (!view_shares) {
      kernels::KernelArgs args;
      args.ctx = &ctx;
      args.in = in_views;
      args.out = out_views;
      args.workspace = ws_view;
      args.attrs = attrs;
      const Status s = kernels::run_kernel(device, op.kind, args);
      if (!s.is_ok()) return s.with_context(fmt::format("op '{}'", op.name));
    }
    if (options_.profile) {
      // On a GPU the kernel was only queued: wait for it, so that the time is its own.
      if (gpu_ != nullptr) {
        MP_RETURN_IF_ERROR(gpu_->synchronize().with_context(fmt::format("op '{}'", op.name)));
      }
      profile_[op.kind] += std::chrono::duration<double>(Clock::now() - op_t0).count();
    }
    if (ws >= 0) unref(ws);
    // Under loss scaling an Inf in the backward pass is what the overflow check skips the step
    // for, not an error: only the other phases are checked then.
    if (options_.check_finite && !(scaler_ && op.phase == graph::OpPhase::kBackward)) {
      MP_RETURN_IF_ERROR(check_finite(op, out_views));
    }
    for (ValueId dead : free_after_[static_cast<size_t>(i)]) {
      if (slot_[dead.index()] >= 0) {
        unref(slot_[dead.index()]);
        slot_[dead.index()] = -1;
      }
    }
  }

  if (scaler_ && !evaluating_) {
    if (!checked) {  // a graph without updates: no gradient to check
      MP_RETURN_IF_ERROR(scaler_->update(true));
    }
    stats.loss_scale = scale;
    stats.skipped = skip;
    stats.next_loss_scale = scaler_->scale();
    stats.good_steps = scaler_->good_steps();
  }
  // On a GPU the step ends when its kernels have run: a fault of any of them surfaces here.
  if (gpu_ != nullptr) MP_RETURN_IF_ERROR(gpu_->synchronize().with_context("the step"));
  if (!graph_.outputs().empty()) {
    const ValueId out = graph_.outputs()[0];
    if (graph_.value(out).shape.numel() == 1 && slot_[out.index()] >= 0 &&
        graph_.value(out).dtype == DType::kF32) {
      if (gpu_ != nullptr) {
        float loss = 0.0f;
        MP_RETURN_IF_ERROR(
            gpu_->copy_to_host(&loss, data_of(out), sizeof(loss)).with_context("reading the loss"));
        stats.loss = loss;
      } else {
        stats.loss = view_of(out).f32()[0];
      }
    }
  }
  // Updated values replace their sources.
  for (const graph::Alias& a : graph_.aliases()) {
    const int32_t old_buf = slot_[a.source.index()];
    const int32_t new_buf = slot_[a.updated.index()];
    if (new_buf < 0) continue;
    ++buffers_[static_cast<size_t>(new_buf)].refs;
    slot_[a.source.index()] = new_buf;
    if (old_buf >= 0) unref(old_buf);
  }
  stats.peak_bytes = gpu_ != nullptr ? Bytes(gpu_peak_) : pool_.stats().peak;
  last_peak_ = stats.peak_bytes.value();
  last_peak_values_ = peak_values_;
  stats.time = Seconds(std::chrono::duration<double>(Clock::now() - t0).count());
  return stats;
}

Expected<std::vector<kernels::TensorView>> Executor::update_gradients() const {
  std::vector<kernels::TensorView> grads;
  for (const Op& op : graph_.ops()) {
    if (op.phase != graph::OpPhase::kUpdate || !is_optimizer_update(op.kind)) continue;
    if (slot_[op.inputs[1].index()] < 0) {
      return make_error(Errc::kInternal, "the gradient '{}' is not held before the updates",
                        graph_.value(op.inputs[1]).name);
    }
    grads.push_back(view_of(op.inputs[1]));
  }
  return grads;
}

Status Executor::restore_loss_scale(float scale, int64_t good_steps) {
  if (!scaler_) return make_error(Errc::kInvalidArgument, "loss scaling is off");
  return scaler_->restore(scale, good_steps);
}

MemoryReport Executor::memory() const {
  int64_t persistent = 0;
  for (size_t i = 0; i < persistent_.size(); ++i) {
    if (persistent_[i]) persistent += graph_.values()[i].bytes();
  }
  return MemoryReport{
      .persistent = Bytes(persistent),
      .peak = Bytes(last_peak_),
      .peak_values = Bytes(last_peak_values_),
      .reserved = gpu_ != nullptr ? Bytes(gpu_->memory_stats().reserved) : pool_.stats().reserved,
  };
}

kernels::AllocatorStats Executor::gpu_memory_stats() const {
  return gpu_ != nullptr ? gpu_->memory_stats() : kernels::AllocatorStats{};
}

}  // namespace meshpipe::runtime
