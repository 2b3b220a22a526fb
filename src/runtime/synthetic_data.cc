// Synthetic batches.
#include "runtime/synthetic_data.h"

#include <algorithm>
#include <numeric>
#include <set>

namespace meshpipe::runtime {

ValueId reshape_source(const graph::Graph& g, ValueId id) {
  while (g.value(id).producer.is_valid()) {
    const graph::Op& op = g.op(g.value(id).producer);
    if (op.kind != graph::OpKind::kReshape) break;
    id = op.inputs[0];
  }
  return id;
}

int64_t index_bound(const graph::Graph& g, ValueId id) {
  // Follow the input's integers forward through the ops that move them without computing
  // (reshapes, slices, transposes, concatenations, conversions, broadcasts) to the embeddings
  // and losses that read them as indices.
  int64_t bound = int64_t{1} << 31;
  std::vector<ValueId> frontier = {id};
  std::set<int32_t> seen = {id.value()};
  while (!frontier.empty()) {
    const ValueId v = frontier.back();
    frontier.pop_back();
    for (const OpId u : g.users(v)) {
      const graph::Op& op = g.op(u);
      switch (op.kind) {
        case graph::OpKind::kReshape:
        case graph::OpKind::kSlice:
        case graph::OpKind::kTranspose:
        case graph::OpKind::kConcat:
        case graph::OpKind::kConvert:
        case graph::OpKind::kBroadcast:
          for (const ValueId o : op.outputs) {
            if (seen.insert(o.value()).second) frontier.push_back(o);
          }
          break;
        case graph::OpKind::kEmbedding:
          if (op.inputs[1] == v) bound = std::min(bound, g.value(op.inputs[0]).shape[0]);
          break;
        case graph::OpKind::kCrossEntropy:
          if (op.inputs[1] == v) {
            const Shape& logits = g.value(op.inputs[0]).shape;
            bound = std::min(bound, logits[logits.rank() - 1]);
          }
          break;
        default:
          break;
      }
    }
  }
  return bound;
}

namespace {

// The role of an input named otherwise (an imported model's): the labels are the integer input
// the cross-entropy loss reads (through reshapes); the one other input is the data: integer
// tokens [B, T], images [B, C, H, W] or features [B, D].
Expected<std::string> role_by_structure(const graph::Graph& g, const std::vector<ValueId>& inputs,
                                        ValueId id) {
  for (const graph::Op& op : g.ops()) {
    if (op.kind == graph::OpKind::kCrossEntropy && reshape_source(g, op.inputs[1]) == id) {
      return std::string("labels");
    }
  }
  const graph::Value& v = g.value(id);
  if (inputs.size() == 2) {
    if (!is_floating(v.dtype) && v.shape.rank() == 2) return std::string("tokens");
    if (is_floating(v.dtype) && v.shape.rank() == 4) return std::string("images");
    if (is_floating(v.dtype) && v.shape.rank() == 2) return std::string("features");
  }
  return make_error(Errc::kInvalidArgument,
                    "synthetic data cannot fill input '{}' of shape {} (it fills models with "
                    "a cross-entropy loss, its labels input and one data input: integer tokens "
                    "[batch, sequence], images [batch, C, H, W] or features [batch, D]; give "
                    "the data instead)",
                    v.name, v.shape.to_string());
}

}  // namespace

Expected<SyntheticData> SyntheticData::create(const graph::Graph& g,
                                              const std::vector<ValueId>& inputs, uint64_t seed) {
  SyntheticData d;
  d.seed_ = seed;
  bool have_data = false;
  bool named = true;  // the zoo's input names; else the roles come from the graph's structure
  for (ValueId id : inputs) {
    const std::string& n = g.value(id).name;
    named = named && (n == "labels" || n == "tokens" || n == "images" || n == "features");
  }
  for (ValueId id : inputs) {
    const graph::Value& v = g.value(id);
    std::string role = v.name;
    if (!named) {
      MP_ASSIGN_OR_RETURN(role, role_by_structure(g, inputs, id));
    }
    if (role == "labels") {
      d.label_id_ = id;
      d.label_shape_ = v.shape;
    } else if (role == "tokens" || role == "images" || role == "features") {
      d.data_id_ = id;
      d.data_shape_ = v.shape;
      d.kind_ =
          role == "tokens" ? Kind::kTokens : (role == "images" ? Kind::kImages : Kind::kFeatures);
      have_data = true;
    } else {
      return make_error(Errc::kInvalidArgument,
                        "synthetic data cannot fill input '{}' (known inputs: tokens, images, "
                        "features, labels)",
                        v.name);
    }
  }
  if (!have_data || !d.label_id_.is_valid()) {
    return make_error(Errc::kInvalidArgument,
                      "synthetic data needs a 'labels' input and one of tokens/images/features");
  }
  d.batch_ = d.data_shape_[0];
  // The number of classes is the size of the loss's class dim: find the cross-entropy op.
  for (const graph::Op& op : g.ops()) {
    if (op.kind == graph::OpKind::kCrossEntropy) {
      const Shape& logits = g.value(op.inputs[0]).shape;
      d.classes_ = logits[logits.rank() - 1];
    }
  }
  if (d.classes_ < 2) {
    return make_error(Errc::kInvalidArgument, "synthetic data needs a cross-entropy loss");
  }
  // The labels must be what the kind writes: one per token, or one per sample.
  const int64_t want_labels = d.kind_ == Kind::kTokens ? d.data_shape_.numel() : d.data_shape_[0];
  if (d.label_shape_.numel() != want_labels || d.data_shape_.rank() < 2) {
    return make_error(Errc::kInvalidArgument,
                      "synthetic data cannot fill labels {} for data {} (it writes one label "
                      "per {}); give the data instead",
                      d.label_shape_.to_string(), d.data_shape_.to_string(),
                      d.kind_ == Kind::kTokens ? "token" : "sample");
  }
  // Tokens are drawn below the class count: every embedding they index must have that many rows.
  if (d.kind_ == Kind::kTokens && index_bound(g, d.data_id_) < d.classes_) {
    return make_error(Errc::kInvalidArgument,
                      "synthetic tokens run to {} (the loss's classes) but an embedding reading "
                      "them has {} rows; give the data instead",
                      d.classes_, index_bound(g, d.data_id_));
  }
  Rng rng(seed ^ 0x5EEDull);
  switch (d.kind_) {
    case Kind::kTokens: {
      d.seq_ = d.data_shape_[1];
      d.successor_.resize(static_cast<size_t>(d.classes_));
      std::iota(d.successor_.begin(), d.successor_.end(), 0);
      for (int64_t i = d.classes_ - 1; i > 0; --i) {  // Fisher-Yates with our own RNG
        std::swap(d.successor_[static_cast<size_t>(i)],
                  d.successor_[static_cast<size_t>(rng.below(i + 1))]);
      }
      break;
    }
    case Kind::kImages: {
      const int64_t pixels = d.data_shape_.numel() / d.batch_;
      d.patterns_.resize(static_cast<size_t>(d.classes_ * pixels));
      for (float& p : d.patterns_) p = static_cast<float>(rng.normal());
      break;
    }
    case Kind::kFeatures: {
      const int64_t dim = d.data_shape_[1];
      d.teacher_.resize(static_cast<size_t>(dim * d.classes_));
      for (float& w : d.teacher_) w = static_cast<float>(rng.normal());
      break;
    }
  }
  return d;
}

std::vector<std::pair<ValueId, HostTensor>> SyntheticData::next_batch() {
  Rng rng(mix64(seed_) ^ mix64(static_cast<uint64_t>(next_index_++)));
  HostTensor data(data_shape_, kind_ == Kind::kTokens ? DType::kI32 : DType::kF32);
  HostTensor labels(label_shape_, DType::kI32);
  switch (kind_) {
    case Kind::kTokens: {
      int32_t* tok = data.i32();
      int32_t* lab = labels.i32();
      for (int64_t b = 0; b < batch_; ++b) {
        int32_t t = static_cast<int32_t>(rng.below(classes_));
        for (int64_t s = 0; s <= seq_; ++s) {
          if (s < seq_) tok[b * seq_ + s] = t;
          if (s > 0) lab[b * seq_ + s - 1] = t;
          t = rng.uniform() < 0.8 ? successor_[static_cast<size_t>(t)]
                                  : static_cast<int32_t>(rng.below(classes_));
        }
      }
      break;
    }
    case Kind::kImages: {
      const int64_t pixels = data_shape_.numel() / batch_;
      float* x = data.f32();
      for (int64_t b = 0; b < batch_; ++b) {
        const int64_t c = rng.below(classes_);
        labels.i32()[b] = static_cast<int32_t>(c);
        for (int64_t p = 0; p < pixels; ++p) {
          x[b * pixels + p] =
              patterns_[static_cast<size_t>(c * pixels + p)] + static_cast<float>(rng.normal());
        }
      }
      break;
    }
    case Kind::kFeatures: {
      const int64_t dim = data_shape_[1];
      float* x = data.f32();
      for (int64_t b = 0; b < batch_; ++b) {
        for (int64_t k = 0; k < dim; ++k) x[b * dim + k] = static_cast<float>(rng.normal());
        int64_t best = 0;
        double best_score = -1e300;
        for (int64_t c = 0; c < classes_; ++c) {
          double score = 0;
          for (int64_t k = 0; k < dim; ++k) {
            score += x[b * dim + k] * teacher_[static_cast<size_t>(k * classes_ + c)];
          }
          if (score > best_score) {
            best_score = score;
            best = c;
          }
        }
        labels.i32()[b] = static_cast<int32_t>(best);
      }
      break;
    }
  }
  std::vector<std::pair<ValueId, HostTensor>> out;
  out.emplace_back(data_id_, std::move(data));
  out.emplace_back(label_id_, std::move(labels));
  return out;
}

}  // namespace meshpipe::runtime
