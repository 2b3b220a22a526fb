// The cases of backend_ops (tests/kernels/backend_ops.cc): for every op kind, operands with valid
// data (from fixed seeds) in realistic and awkward shapes, and how close two backends must agree.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/op_attrs.h"
#include "core/op_geometry.h"
#include "core/op_kind.h"
#include "core/shape.h"

namespace meshpipe::kernels::backend_ops {

/// How a case's results may differ between backends; backend_ops.cc holds the numbers.
enum class TolClass : uint8_t {
  kExact,        ///< data movement: copies of input elements, zeros or one rounded constant
  kElementwise,  ///< one f32 expression per element, or data movement
  kReduction,    ///< sums over rows, channels or windows; softmax, norms, losses, gating
  kGemm,         ///< dot products and convolutions
};

/// "exact", "elementwise", "reduction", "gemm".
const char* tol_class_name(TolClass t);

/// One input of a case: f32 values for a floating operand, i32 values for ids and labels.
struct Operand {
  Shape shape;
  bool is_int = false;
  std::optional<DType> dtype;  ///< floating: unset, stored in the run's dtype; set, always this
  std::vector<float> values;
  std::vector<int32_t> ids;
};

/// One output of a case.
struct Output {
  Shape shape;
  bool is_int = false;
  std::optional<DType> dtype;  ///< floating: unset, stored in the run's dtype; set, always this
};

/// One call of one kind.
struct Case {
  OpKind kind = OpKind::kAdd;
  std::string label;
  OpAttrs attrs;
  int64_t row_offset = 0;
  int64_t id_offset = 0;
  std::vector<Operand> in;
  std::vector<Output> out;
  TolClass tol = TolClass::kElementwise;
  /// Roundings to the half dtype a half output may see: more than one where a backend may
  /// compute it from other half outputs of the same call (a norm's y from its stored mean/rstd).
  int roundings = 1;
  /// Some floating views have their own dtype while the others take the run's: run with f16 and
  /// bf16 only.
  bool mixed = false;
};

/// Every case, in a fixed order, with fixed data.
std::vector<Case> make_cases();

/// Runs `c` with the CPU f32 kernels on `in_values` (one vector per input; i32 inputs use their
/// ids) and returns the outputs, which start as NaN (an i32 output holds its bits in the floats).
/// Aborts when the call fails.
std::vector<std::vector<float>> cpu_reference(const Case& c,
                                              const std::vector<std::vector<float>>& in_values);

// ---- building blocks of the case files ----

/// std::mt19937 words mapped to uniform and (Box-Muller) normal values by hand, so the data do not
/// depend on a standard library's distributions.
class Gen {
 public:
  explicit Gen(uint32_t seed) : engine_(seed) {}
  double uniform() { return (static_cast<double>(engine_()) + 0.5) / 4294967296.0; }
  double normal() {
    const double u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  /// An integer in [lo, hi).
  int32_t below(int32_t lo, int32_t hi) {
    return lo + static_cast<int32_t>(engine_() % static_cast<uint32_t>(hi - lo));
  }

 private:
  std::mt19937 engine_;
};

/// Operands: given values, standard normal (times scale, plus shift), uniform in [lo, hi), ids.
Operand values(const Shape& s, std::vector<float> v);
Operand normal(Gen& g, const Shape& s, double scale = 1.0, double shift = 0.0);
Operand uniform(Gen& g, const Shape& s, double lo, double hi);
Operand ints(const Shape& s, std::vector<int32_t> v);
Operand random_ints(Gen& g, const Shape& s, int32_t lo, int32_t hi);
Operand scalar(float v);
/// The operand stored in f32 whatever the run's dtype.
Operand fixed_f32(Operand o);
/// Outputs in the run's dtype, or always f32.
Output output(const Shape& s);
Output fixed_f32_output(const Shape& s);
/// "7x13" ("scalar" for rank 0); "0,2".
std::string dims(const Shape& s);
std::string join(const std::vector<int64_t>& v);
/// A case of `kind` without operands.
Case make(OpKind kind, std::string label, TolClass tol);
/// The CPU f32 outputs of `c` on its own values (inputs derived from other kernels).
std::vector<std::vector<float>> derive(const Case& c);
/// The shape without its last dim; without the dims `axes`.
Shape rows_of(const Shape& s);
Shape without(const Shape& s, const std::vector<int64_t>& axes);
Window2d window(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw);
/// [N, channels, Ho, Wo] of a window over x [N, C, H, W].
Shape window_out(const Shape& x, int64_t channels, const Window2d& w);

/// The families, each appending its cases (backend_ops_cases.cc, backend_ops_cases_nn.cc).
void add_elementwise_cases(std::vector<Case>& cases);
void add_conversion_cases(std::vector<Case>& cases);
void add_layout_cases(std::vector<Case>& cases);
void add_optimizer_cases(std::vector<Case>& cases);
void add_softmax_cases(std::vector<Case>& cases);
void add_norm_cases(std::vector<Case>& cases);
void add_loss_cases(std::vector<Case>& cases);
void add_embedding_cases(std::vector<Case>& cases);
void add_gating_cases(std::vector<Case>& cases);
void add_pooling_cases(std::vector<Case>& cases);
void add_dot_cases(std::vector<Case>& cases);
void add_conv_cases(std::vector<Case>& cases);

}  // namespace meshpipe::kernels::backend_ops
