// CPU data movement (transpose, slice, pad, concat, broadcast) and sum/mean reduction.
// Movement ops copy raw elements, so they serve every dtype of the right width.
#include <array>
#include <cstring>

#include "kernels/internal/box_runs.h"
#include "kernels/internal/cpu_common.h"
#include "kernels/layout.h"
#if MP_KERNELS_HAVE_CUDA_COLUMN
#include "kernels/internal/cuda_rows.h"
#include "kernels/internal/gpu_state.h"
#endif

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::Dims;
using internal::kMaxRank;
using internal::kParallelElems;

// Output elements one reduction task accumulates at once (double accumulators on the stack).
constexpr int64_t kColumnBlock = 64;

void check_rank(const Shape& s, const char* op) {
  MP_CHECK(s.rank() <= kMaxRank) << op << " supports rank <= " << kMaxRank << ", got "
                                 << s.to_string();
}

Dims to_dims(const Shape& s) {
  Dims d{};
  for (int64_t i = 0; i < s.rank(); ++i) d[static_cast<size_t>(i)] = s[i];
  return d;
}

Dims row_major_strides(const Shape& s) {
  Dims st{};
  int64_t acc = 1;
  for (int64_t i = s.rank() - 1; i >= 0; --i) {
    st[static_cast<size_t>(i)] = acc;
    acc *= s[i];
  }
  return st;
}

// dst (contiguous, dims `dims`) gets src walked with `src_strides` per dst dim (0 broadcasts).
// Index arithmetic is paid once per destination row; the last dim is a tight strided loop.
void strided_gather(const uint32_t* src, const Dims& dims, const Dims& src_strides, int64_t rank,
                    uint32_t* dst) {
  int64_t total = 1;
  for (int64_t i = 0; i < rank; ++i) total *= dims[static_cast<size_t>(i)];
  if (total == 0) return;
  const int64_t cols = rank > 0 ? dims[static_cast<size_t>(rank - 1)] : 1;
  const int64_t col_stride = rank > 0 ? src_strides[static_cast<size_t>(rank - 1)] : 0;
  const int64_t rows = total / cols;
#pragma omp parallel for if (total > kParallelElems)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r;
    int64_t offset = 0;
    for (int64_t i = rank - 2; i >= 0; --i) {
      const auto u = static_cast<size_t>(i);
      offset += (rest % dims[u]) * src_strides[u];
      rest /= dims[u];
    }
    const uint32_t* s = src + offset;
    uint32_t* d = dst + r * cols;
    for (int64_t c = 0; c < cols; ++c) d[c] = s[c * col_stride];
  }
}

// x as [outer, len, inner] around `axis`, measured in bytes for the inner block.
struct AxisSplit {
  int64_t outer = 1;
  int64_t len = 1;
  int64_t inner_bytes = 1;
};

AxisSplit split_at(const TensorView& v, int64_t axis) {
  return AxisSplit{v.shape.numel_range(0, axis), v.shape[axis],
                   v.shape.numel_range(axis + 1, v.shape.rank()) * dtype_size(v.dtype)};
}

// Every dim of a and b but `axis` must agree, and so must dtype; both must be contiguous.
void check_same_except(const TensorView& a, const TensorView& b, int64_t axis, const char* op) {
  MP_CHECK(a.is_contiguous() && b.is_contiguous()) << op << ": needs contiguous views";
  MP_CHECK(a.dtype == b.dtype) << op << ": dtypes differ";
  MP_CHECK(axis >= 0 && axis < a.shape.rank() && a.shape.rank() == b.shape.rank())
      << op << ": axis " << axis << " invalid for " << a.shape.to_string() << " and "
      << b.shape.to_string();
  for (int64_t i = 0; i < a.shape.rank(); ++i) {
    MP_CHECK(i == axis || a.shape[i] == b.shape[i])
        << op << ": " << a.shape.to_string() << " and " << b.shape.to_string()
        << " differ outside axis " << axis;
  }
}

// Copies `small` into the window [start, start + small.len) of `big` along the split axis
// (to_big) or the window out of `big` into `small` (!to_big).
void copy_window(const TensorView& big, const TensorView& small, int64_t axis, int64_t start,
                 bool to_big) {
  const AxisSplit b = split_at(big, axis);
  const AxisSplit s = split_at(small, axis);
  auto* big_bytes = static_cast<char*>(big.data);
  auto* small_bytes = static_cast<char*>(small.data);
  const int64_t chunk = s.len * s.inner_bytes;
#pragma omp parallel for if (small.numel() > kParallelElems)
  for (int64_t o = 0; o < s.outer; ++o) {
    char* bp = big_bytes + (o * b.len + start) * b.inner_bytes;
    char* sp = small_bytes + o * chunk;
    if (to_big) {
      std::memcpy(bp, sp, static_cast<size_t>(chunk));
    } else {
      std::memcpy(sp, bp, static_cast<size_t>(chunk));
    }
  }
}

