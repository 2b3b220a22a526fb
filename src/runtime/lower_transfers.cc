// Lowering: the sends and receives of values crossing from one stage's mesh to another's
// (the pieces of mesh::plan_cross_mesh, tagged by crossing, micro-batch and piece).
#include <fmt/format.h>

#include "runtime/internal/lowering.h"

namespace meshpipe::runtime::internal {

uint64_t Lowering::tag_of(const Crossing& c, int32_t mb, size_t piece) const {
  return (static_cast<uint64_t>(c.id) << 32) | (static_cast<uint64_t>(mb + 1) << 16) |
         static_cast<uint64_t>(piece);
}

Status Lowering::emit_sends(StageState& st, const Crossing& c, int32_t scope, Phase phase,
                            int32_t mb) {
  const graph::Value& val = g_.value(c.value);
  // Tags stay below 2^47: collectives over the transport use the tags above (comm/communicator.h);
  // crossing number kReservedCrossing is kept for the step-wide tags (kOverflowUpTag ...).
  if (c.plan.pieces.size() >= (1u << 16) || mb + 1 >= (1 << 16) ||
      static_cast<uint64_t>(c.id) >= kReservedCrossing) {
    return make_error(Errc::kOutOfRange,
                      "transfer of '{}' has too many pieces, micro-batches or crossings", val.name);
  }
  MP_ASSIGN_OR_RETURN(int32_t src, fetch(st, c.value, scope, c.send_spec, phase, mb));
  const planner::StagePlan& dst = plan_.stages[static_cast<size_t>(c.to)];
  for (size_t p = 0; p < c.plan.pieces.size(); ++p) {
    const mesh::TransferPiece& piece = c.plan.pieces[p];
    const size_t k = static_cast<size_t>(piece.src);
    const auto tile = mesh::tile_ranges(val.shape, c.send_spec, st.plan->mesh, st.i0(k), st.i1(k));
    int32_t buf = src;
    const std::string what = fmt::format("{}{} -> stage {} device {}", val.name, mb_suffix(mb),
                                         c.to, dst.devices[static_cast<size_t>(piece.dst)]);
    if (piece.region != tile) {
      buf = add_buffer(st, "send " + what, extent_shape(piece.region), val.dtype);
      Instruction pack;
      pack.code = Opcode::kCopyBox;
      pack.phase = phase;
      pack.micro_batch = mb;
      pack.in = {src};
      pack.out = {buf};
      pack.src_offset = relative(piece.region, tile);
      pack.dst_offset.assign(piece.region.size(), 0);
      pack.extent = extent_shape(piece.region).dims();
      pack.what = "pack " + what;
      st.code[k].push_back(std::move(pack));
    }
    Instruction send;
    send.code = Opcode::kSend;
    send.phase = phase;
    send.micro_batch = mb;
    send.in = {buf};
    send.peer = dst.devices[static_cast<size_t>(piece.dst)];
    send.tag = tag_of(c, mb, p);
    send.what = "send " + what;
    st.code[k].push_back(std::move(send));
  }
  return Status::ok();
}

Status Lowering::emit_recvs(StageState& st, const Crossing& c, int32_t scope, Phase phase,
                            int32_t mb) {
  const graph::Value& val = g_.value(c.value);
  const planner::StagePlan& src = plan_.stages[static_cast<size_t>(c.from)];
  const mesh::LogicalMesh& m = st.plan->mesh;
  const std::string name = fmt::format("{}{} from stage {}", val.name, mb_suffix(mb), c.from);
  const int32_t rb =
      add_buffer(st, name, mesh::tile_shape(val.shape, c.plan.received, m), val.dtype);
  for (size_t p = 0; p < c.plan.pieces.size(); ++p) {
    const mesh::TransferPiece& piece = c.plan.pieces[p];
    const size_t k = static_cast<size_t>(piece.dst);
    const auto tile = mesh::tile_ranges(val.shape, c.plan.received, m, st.i0(k), st.i1(k));
    int32_t buf = rb;
    if (piece.region != tile) {
      buf = add_buffer(st, fmt::format("recv {} piece {}", name, p), extent_shape(piece.region),
                       val.dtype);
    }
    Instruction recv;
    recv.code = Opcode::kRecv;
    recv.phase = phase;
    recv.micro_batch = mb;
    recv.out = {buf};
    recv.peer = src.devices[static_cast<size_t>(piece.src)];
    recv.tag = tag_of(c, mb, p);
    recv.what = fmt::format("recv {} from device {}", name, recv.peer);
    st.code[k].push_back(std::move(recv));
    if (buf != rb) {
      Instruction unpack;
      unpack.code = Opcode::kCopyBox;
      unpack.phase = phase;
      unpack.micro_batch = mb;
      unpack.in = {buf};
      unpack.out = {rb};
      unpack.src_offset.assign(piece.region.size(), 0);
      unpack.dst_offset = relative(piece.region, tile);
      unpack.extent = extent_shape(piece.region).dims();
      unpack.what = fmt::format("unpack {} piece {}", name, p);
      st.code[k].push_back(std::move(unpack));
    }
  }
  st.avail[{c.value.value(), scope}].push_back({c.plan.received, rb});
  if (!(c.plan.received == c.recv_spec)) {
    MP_ASSIGN_OR_RETURN(int32_t fin, fetch(st, c.value, scope, c.recv_spec, phase, mb));
    (void)fin;
  }
  return Status::ok();
}

}  // namespace meshpipe::runtime::internal
