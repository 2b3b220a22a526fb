// The device interpreter's overlap of gradient synchronisation with the backward pass
// (InterpreterOptions::overlap_collectives): grad-sync all-reduces on the memory's side queue (a
// GPU's communication stream) through the side communicators, launched as soon as the last
// instruction touching their buffers has run, and waited for by the first instruction that
// touches a buffer they write.
#include <algorithm>

#include "runtime/internal/interpreter_impl.h"

namespace meshpipe::runtime {

bool DeviceInterpreter::Impl::side_eligible(const Instruction& ins) const {
  if (ins.code != Opcode::kCollective) return false;
  if (ins.phase != Phase::kGradSync && ins.phase != Phase::kBackward) return false;
  const int a = ins.collective.axis;
  if (a < 0 || a > 1 || links == nullptr || links->side[a] == nullptr) return false;
  if (links->side[a]->size() != mesh().size(a)) return false;
  if (ins.in.size() > 1) {  // fused (fuse_all_reduces): packed as f32
    for (int32_t b : ins.in) {
      if (desc(b).dtype != DType::kF32) return false;
    }
    return ins.in.size() == ins.out.size();
  }
  if (ins.collective.kind != mesh::CollectiveKind::kAllReduce || mesh().size(a) <= 1) return false;
  const DType t = desc(ins.in[0]).dtype;
  return ins.in.size() == 1 && ins.out.size() == 1 &&
         (t == DType::kF32 || t == DType::kF16 || t == DType::kBF16);
}

// Walks the step's instructions once, as run_step will, recording for each buffer where it was
// last touched (for a collective launched early, where it is launched). An eligible collective
// at p whose buffers were last touched at q < p - 1 is launched right after q, unless one of
// them was last touched by a receive (launching would wait for that receive early, before sends
// the peer may be waiting for). Side collectives keep their program order (each is launched no
// earlier than the one before it), so every rank of a group launches them in the same order as
// long as the ranks' programs order their collectives alike, as the collectives themselves
// require.
void DeviceInterpreter::Impl::plan_early_launches() {
  early_planned = true;
  std::unordered_map<int32_t, int64_t> last;
  std::unordered_map<int64_t, bool> receive_at;  // positions of kRecv
  int64_t previous = -1;                         // where the previous side collective runs
  int64_t i = 0;
  auto visit = [&](const Instruction& ins) {
    int64_t at = i;
    if (side_eligible(ins)) {
      int64_t q = previous;
      bool after_receive = false;
      for (const auto* ids : {&ins.in, &ins.out}) {
        for (int32_t b : *ids) {
          auto it = last.find(b);
          if (it == last.end()) continue;
          q = std::max(q, it->second);
          after_receive = after_receive || receive_at.count(it->second) != 0;
        }
      }
      if (q >= 0 && q < i - 1 && !after_receive) {
        launch_after[q].push_back(i);
        early.emplace(i, ins);
        at = q;
      }
      previous = at;
    }
    if (ins.code == Opcode::kRecv) receive_at[i] = true;
    for (const auto* ids : {&ins.in, &ins.out}) {
      for (int32_t b : *ids) last[b] = at;
    }
    ++i;
  };
  if (code == nullptr) {
    for (const Instruction& ins : dp->instructions) visit(ins);
    return;
  }
  for (const Segment& seg : code->segments) {
    const std::vector<Instruction>& t = code->templates[static_cast<size_t>(seg.code)];
    if (seg.micro_batch < 0) {
      for (const Instruction& ins : t) visit(ins);
      continue;
    }
    const int32_t base = shared + seg.micro_batch * classes;
    for (Instruction ins : t) {
      bind_micro_batch(ins, seg.micro_batch, [&](int32_t c) { return base + c; });
      visit(ins);
    }
  }
}

Status DeviceInterpreter::Impl::collective_on_side(const Instruction& ins) {
  comm::Communicator* c = links->side[ins.collective.axis];
  auto p = std::make_shared<Pending>();
  p->what = ins.what;
  // Until launched, an early return hands the temporary blocks back.
  struct TempGuard {
    Impl* m;
    Pending* p;
    ~TempGuard() {
      if (p == nullptr) return;
      for (Block& t : p->temps) m->mem->release(t);
      p->temps.clear();
    }
  } guard{this, p.get()};
  float* data = nullptr;  // what the side queue all-reduces
  int64_t count = 0;
  if (ins.in.size() > 1) {  // fused: packed into a block of its own, unpacked when settled
    for (int32_t b : ins.in) count += desc(b).shape.numel();
    MP_ASSIGN_OR_RETURN(Block packed, mem->allocate(std::max<int64_t>(count * 4, 1)));
    p->temps.push_back(packed);
    data = static_cast<float*>(packed.data);
    int64_t at = 0;
    for (int32_t b : ins.in) {
      MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(b));
      MP_RETURN_IF_ERROR(mem->copy(data + at, v.data, v.bytes()));
      at += v.numel();
    }
    for (int32_t b : ins.out) MP_RETURN_IF_ERROR(writable(b).status());
    const std::vector<int32_t> outs = ins.out;
    p->finish = [this, outs, data] {
      int64_t off = 0;
      for (int32_t b : outs) {
        const kernels::TensorView v = view(b);
        MP_RETURN_IF_ERROR(mem->copy(v.data, data + off, v.bytes()));
        off += v.numel();
      }
      return Status::ok();
    };
  } else {
    MP_ASSIGN_OR_RETURN(kernels::TensorView in, readable(ins.in[0]));
    MP_ASSIGN_OR_RETURN(kernels::TensorView out, writable(ins.out[0]));
    count = in.numel();
    if (in.dtype == DType::kF32) {
      MP_RETURN_IF_ERROR(mem->copy(out.data, in.data, in.bytes()));
      data = out.f32();
    } else {  // a half tensor: widened into a block of its own, summed in f32, rounded once
      MP_ASSIGN_OR_RETURN(Block wide32, mem->allocate(std::max<int64_t>(count * 4, 1)));
      p->temps.push_back(wide32);
      data = static_cast<float*>(wide32.data);
      const kernels::TensorView w(data, in.shape, DType::kF32);
      MP_RETURN_IF_ERROR(convert(in, w));
      const int32_t o = ins.out[0];
      p->finish = [this, o, w] { return convert(w, view(o)); };
    }
  }
  p->buffers = ins.out;
  side_used.insert(c);  // from here its work may be queued: the end of the step completes it
  Expected<int64_t> ticket = int64_t{0};
  const Status queued = communicate(mesh::CollectiveKind::kAllReduce, [&] {
    ticket = mem->side([c, data, count] { return c->all_reduce(data, count); });
    return ticket.status();
  });
  MP_RETURN_IF_ERROR(queued);
  guard.p = nullptr;  // launched: settle() releases them
  p->ticket = *ticket;
  for (int32_t b : p->buffers) busy[b] = p;
  launched.push_back(p);
  if (result_now != nullptr) ++result_now->side_collectives;
  return Status::ok();
}

