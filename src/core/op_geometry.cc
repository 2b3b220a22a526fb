// Validation and output shapes of dots and 2-D windows.
#include "core/op_geometry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>

namespace meshpipe {
namespace {

Status check_dim_list(const char* what, const std::vector<int64_t>& dims, int64_t rank,
                      std::set<int64_t>& seen) {
  for (int64_t d : dims) {
    if (d < 0 || d >= rank) {
      return make_error(Errc::kInvalidArgument, "{} dim {} is out of range for rank {}", what, d,
                        rank);
    }
    if (!seen.insert(d).second) {
      return make_error(Errc::kInvalidArgument, "{} dim {} is listed twice", what, d);
    }
  }
  return Status::ok();
}

}  // namespace

std::vector<int64_t> dot_free_dims(int64_t rank, const std::vector<int64_t>& batch,
                                   const std::vector<int64_t>& contract) {
  std::vector<int64_t> free;
  for (int64_t d = 0; d < rank; ++d) {
    if (std::find(batch.begin(), batch.end(), d) == batch.end() &&
        std::find(contract.begin(), contract.end(), d) == contract.end()) {
      free.push_back(d);
    }
  }
  return free;
}

Expected<Shape> dot_output_shape(const Shape& lhs, const Shape& rhs, const DotDims& dims) {
  if (dims.lhs_batch.size() != dims.rhs_batch.size()) {
    return make_error(Errc::kInvalidArgument, "lhs has {} batch dims but rhs has {}",
                      dims.lhs_batch.size(), dims.rhs_batch.size());
  }
  if (dims.lhs_contract.size() != dims.rhs_contract.size()) {
    return make_error(Errc::kInvalidArgument, "lhs has {} contracting dims but rhs has {}",
                      dims.lhs_contract.size(), dims.rhs_contract.size());
  }
  std::set<int64_t> lhs_seen;
  std::set<int64_t> rhs_seen;
  MP_RETURN_IF_ERROR(check_dim_list("lhs batch", dims.lhs_batch, lhs.rank(), lhs_seen));
  MP_RETURN_IF_ERROR(check_dim_list("lhs contracting", dims.lhs_contract, lhs.rank(), lhs_seen));
  MP_RETURN_IF_ERROR(check_dim_list("rhs batch", dims.rhs_batch, rhs.rank(), rhs_seen));
  MP_RETURN_IF_ERROR(check_dim_list("rhs contracting", dims.rhs_contract, rhs.rank(), rhs_seen));
  std::vector<int64_t> out;
  for (size_t i = 0; i < dims.lhs_batch.size(); ++i) {
    const int64_t a = lhs[dims.lhs_batch[i]];
    const int64_t b = rhs[dims.rhs_batch[i]];
    if (a != b) {
      return make_error(Errc::kInvalidArgument,
                        "batch dim sizes differ: lhs dim {} has {}, rhs dim {} has {}",
                        dims.lhs_batch[i], a, dims.rhs_batch[i], b);
    }
    out.push_back(a);
  }
  for (size_t i = 0; i < dims.lhs_contract.size(); ++i) {
    const int64_t a = lhs[dims.lhs_contract[i]];
    const int64_t b = rhs[dims.rhs_contract[i]];
    if (a != b) {
      return make_error(Errc::kInvalidArgument,
                        "contracting dim sizes differ: lhs dim {} has {}, rhs dim {} has {} "
                        "(lhs {}, rhs {})",
                        dims.lhs_contract[i], a, dims.rhs_contract[i], b, lhs.to_string(),
                        rhs.to_string());
    }
  }
  for (int64_t d : dot_free_dims(lhs.rank(), dims.lhs_batch, dims.lhs_contract)) {
    out.push_back(lhs[d]);
  }
  for (int64_t d : dot_free_dims(rhs.rank(), dims.rhs_batch, dims.rhs_contract)) {
    out.push_back(rhs[d]);
  }
  return Shape(std::move(out));
}

DotSizes dot_sizes(const Shape& lhs, const Shape& rhs, const DotDims& dims) {
  DotSizes s;
  for (int64_t d : dims.lhs_batch) s.batch *= lhs[d];
  for (int64_t d : dims.lhs_contract) s.k *= lhs[d];
  for (int64_t d : dot_free_dims(lhs.rank(), dims.lhs_batch, dims.lhs_contract)) s.m *= lhs[d];
  for (int64_t d : dot_free_dims(rhs.rank(), dims.rhs_batch, dims.rhs_contract)) s.n *= rhs[d];
  return s;
}

Expected<int64_t> window_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  if (kernel <= 0 || stride <= 0 || pad < 0) {
    return make_error(Errc::kInvalidArgument,
                      "window needs kernel > 0, stride > 0, padding >= 0 (got {}, {}, {})", kernel,
                      stride, pad);
  }
  const int64_t span = in + 2 * pad - kernel;
  if (span < 0) {
    return make_error(Errc::kInvalidArgument,
                      "window of size {} does not fit input of size {} with padding {}", kernel, in,
                      pad);
  }
  return span / stride + 1;
}

std::string window_to_string(const Window2d& w) {
  return fmt::format("k{}x{} s{}x{} p{}x{}", w.kernel_h, w.kernel_w, w.stride_h, w.stride_w,
                     w.pad_h, w.pad_w);
}

}  // namespace meshpipe