// How reduce walks x: x = [leading dims (kept and reduced, the last of them reduced),
// a trailing run of `inner` kept elements]. The output is [leading kept dims, inner].
struct ReducePlan {
  int64_t inner = 1;
  int64_t last_len = 1;  // size of the last reduced dim, whose stride is `inner`
  Dims kept_dims{};      // leading kept dims and their strides in x
  Dims kept_strides{};
  int64_t num_kept = 0;
  Dims red_dims{};  // reduced dims other than the last, and their strides in x
  Dims red_strides{};
  int64_t num_red = 0;
  int64_t outer = 1;      // product of kept_dims
  int64_t other_red = 1;  // product of red_dims
  int64_t count = 1;      // elements summed into each output
};

ReducePlan plan_reduce(const Shape& shape, const std::array<bool, kMaxRank>& reduced) {
  const Dims dims = to_dims(shape);
  const Dims strides = row_major_strides(shape);
  ReducePlan p;
  int64_t lead = shape.rank();
  while (!reduced[static_cast<size_t>(lead - 1)]) --lead;
  p.inner = shape.numel_range(lead, shape.rank());
  p.last_len = dims[static_cast<size_t>(lead - 1)];
  p.count = p.last_len;
  for (int64_t d = 0; d + 1 < lead; ++d) {
    const auto u = static_cast<size_t>(d);
    if (reduced[u]) {
      p.red_dims[static_cast<size_t>(p.num_red)] = dims[u];
      p.red_strides[static_cast<size_t>(p.num_red++)] = strides[u];
      p.other_red *= dims[u];
      p.count *= dims[u];
    } else {
      p.kept_dims[static_cast<size_t>(p.num_kept)] = dims[u];
      p.kept_strides[static_cast<size_t>(p.num_kept++)] = strides[u];
      p.outer *= dims[u];
    }
  }
  return p;
}

// Offset in x of flat index `flat` over (dims, strides)[0, n).
int64_t unravel_offset(int64_t flat, const Dims& dims, const Dims& strides, int64_t n) {
  int64_t offset = 0;
  for (int64_t i = n - 1; i >= 0; --i) {
    const auto u = static_cast<size_t>(i);
    offset += (flat % dims[u]) * strides[u];
    flat /= dims[u];
  }
  return offset;
}

// Each task owns one leading kept index and a block of up to kColumnBlock trailing elements:
// it reads contiguous runs of the block for every reduced index, with the last reduced dim as
// the tight loop, so both "sum over the last axis" and "sum over leading axes" stream memory.
void sum_reduce(const float* in, const ReducePlan& p, double scale, bool parallel, float* y) {
  const int64_t blocks = (p.inner + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for if (parallel)
  for (int64_t task = 0; task < p.outer * blocks; ++task) {
    const int64_t o = task / blocks;
    const int64_t c0 = (task % blocks) * kColumnBlock;
    const int64_t width = (p.inner - c0) < kColumnBlock ? (p.inner - c0) : kColumnBlock;
    const int64_t base = c0 + unravel_offset(o, p.kept_dims, p.kept_strides, p.num_kept);
    std::array<double, kColumnBlock> acc{};
    for (int64_t rr = 0; rr < p.other_red; ++rr) {
      const int64_t off = base + unravel_offset(rr, p.red_dims, p.red_strides, p.num_red);
      for (int64_t t = 0; t < p.last_len; ++t) {
        const float* row = in + off + t * p.inner;
        for (int64_t j = 0; j < width; ++j) acc[static_cast<size_t>(j)] += row[j];
      }
    }
    float* dst = y + o * p.inner + c0;
    for (int64_t j = 0; j < width; ++j) {
      dst[j] = static_cast<float>(acc[static_cast<size_t>(j)] * scale);
    }
  }
}

}  // namespace