Status DeviceInterpreter::Impl::settle(Pending& p) {
  if (p.settled) return Status::ok();
  p.settled = true;
  for (int32_t b : p.buffers) busy.erase(b);
  const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
  Status s = mem->after_side(p.ticket, options.timeout);
  if (s.is_ok() && p.finish) s = p.finish();
  for (Block& t : p.temps) mem->release(t);
  p.temps.clear();
  if (timed()) charge(internal::kWaitSide, t0);
  if (!s.is_ok()) return s.with_context(fmt::format("overlapped collective '{}'", p.what));
  return Status::ok();
}

Status DeviceInterpreter::Impl::finish_side() {
  Status first = Status::ok();
  for (const auto& p : launched) {
    const Status s = settle(*p);
    if (first.is_ok() && !s.is_ok()) first = s;
  }
  launched.clear();
  for (comm::Communicator* c : side_used) {
    const Status s = c->complete();
    if (first.is_ok() && !s.is_ok()) first = s;
  }
  side_used.clear();
  const Status s = mem->drain_side();
  if (first.is_ok() && !s.is_ok()) first = s;
  return first;
}

void DeviceInterpreter::Impl::abandon_side() {
  if (launched.empty() && busy.empty() && side_used.empty()) return;
  // Bounded first (a deferred NCCL communicator aborts at its timeout), then the queue.
  for (comm::Communicator* c : side_used) static_cast<void>(c->complete());
  static_cast<void>(mem->drain_side());
  for (const auto& p : launched) {
    for (Block& t : p->temps) mem->release(t);
    p->temps.clear();
  }
  launched.clear();
  busy.clear();
  side_used.clear();
}

}  // namespace meshpipe::runtime
