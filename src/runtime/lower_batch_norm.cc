// Lowering: a batch norm whose batch is split over mesh axes, as pieces with the per-channel
// sums all-reduced between them (explicit instructions the validator and simulator see).
#include <fmt/format.h>

#include "runtime/internal/lowering.h"

namespace meshpipe::runtime::internal {

void Lowering::emit_channel_all_reduces(StageState& st, int32_t b, const Shape& shape,
                                        ShardingSpec spec, uint8_t axes, Phase phase, int32_t mb,
                                        const std::string& what) {
  const mesh::LogicalMesh& m = st.plan->mesh;
  for (int a = 0; a < 2; ++a) {
    if ((axes & (1u << a)) != 0 && m.size(a) > 1) spec.partial |= static_cast<uint8_t>(1u << a);
  }
  for (int a = 0; a < 2; ++a) {
    if ((spec.partial & (1u << a)) == 0) continue;
    Instruction ins;
    ins.code = Opcode::kCollective;
    ins.phase = phase;
    ins.micro_batch = mb;
    ins.in = {b};
    ins.out = {b};
    ins.spec = spec;
    ins.shape = shape;
    ins.collective.kind = mesh::CollectiveKind::kAllReduce;
    ins.collective.axis = a;
    ins.collective.bytes = st.buffers[static_cast<size_t>(b)].bytes();
    spec.partial = static_cast<uint8_t>(spec.partial & ~(1u << a));
    ins.collective.after = spec;
    ins.collective.cost =
        mesh::collective_cost(mesh::CollectiveKind::kAllReduce, ins.collective.bytes, m, a);
    ins.what = fmt::format("{}: all-reduce", what);
    emit_all(st, std::move(ins));
  }
}

Status Lowering::emit_synchronised_batch_norm(StageState& st, size_t id,
                                              const std::vector<int32_t>& in,
                                              const std::vector<int32_t>& out, Phase phase,
                                              int32_t mb) {
  const Op& op = g_.ops()[id];
  const LocalOp& l0 = local_[id][0];
  const std::string what = op.name + mb_suffix(mb);
  const auto piece = [&](OpKind kind, std::vector<Shape> ins, std::vector<Shape> outs, bool first) {
    std::vector<LocalOp> per_device;
    for (const LocalOp& l : local_[id]) {
      LocalOp p;
      p.op.kind = kind;
      p.op.name = l.op.name;
      p.op.attrs.eps = l.op.attrs.eps;
      p.op.attrs.count = l.sync_count;
      p.op.layer = l.op.layer;
      p.op.phase = l.op.phase;
      p.inputs = ins;
      p.outputs = outs;
      if (first) p.work = l.work;
      per_device.push_back(std::move(p));
    }
    return per_device;
  };
  const Shape& x = l0.inputs[op.kind == OpKind::kBatchNorm ? 0 : 1];
  const Shape& channels = l0.outputs[1];
  const Shape& full_channels = g_.value(op.outputs[1]).shape;
  const ShardingSpec channel_spec = l0.computed_specs[1];
  if (op.kind == OpKind::kBatchNorm) {
    // in: x, gamma, beta; out: y, mean, rstd. The sums live in the mean's buffer (turned into
    // the mean in place) and the square sums in rstd's (read per channel before rstd is
    // written there), so the pieces need no buffers of their own.
    const int32_t sums = out[1];
    const int32_t sq = out[2];
    emit_run(st, piece(OpKind::kBatchNormSums, {x}, {channels}, true), {in[0]}, {sums}, phase, mb,
             what + " (sums)");
    emit_channel_all_reduces(st, sums, full_channels, channel_spec, l0.sync_axes, phase, mb,
                             what + " channel sums");
    emit_run(st, piece(OpKind::kBatchNormStats, {x, channels}, {channels, channels}, false),
             {in[0], sums}, {out[1], sq}, phase, mb, what + " (statistics)");
    emit_channel_all_reduces(st, sq, full_channels, channel_spec, l0.sync_axes, phase, mb,
                             what + " square sums");
    emit_run(st,
             piece(OpKind::kBatchNormApply, {x, channels, channels, l0.inputs[1], l0.inputs[2]},
                   {l0.outputs[0], channels}, false),
             {in[0], out[1], sq, in[1], in[2]}, {out[0], out[2]}, phase, mb, what);
    return Status::ok();
  }
  if (op.kind == OpKind::kBatchNormGrad) {
    // in: dy, x, mean, rstd, gamma; out: dx, dgamma, dbeta
    emit_run(st,
             piece(OpKind::kBatchNormGradSums, {l0.inputs[0], x, l0.inputs[2], l0.inputs[3]},
                   {channels, channels}, true),
             {in[0], in[1], in[2], in[3]}, {out[1], out[2]}, phase, mb, what + " (sums)");
    emit_channel_all_reduces(st, out[1], full_channels, channel_spec, l0.sync_axes, phase, mb,
                             what + " dgamma");
    emit_channel_all_reduces(st, out[2], full_channels, channel_spec, l0.sync_axes, phase, mb,
                             what + " dbeta");
    emit_run(st,
             piece(OpKind::kBatchNormGradApply,
                   {l0.inputs[0], x, l0.inputs[2], l0.inputs[3], l0.inputs[4], channels, channels},
                   {l0.outputs[0]}, false),
             {in[0], in[1], in[2], in[3], in[4], out[1], out[2]}, {out[0]}, phase, mb, what);
    return Status::ok();
  }
  return make_error(Errc::kInternal, "op '{}' ({}) has synchronised statistics", op.name,
                    op_kind_name(op.kind));
}

}  // namespace meshpipe::runtime::internal