void transpose(const KernelContext& ctx, const TensorView& x, const std::vector<int64_t>& perm,
               const TensorView& out) {
  check_cpu(ctx, "transpose");
  check_rank(x.shape, "transpose");
  MP_CHECK(dtype_size(x.dtype) == 4 && x.dtype == out.dtype)
      << "transpose: needs matching 4-byte dtypes";
  MP_CHECK(x.is_contiguous() && out.is_contiguous()) << "transpose: needs contiguous views";
  const int64_t rank = x.shape.rank();
  MP_CHECK(static_cast<int64_t>(perm.size()) == rank && out.shape.rank() == rank)
      << "transpose: perm of size " << perm.size() << " for rank " << rank;
  const Dims x_strides = row_major_strides(x.shape);
  Dims src_strides{};
  std::array<bool, kMaxRank> seen{};
  for (int64_t i = 0; i < rank; ++i) {
    const int64_t p = perm[static_cast<size_t>(i)];
    MP_CHECK(p >= 0 && p < rank && !seen[static_cast<size_t>(p)])
        << "transpose: perm is not a permutation";
    seen[static_cast<size_t>(p)] = true;
    MP_CHECK(out.shape[i] == x.shape[p]) << "transpose: out " << out.shape.to_string()
                                         << " does not match x " << x.shape.to_string();
    src_strides[static_cast<size_t>(i)] = x_strides[static_cast<size_t>(p)];
  }
  strided_gather(static_cast<const uint32_t*>(x.data), to_dims(out.shape), src_strides, rank,
                 static_cast<uint32_t*>(out.data));
}

void slice(const KernelContext& ctx, const TensorView& x, int64_t axis, int64_t start,
           const TensorView& out) {
  check_cpu(ctx, "slice");
  check_same_except(x, out, axis, "slice");
  MP_CHECK(start >= 0 && start + out.shape[axis] <= x.shape[axis])
      << "slice: [" << start << ", " << start + out.shape[axis] << ") exceeds dim "
      << x.shape[axis];
  copy_window(x, out, axis, start, /*to_big=*/false);
}

void pad(const KernelContext& ctx, const TensorView& x, int64_t axis, int64_t start,
         const TensorView& out) {
  check_cpu(ctx, "pad");
  check_same_except(out, x, axis, "pad");
  MP_CHECK(start >= 0 && start + x.shape[axis] <= out.shape[axis])
      << "pad: [" << start << ", " << start + x.shape[axis] << ") exceeds dim " << out.shape[axis];
  std::memset(out.data, 0, static_cast<size_t>(out.bytes()));
  copy_window(out, x, axis, start, /*to_big=*/true);
}

void concat(const KernelContext& ctx, const std::vector<TensorView>& inputs, int64_t axis,
            const TensorView& out) {
  check_cpu(ctx, "concat");
  int64_t offset = 0;
  for (const TensorView& in : inputs) {
    check_same_except(out, in, axis, "concat");
    MP_CHECK(offset + in.shape[axis] <= out.shape[axis])
        << "concat: inputs are longer than out along axis " << axis;
    copy_window(out, in, axis, offset, /*to_big=*/true);
    offset += in.shape[axis];
  }
  MP_CHECK(offset == out.shape[axis])
      << "concat: inputs cover " << offset << " of " << out.shape[axis] << " along axis " << axis;
}

void reduce(const KernelContext& ctx, const TensorView& x, const std::vector<int64_t>& axes,
            bool mean, const TensorView& out) {
  check_cpu(ctx, "reduce");
  check_rank(x.shape, "reduce");
  MP_CHECK(x.dtype == DType::kF32 && out.dtype == DType::kF32) << "reduce: needs f32";
  MP_CHECK(x.is_contiguous() && out.is_contiguous()) << "reduce: needs contiguous views";
  const int64_t rank = x.shape.rank();
  std::array<bool, kMaxRank> reduced{};
  for (size_t i = 0; i < axes.size(); ++i) {
    MP_CHECK(axes[i] >= 0 && axes[i] < rank && (i == 0 || axes[i] > axes[i - 1]))
        << "reduce: axes must be ascending, distinct and below rank " << rank;
    reduced[static_cast<size_t>(axes[i])] = true;
  }
  int64_t kept = 0;
  for (int64_t d = 0; d < rank; ++d) {
    if (reduced[static_cast<size_t>(d)]) continue;
    MP_CHECK(kept < out.shape.rank() && out.shape[kept] == x.shape[d])
        << "reduce: out " << out.shape.to_string() << " is not x " << x.shape.to_string()
        << " without the reduced axes";
    ++kept;
  }
  MP_CHECK(kept == out.shape.rank())
      << "reduce: out has rank " << out.shape.rank() << ", expected " << kept;
  if (axes.empty()) {
    std::memcpy(out.data, x.data, static_cast<size_t>(x.bytes()));
    return;
  }
  const ReducePlan plan = plan_reduce(x.shape, reduced);
  const double scale = mean ? 1.0 / static_cast<double>(plan.count) : 1.0;
  sum_reduce(x.f32(), plan, scale, x.numel() > kParallelElems, out.f32());
}

