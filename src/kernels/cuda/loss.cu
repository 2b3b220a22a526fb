// CUDA softmax cross-entropy with integer labels and its gradient: the CUDA twins of
// kernels/loss_cpu.cc. logits [..., V] are rows of V (a warp per row up to 1024 classes, a
// block per row above); the loss is the mean over all positions of logsumexp(row) -
// row[label]. Each row's loss goes to args.workspace and a single block sums them in a fixed
// order, so the loss is deterministic. The gradient reads dloss on the device (no host sync).
// The CPU aborts on a label outside [0, V); the device cannot, so such a position yields NaN
// (its loss, hence the mean, and its row of dlogits).
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"
#include "kernels/internal/cuda_rowwise.cuh"

namespace meshpipe::kernels::internal {
namespace {

constexpr int kSumThreads = 1024;

struct LossGeometry {
  int64_t positions = 0;
  int64_t vocab = 0;
};

LossGeometry check_loss(const TensorView& logits, const TensorView& labels, const char* op) {
  MP_CHECK(logits.shape.rank() >= 1) << op << ": logits must be [..., V]";
  MP_CHECK(labels.is_contiguous()) << op << ": labels must be contiguous";
  const int64_t rank = labels.shape.rank();
  bool matches = logits.shape.rank() == rank + 1;
  for (int64_t i = 0; matches && i < rank; ++i) matches = logits.shape[i] == labels.shape[i];
  MP_CHECK(matches) << op << ": logits " << logits.shape.to_string() << " do not match labels "
                    << labels.shape.to_string();
  return LossGeometry{labels.numel(), logits.shape[rank]};
}

// log(sum_j exp(row[j])) of the row at b, stabilised by the row max; every thread of the
// group gets it.
template <class G>
__device__ float row_log_sum_exp(DPtr x, int64_t b, int64_t v, float* scratch) {
  float m = -INFINITY;
  for (int64_t j = G::lane(); j < v; j += G::size()) m = fmaxf(m, ld(x, b + j));
  m = G::max(m, scratch);
  Kahan s;
  for (int64_t j = G::lane(); j < v; j += G::size()) s.add(expf(ld(x, b + j) - m));
  return m + logf(G::sum(s.value(), scratch));
}

// row_loss[p] = logsumexp(logits[p]) - logits[p, label[p]] (NaN for a label out of range).
template <class G>
__global__ void cross_entropy_rows_kernel(DPtr logits, const int32_t* labels, int64_t positions,
                                          int64_t v, float* row_loss) {
  __shared__ float scratch[32];
  for (int64_t p = G::first(); p < positions; p += G::step()) {
    const int64_t b = p * v;
    const float lse = row_log_sum_exp<G>(logits, b, v, scratch);
    if (G::leader()) {
      const int64_t label = labels[p];
      row_loss[p] = label >= 0 && label < v ? lse - ld(logits, b + label) : NAN;
    }
  }
}

// loss = sum(row_loss) / positions (0 for no positions), one block of kSumThreads.
__global__ void mean_kernel(const float* row_loss, int64_t positions, DPtr loss) {
  __shared__ float scratch[32];
  Kahan acc;
  for (int64_t p = threadIdx.x; p < positions; p += blockDim.x) acc.add(row_loss[p]);
  const float total = block_sum(acc.value(), scratch);
  if (threadIdx.x == 0) {
    st(loss, 0,
       positions > 0
           ? static_cast<float>(static_cast<double>(total) / static_cast<double>(positions))
           : 0.f);
  }
}

// dlogits = s * exp(logits - lse) - s * onehot(label), s = dloss / positions.
template <class G>
__global__ void cross_entropy_grad_kernel(DPtr logits, const int32_t* labels, DPtr dloss,
                                          int64_t positions, int64_t v, DPtr dlogits) {
  __shared__ float scratch[32];
  const auto s =
      static_cast<float>(static_cast<double>(ld(dloss, 0)) / static_cast<double>(positions));
  for (int64_t p = G::first(); p < positions; p += G::step()) {
    const int64_t b = p * v;
    const float lse = row_log_sum_exp<G>(logits, b, v, scratch);
    const int64_t label = labels[p];
    const bool valid = label >= 0 && label < v;
    for (int64_t j = G::lane(); j < v; j += G::size()) {
      float d = s * expf(ld(logits, b + j) - lse);
      if (j == label) d -= s;
      st(dlogits, b + j, valid ? d : NAN);
    }
  }
}

int64_t cross_entropy_workspace(std::span<const Shape> in, const OpAttrs& /*attrs*/) {
  return 4 * in[1].numel();
}

// (logits, labels) -> scalar mean loss.
void run_cross_entropy(const KernelArgs& a) {
  constexpr const char* kOp = "cross_entropy";
  GpuState& g = gpu_of(a);
  const LossGeometry geo = check_loss(a.in[0], a.in[1], kOp);
  MP_CHECK(a.out[0].numel() == 1) << "cross_entropy: loss is a scalar";
  const DPtr logits = dptr(a.in[0], kOp);
  const int32_t* labels = ids_ptr(a.in[1], kOp);
  const DPtr loss = dptr(a.out[0], kOp);
  float* row_loss = workspace_floats(a, geo.positions, kOp);
  if (geo.positions > 0) {
    const RowLaunch l = row_launch(g, geo.positions, contiguous_row_map(geo.vocab));
    dispatch_rows(l, [&](auto group) {
      cross_entropy_rows_kernel<decltype(group)><<<l.blocks, l.threads, 0, g.stream>>>(
          logits, labels, geo.positions, geo.vocab, row_loss);
    });
    check_launch(g, kOp);
  }
  // Always runs: with no positions the loss is 0, as on the CPU.
  mean_kernel<<<1, kSumThreads, 0, g.stream>>>(row_loss, geo.positions, loss);
  check_launch(g, kOp);
}

// (logits, labels, dloss) -> dlogits.
void run_cross_entropy_grad(const KernelArgs& a) {
  constexpr const char* kOp = "cross_entropy_grad";
  GpuState& g = gpu_of(a);
  const LossGeometry geo = check_loss(a.in[0], a.in[1], kOp);
  MP_CHECK(a.in[2].numel() == 1) << "cross_entropy_grad: dloss is a scalar";
  MP_CHECK(a.out[0].shape == a.in[0].shape)
      << "cross_entropy_grad: dlogits must be shaped like logits";
  const DPtr logits = dptr(a.in[0], kOp);
  const int32_t* labels = ids_ptr(a.in[1], kOp);
  const DPtr dloss = dptr(a.in[2], kOp);
  const DPtr dlogits = dptr(a.out[0], kOp);
  if (geo.positions == 0 || geo.vocab == 0) return;
  const RowLaunch l = row_launch(g, geo.positions, contiguous_row_map(geo.vocab));
  dispatch_rows(l, [&](auto group) {
    cross_entropy_grad_kernel<decltype(group)><<<l.blocks, l.threads, 0, g.stream>>>(
        logits, labels, dloss, geo.positions, geo.vocab, dlogits);
  });
  check_launch(g, kOp);
}

}  // namespace

std::vector<CudaRow> cuda_loss_rows() {
  using K = OpKind;
  return {
      {K::kCrossEntropy, {run_cross_entropy, cross_entropy_workspace}},
      {K::kCrossEntropyGrad, {run_cross_entropy_grad}},
  };
}

}  // namespace meshpipe::kernels::internal