void broadcast(const KernelContext& ctx, const TensorView& x, const std::vector<int64_t>& dims,
               const TensorView& out) {
  check_cpu(ctx, "broadcast");
  check_rank(out.shape, "broadcast");
  MP_CHECK(dtype_size(x.dtype) == 4 && x.dtype == out.dtype)
      << "broadcast: needs matching 4-byte dtypes";
  MP_CHECK(x.is_contiguous() && out.is_contiguous()) << "broadcast: needs contiguous views";
  MP_CHECK(static_cast<int64_t>(dims.size()) == x.shape.rank())
      << "broadcast: " << dims.size() << " dims for x of rank " << x.shape.rank();
  const Dims x_strides = row_major_strides(x.shape);
  Dims src_strides{};
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = dims[i];
    MP_CHECK(d >= 0 && d < out.shape.rank() && (i == 0 || d > dims[i - 1]))
        << "broadcast: dims must be ascending and below rank " << out.shape.rank();
    MP_CHECK(out.shape[d] == x.shape[static_cast<int64_t>(i)])
        << "broadcast: x dim " << i << " has " << x.shape[static_cast<int64_t>(i)] << ", out dim "
        << d << " has " << out.shape[d];
    src_strides[static_cast<size_t>(d)] = x_strides[i];
  }
  strided_gather(static_cast<const uint32_t*>(x.data), to_dims(out.shape), src_strides,
                 out.shape.rank(), static_cast<uint32_t*>(out.data));
}

void copy_box(const KernelContext& ctx, const TensorView& src,
              const std::vector<int64_t>& src_offset, const TensorView& dst,
              const std::vector<int64_t>& dst_offset, const std::vector<int64_t>& extent) {
  check_rank(src.shape, "copy_box");
  const int64_t rank = src.shape.rank();
  MP_CHECK(src.dtype == dst.dtype && dst.shape.rank() == rank &&
           static_cast<int64_t>(src_offset.size()) == rank &&
           static_cast<int64_t>(dst_offset.size()) == rank &&
           static_cast<int64_t>(extent.size()) == rank && src.is_contiguous() &&
           dst.is_contiguous())
      << "copy_box: rank, dtype or contiguity mismatch (" << src.shape.to_string() << " -> "
      << dst.shape.to_string() << ")";
  for (int64_t d = 0; d < rank; ++d) {
    const auto u = static_cast<size_t>(d);
    MP_CHECK(extent[u] >= 0 && src_offset[u] >= 0 && dst_offset[u] >= 0 &&
             src_offset[u] + extent[u] <= src.shape[d] && dst_offset[u] + extent[u] <= dst.shape[d])
        << "copy_box: box out of range in dim " << d << " (" << src.shape.to_string() << " -> "
        << dst.shape.to_string() << ")";
  }
  if (ctx.device == Device::kCuda) {  // both views in the GPU's memory
#if MP_KERNELS_HAVE_CUDA_COLUMN
    MP_CHECK(ctx.gpu != nullptr) << "copy_box: a CUDA context without a GPU state";
    if (ctx.gpu->make_current()) {  // else the error waits in the GPU state
      internal::cuda_copy_box(*ctx.gpu, src, src_offset, dst, dst_offset, extent);
    }
    return;
#else
    MP_CHECK(false) << "copy_box: this build has no CUDA kernels";
#endif
  }
  check_cpu(ctx, "copy_box");
  const int64_t width = dtype_size(src.dtype);
  const auto* from = static_cast<const char*>(src.data);
  auto* to = static_cast<char*>(dst.data);
  if (rank == 0) {
    std::memcpy(to, from, static_cast<size_t>(width));
    return;
  }
  for (int64_t d = 0; d < rank; ++d) {
    if (extent[static_cast<size_t>(d)] == 0) return;
  }
  // One memcpy per run (kernels/internal/box_runs.h).
  const internal::BoxRuns br =
      internal::box_runs(src.shape, src_offset, dst.shape, dst_offset, extent);
  const std::vector<int64_t>& ss = br.src_strides;
  const std::vector<int64_t>& ds = br.dst_strides;
  const int64_t inner = br.inner;
  const int64_t run = br.run;
  int64_t so = br.src_first;
  int64_t dof = br.dst_first;
  const auto bytes = static_cast<size_t>(run * width);
  if (inner == 0) {
    std::memcpy(to + dof * width, from + so * width, bytes);
    return;
  }
  // The leading dims 0..inner-1 as an odometer, the offsets kept up to date incrementally.
  std::array<int64_t, kMaxRank> index{};
  for (;;) {
    std::memcpy(to + dof * width, from + so * width, bytes);
    int64_t d = inner - 1;
    for (; d >= 0; --d) {
      const auto u = static_cast<size_t>(d);
      so += ss[u];
      dof += ds[u];
      if (++index[u] < extent[u]) break;
      so -= extent[u] * ss[u];
      dof -= extent[u] * ds[u];
      index[u] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace meshpipe::kernels
