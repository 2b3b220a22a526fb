// Compact programs: templates per task, instantiated per micro-batch (see compact_program.h).
#include "runtime/compact_program.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

#include "core/rng.h"

namespace meshpipe::runtime {

namespace {

constexpr uint64_t kMicroBatchBits = uint64_t{0xFFFF} << 16;  // a tag's micro-batch + 1

// The first " #<mb>" of `s` (not followed by a digit) as " #@".
std::string with_any_micro_batch(const std::string& s, int32_t mb) {
  const std::string token = fmt::format(" #{}", mb);
  for (size_t at = s.find(token); at != std::string::npos; at = s.find(token, at + 1)) {
    const size_t end = at + token.size();
    if (end < s.size() && s[end] >= '0' && s[end] <= '9') continue;
    return s.substr(0, at) + " #@" + s.substr(end);
  }
  return s;
}

bool same_step(const mesh::CollectiveStep& a, const mesh::CollectiveStep& b) {
  return a.kind == b.kind && a.axis == b.axis && a.dim == b.dim && a.split_dim == b.split_dim &&
         a.bytes == b.bytes && a.after == b.after && a.cost.value() == b.cost.value();
}

// Every field but the buffers read and written and the description.
bool same_fields(const Instruction& a, const Instruction& b) {
  return a.code == b.code && a.phase == b.phase && a.micro_batch == b.micro_batch &&
         a.in.size() == b.in.size() && a.out.size() == b.out.size() &&
         same_step(a.collective, b.collective) && a.spec == b.spec && a.shape == b.shape &&
         a.peer == b.peer && a.tag == b.tag && a.input == b.input && a.src_offset == b.src_offset &&
         a.dst_offset == b.dst_offset && a.extent == b.extent && a.factor == b.factor &&
         a.first == b.first;
}

bool same_code(const std::vector<Instruction>& a, const std::vector<Instruction>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!same_fields(a[i], b[i]) || a[i].in != b[i].in || a[i].out != b[i].out ||
        a[i].op != b[i].op) {
      return false;
    }
  }
  return true;
}

bool same_desc(const BufferDesc& a, const BufferDesc& b) {
  return a.shape == b.shape && a.dtype == b.dtype && a.kind == b.kind;
}

bool same_op(const LocalOp& a, const LocalOp& b) {
  return a.op.kind == b.op.kind && a.inputs == b.inputs && a.outputs == b.outputs &&
         a.computed_specs == b.computed_specs && a.workspace_bytes == b.workspace_bytes &&
         a.work.flops.value() == b.work.flops.value() &&
         a.work.bytes.value() == b.work.bytes.value() && a.row_offset == b.row_offset &&
         a.id_offset == b.id_offset && a.output_scale == b.output_scale &&
         a.sync_axes == b.sync_axes && a.sync_count == b.sync_count;
}

constexpr int32_t kFront(int64_t stages) { return static_cast<int32_t>(stages) + 1; }
constexpr int32_t kBack = 2;

// One device's program in compact form; `dp` loses its instructions and its buffers keep the
// shared ones only (renumbered).
Expected<CompactCode> compact_device(DeviceProgram& dp) {
  CompactCode cc;
  std::vector<Instruction>& code = dp.instructions;
  // Segments: maximal runs of one micro-batch (and, for tasks, one phase).
  struct Run {
    size_t begin = 0, end = 0;
    int32_t mb = -1;
    Phase phase = Phase::kPrologue;
  };
  std::vector<Run> runs;
  for (size_t i = 0; i < code.size(); ++i) {
    const Instruction& ins = code[i];
    const bool same = !runs.empty() && runs.back().mb == ins.micro_batch &&
                      (ins.micro_batch < 0 || runs.back().phase == ins.phase);
    if (same) {
      runs.back().end = i + 1;
    } else {
      runs.push_back({i, i + 1, ins.micro_batch, ins.phase});
    }
  }
  std::set<std::pair<int32_t, Phase>> seen;
  for (const Run& r : runs) {
    if (r.mb >= 0 && !seen.insert({r.mb, r.phase}).second) {
      return make_error(Errc::kInvalidArgument,
                        "device {}: the {} task of micro-batch {} is not one run of instructions",
                        dp.device, phase_name(r.phase), r.mb);
    }
  }
  // A buffer touched by one micro-batch's tasks only is that micro-batch's (-2: untouched).
  std::vector<int32_t> owner(dp.buffers.size(), -2);
  for (const Run& r : runs) {
    for (size_t i = r.begin; i < r.end; ++i) {
      for (const auto* ids : {&code[i].in, &code[i].out}) {
        for (int32_t b : *ids) {
          int32_t& o = owner[static_cast<size_t>(b)];
          if (o == -2) {
            o = r.mb;
          } else if (o != r.mb) {
            o = -1;
          }
        }
      }
    }
  }
  std::vector<int32_t> shared_id(dp.buffers.size(), -1);
  std::vector<BufferDesc> shared;
  for (size_t b = 0; b < dp.buffers.size(); ++b) {
    if (owner[b] < 0 || dp.buffers[b].kind == BufferKind::kPersistent) {
      owner[b] = -1;
      shared_id[b] = static_cast<int32_t>(shared.size());
      shared.push_back(dp.buffers[b]);
    }
  }
  // Classes: (phase, position among the task's new buffers, name, shape, dtype).
  std::map<std::tuple<Phase, int32_t, std::string, std::vector<int64_t>, DType>, int32_t> classes;
  std::vector<int32_t> class_of(dp.buffers.size(), -1);
  std::unordered_map<uint64_t, std::vector<int32_t>> by_hash;  // template dedup
  for (const Run& r : runs) {
    std::vector<Instruction> t(std::make_move_iterator(code.begin() + r.begin),
                               std::make_move_iterator(code.begin() + r.end));
    int32_t fresh = 0;
    const auto rename = [&](int32_t b) -> int32_t {
      const size_t u = static_cast<size_t>(b);
      if (owner[u] < 0) return shared_id[u];
      if (class_of[u] < 0) {
        const BufferDesc& d = dp.buffers[u];
        const auto key = std::make_tuple(r.phase, fresh++, with_any_micro_batch(d.name, r.mb),
                                         d.shape.dims(), d.dtype);
        auto [it, added] = classes.emplace(key, static_cast<int32_t>(cc.classes.size()));
        if (added) cc.classes.push_back({std::get<2>(key), d.shape, d.dtype, d.kind});
        class_of[u] = it->second;
      }
      return -(class_of[u] + 1);
    };
    for (Instruction& ins : t) {
      for (int32_t& b : ins.in) b = rename(b);
      for (int32_t& b : ins.out) b = rename(b);
      if (r.mb < 0) continue;
      if ((ins.code == Opcode::kSend || ins.code == Opcode::kRecv) &&
          ((ins.tag & kMicroBatchBits) >> 16) != static_cast<uint64_t>(r.mb) + 1) {
        return make_error(Errc::kInternal, "device {}: tag {:#x} of '{}' is not micro-batch {}'s",
                          dp.device, ins.tag, ins.what, r.mb);
      }
      ins.tag &= ~kMicroBatchBits;
      ins.micro_batch = 0;
      ins.what = with_any_micro_batch(ins.what, r.mb);
    }
    uint64_t h = static_cast<uint64_t>(t.size()) * 1000003u + static_cast<uint64_t>(r.phase);
    for (const Instruction& ins : t) {
      h = h * 31 + static_cast<uint64_t>(ins.code) * 7 + static_cast<uint64_t>(ins.op + 1);
      for (int32_t b : ins.in) h = h * 131 + static_cast<uint64_t>(static_cast<int64_t>(b));
      for (int32_t b : ins.out) h = h * 137 + static_cast<uint64_t>(static_cast<int64_t>(b));
    }
    int32_t id = -1;
    if (r.mb >= 0) {
      for (int32_t c : by_hash[h]) {
        if (same_code(cc.templates[static_cast<size_t>(c)], t)) id = c;
      }
    }
    if (id < 0) {
      id = static_cast<int32_t>(cc.templates.size());
      cc.templates.push_back(std::move(t));
      if (r.mb >= 0) by_hash[h].push_back(id);
    }
    cc.segments.push_back({id, r.mb});
  }
  for (PersistentTile& p : dp.persistent) p.buffer = shared_id[static_cast<size_t>(p.buffer)];
  dp.buffers = std::move(shared);
  dp.instructions.clear();
  dp.instructions.shrink_to_fit();
  return cc;
}

}  // namespace

std::string micro_batch_text(const std::string& text, int32_t micro_batch) {
  const size_t at = text.find("#@");
  if (micro_batch < 0 || at == std::string::npos) return text;
  return text.substr(0, at) + fmt::format("#{}", micro_batch) + text.substr(at + 2);
}

int64_t CompactCode::instructions() const {
  int64_t n = 0;
  for (const Segment& s : segments) {
    n += static_cast<int64_t>(templates[static_cast<size_t>(s.code)].size());
  }
  return n;
}

int64_t CompactProgram::instructions() const {
  int64_t n = 0;
  for (const CompactCode& c : code) n += c.instructions();
  return n;
}

int64_t compact_lowering_count(int64_t stages) { return kFront(stages) + kBack + 1; }

Expected<CompactProgram> compact(Program program) {
  CompactProgram cp;
  cp.code.resize(program.devices.size());
  for (size_t d = 0; d < program.devices.size(); ++d) {
    if (program.devices[d].device < 0) continue;
    MP_ASSIGN_OR_RETURN(cp.code[d], compact_device(program.devices[d]));
  }
  cp.base = std::move(program);
  return cp;
}

Expected<CompactProgram> with_micro_batches(const CompactProgram& program, int64_t micro_batches) {
  const int64_t m0 = program.base.micro_batches;
  const int64_t stages = static_cast<int64_t>(program.base.stages.size());
  if (micro_batches == m0) return program;
  if (micro_batches < m0 || m0 < compact_lowering_count(stages) || micro_batches >= (1 << 16) - 1) {
    return make_error(Errc::kInvalidArgument,
                      "a program lowered at {} micro-batches ({} stages) cannot be extended to {}",
                      m0, stages, micro_batches);
  }
  const int32_t front = kFront(stages);
  const int64_t shift = micro_batches - m0;
  const auto counterpart = [&](int32_t m) -> int32_t {
    if (m < front) return m;
    if (m >= micro_batches - kBack) return static_cast<int32_t>(m - shift);
    return front;
  };
  CompactProgram out;
  out.base = program.base;
  out.base.micro_batches = micro_batches;
  out.code.resize(program.code.size());
  for (size_t d = 0; d < program.code.size(); ++d) {
    const CompactCode& in = program.code[d];
    const DeviceProgram& dp = program.base.devices[d];
    if (dp.device < 0) continue;
    CompactCode& cc = out.code[d];
    cc.classes = in.classes;
    cc.templates = in.templates;
    // The averages of accumulated gradients divide by the micro-batch count.
    for (const Segment& s : in.segments) {
      if (s.micro_batch >= 0) continue;
      for (Instruction& ins : cc.templates[static_cast<size_t>(s.code)]) {
        if (ins.code == Opcode::kScale && ins.factor == 1.0f / static_cast<float>(m0)) {
          ins.factor = 1.0f / static_cast<float>(micro_batches);
        }
      }
    }
    // prologue, tasks in schedule order, then the rest; nothing once per step between tasks.
    std::map<std::pair<Phase, int32_t>, int32_t> task;
    std::vector<std::pair<Phase, int32_t>> order;
    size_t first = in.segments.size(), last = 0;
    for (size_t i = 0; i < in.segments.size(); ++i) {
      const Segment& s = in.segments[i];
      if (s.micro_batch < 0) continue;
      first = std::min(first, i);
      last = i;
      const Phase phase = in.templates[static_cast<size_t>(s.code)].front().phase;
      task[{phase, s.micro_batch}] = s.code;
      order.emplace_back(phase, s.micro_batch);
    }
    for (size_t i = first; i < last; ++i) {
      if (in.segments[i].micro_batch < 0) {
        return make_error(Errc::kInvalidArgument,
                          "device {}: instructions once per step between micro-batch tasks",
                          dp.device);
      }
    }
    std::vector<std::pair<Phase, int32_t>> expected;
    for (const auto& t : stage_schedule(program.base.schedule, dp.stage,
                                        static_cast<int32_t>(stages), static_cast<int32_t>(m0))) {
      if (task.count(t) != 0) expected.push_back(t);
    }
    if (expected != order) {
      return make_error(Errc::kInvalidArgument, "device {}: tasks not in the schedule's order",
                        dp.device);
    }
    const bool has_tasks = first < in.segments.size();
    for (size_t i = 0; i < (has_tasks ? first : in.segments.size()); ++i) {
      cc.segments.push_back(in.segments[i]);
    }
    for (const auto& [phase, m] :
         stage_schedule(program.base.schedule, dp.stage, static_cast<int32_t>(stages),
                        static_cast<int32_t>(micro_batches))) {
      auto it = task.find({phase, counterpart(m)});
      if (it != task.end()) cc.segments.push_back({it->second, m});
    }
    for (size_t i = last + 1; has_tasks && i < in.segments.size(); ++i) {
      cc.segments.push_back(in.segments[i]);
    }
  }
  return out;
}

DeviceProgram expand_device(const CompactProgram& program, size_t device) {
  DeviceProgram out = program.base.devices[device];
  if (out.device < 0) return out;
  const CompactCode& cc = program.code[device];
  std::unordered_map<int64_t, int32_t> instance;  // class * 65536 + micro-batch -> buffer
  for (const Segment& s : cc.segments) {
    for (const Instruction& t : cc.templates[static_cast<size_t>(s.code)]) {
      Instruction ins = t;
      if (s.micro_batch >= 0) {
        bind_micro_batch(ins, s.micro_batch, [&](int32_t c) {
          auto [it, fresh] = instance.emplace(int64_t{c} * 65536 + s.micro_batch, 0);
          if (fresh) {
            BufferDesc desc = cc.classes[static_cast<size_t>(c)];
            desc.name = micro_batch_text(desc.name, s.micro_batch);
            it->second = static_cast<int32_t>(out.buffers.size());
            out.buffers.push_back(std::move(desc));
          }
          return it->second;
        });
      }
      out.instructions.push_back(std::move(ins));
    }
  }
  return out;
}

uint64_t compact_fingerprint(const CompactProgram& program) {
  uint64_t h = program_fingerprint(program.base);
  const auto add = [&](int64_t v) { h = fnv1a_u64(h, static_cast<uint64_t>(v)); };
  add(static_cast<int64_t>(program.code.size()));
  for (const CompactCode& cc : program.code) {
    add(static_cast<int64_t>(cc.classes.size()));
    for (const BufferDesc& b : cc.classes) {
      add(static_cast<int64_t>(b.shape.dims().size()));
      for (int64_t d : b.shape.dims()) add(d);
      add(static_cast<int64_t>(b.dtype));
      add(static_cast<int64_t>(b.kind));
    }
    add(static_cast<int64_t>(cc.templates.size()));
    for (const std::vector<Instruction>& t : cc.templates) h = instructions_fingerprint(t, h);
    add(static_cast<int64_t>(cc.segments.size()));
    for (const Segment& seg : cc.segments) {
      add(seg.code);
      add(seg.micro_batch);
    }
  }
  return h;
}

Program expand(const CompactProgram& program) {
  Program p = program.base;
  for (size_t d = 0; d < p.devices.size(); ++d) p.devices[d] = expand_device(program, d);
  return p;
}

Status same_device_program(const DeviceProgram& a, const DeviceProgram& b) {
  if (a.device != b.device || a.stage != b.stage || a.coord[0] != b.coord[0] ||
      a.coord[1] != b.coord[1]) {
    return make_error(Errc::kInternal, "device {} vs {}: different places", a.device, b.device);
  }
  if (a.instructions.size() != b.instructions.size()) {
    return make_error(Errc::kInternal, "device {}: {} instructions vs {}", a.device,
                      a.instructions.size(), b.instructions.size());
  }
  std::vector<int32_t> a2b(a.buffers.size(), -1), b2a(b.buffers.size(), -1);
  const auto match = [&](int32_t x, int32_t y) {
    if (x < 0 || y < 0 || static_cast<size_t>(x) >= a.buffers.size() ||
        static_cast<size_t>(y) >= b.buffers.size()) {
      return false;
    }
    int32_t& f = a2b[static_cast<size_t>(x)];
    int32_t& r = b2a[static_cast<size_t>(y)];
    if (f < 0 && r < 0) {
      if (!same_desc(a.buffers[static_cast<size_t>(x)], b.buffers[static_cast<size_t>(y)])) {
        return false;
      }
      f = y;
      r = x;
    }
    return f == y && r == x;
  };
  if (a.persistent.size() != b.persistent.size()) {
    return make_error(Errc::kInternal, "device {}: different persistent tiles", a.device);
  }
  for (size_t i = 0; i < a.persistent.size(); ++i) {
    const PersistentTile& p = a.persistent[i];
    const PersistentTile& q = b.persistent[i];
    if (p.value != q.value || p.region != q.region || !match(p.buffer, q.buffer)) {
      return make_error(Errc::kInternal, "device {}: persistent tile {} differs", a.device, i);
    }
  }
  for (size_t i = 0; i < a.instructions.size(); ++i) {
    const Instruction& x = a.instructions[i];
    const Instruction& y = b.instructions[i];
    bool ok = same_fields(x, y);
    for (size_t k = 0; ok && k < x.in.size(); ++k) ok = match(x.in[k], y.in[k]);
    for (size_t k = 0; ok && k < x.out.size(); ++k) ok = match(x.out[k], y.out[k]);
    if (ok && x.code == Opcode::kRun) {
      ok = x.op >= 0 && y.op >= 0 && static_cast<size_t>(x.op) < a.ops.size() &&
           static_cast<size_t>(y.op) < b.ops.size() &&
           same_op(a.ops[static_cast<size_t>(x.op)], b.ops[static_cast<size_t>(y.op)]);
    }
    if (!ok) {
      return make_error(Errc::kInternal, "device {}: instruction {} differs ('{}' vs '{}')",
                        a.device, i, x.what, y.what);
    }
  }
  return Status::ok();
}

int64_t lowering_bytes_estimate(const planner::Plan& plan) {
  const int64_t k = compact_lowering_count(static_cast<int64_t>(plan.stages.size()));
  const int64_t lowered = plan.micro_batches <= k + 1 ? plan.micro_batches : k + 1;
  int64_t device_ops = 0;
  for (const planner::StagePlan& s : plan.stages) {
    device_ops +=
        static_cast<int64_t>(s.devices.size()) * static_cast<int64_t>(s.op_layouts.size());
  }
  return device_ops * std::max<int64_t>(lowered, 1) * 4096;
}

int64_t lowering_bytes_limit() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(pages) / 4 * 3 * static_cast<int64_t>(page);
}

Expected<CompactProgram> lower_compact(const planner::Plan& plan, const graph::Graph& g,
                                       const LowerOptions& options) {
  const int64_t m = plan.micro_batches;
  const int64_t k = compact_lowering_count(static_cast<int64_t>(plan.stages.size()));
  if (const int64_t need = lowering_bytes_estimate(plan), limit = lowering_bytes_limit();
      need > limit) {
    return make_error(Errc::kOutOfRange,
                      "lowering this plan ({} stages, {} devices) would hold about {:.1f} GiB of "
                      "program, more than this machine allows ({:.1f} GiB, 3/4 of its RAM)",
                      plan.stages.size(), plan.cluster.num_devices(),
                      static_cast<double>(need) / (1 << 30),
                      static_cast<double>(limit) / (1 << 30));
  }
  if (m <= k + 1) {
    MP_ASSIGN_OR_RETURN(Program p, lower(plan, g, options));
    return compact(std::move(p));
  }
  planner::Plan at = plan;
  at.micro_batches = k;
  at.global_batch = k * plan.micro_batch;
  // The check's lowering (one micro-batch more) comes after the first is compacted, so one flat
  // program is held at a time. (Both at once on two threads was no faster here and held 1.6x the
  // memory: GPT-39B's 64 devices, 1.2 GiB against 0.75 GiB; a 10-stage GPT on 256 H100s, 11.5 GiB
  // against 7.6 GiB.)
  planner::Plan at_next = plan;
  at_next.micro_batches = k + 1;
  at_next.global_batch = (k + 1) * plan.micro_batch;
  MP_ASSIGN_OR_RETURN(Program small, lower(at, g, options));
  MP_ASSIGN_OR_RETURN(CompactProgram cp, compact(std::move(small)));
  {
    // The templates extended by one micro-batch must give what lower() gives there.
    MP_ASSIGN_OR_RETURN(Program check, lower(at_next, g, options));
    MP_ASSIGN_OR_RETURN(CompactProgram next, with_micro_batches(cp, k + 1));
    if (check.loss_device != next.base.loss_device) {
      return make_error(Errc::kInternal, "compact lowering: the loss moved to another device");
    }
    for (size_t d = 0; d < check.devices.size(); ++d) {
      if (check.devices[d].device < 0) continue;
      MP_RETURN_IF_ERROR(same_device_program(expand_device(next, d), check.devices[d])
                             .with_context(fmt::format("compact lowering at {} micro-batches "
                                                       "against lower()",
                                                       k + 1)));
    }
  }
  return with_micro_batches(cp, m);
}

Status check_compact_code(const CompactCode& code, const DeviceProgram& dp, int64_t micro_batches) {
  const auto shared = static_cast<int64_t>(dp.buffers.size());
  const auto classes = static_cast<int64_t>(code.classes.size());
  std::vector<uint8_t> use(code.templates.size(), 0);  // bit 0: once per step, bit 1: per mb
  for (size_t k = 0; k < code.segments.size(); ++k) {
    const Segment& s = code.segments[k];
    if (s.code < 0 || static_cast<size_t>(s.code) >= code.templates.size() || s.micro_batch < -1 ||
        s.micro_batch >= micro_batches) {
      return make_error(Errc::kInvalidArgument,
                        "device {}: segment {} names template {} of {} and micro-batch {} of {}",
                        dp.device, k, s.code, code.templates.size(), s.micro_batch, micro_batches);
    }
    use[static_cast<size_t>(s.code)] |= s.micro_batch < 0 ? 1 : 2;
  }
  for (size_t t = 0; t < code.templates.size(); ++t) {
    const int64_t low = (use[t] & 1) != 0 ? 0 : -classes;  // class c is -(c + 1)
    for (const Instruction& ins : code.templates[t]) {
      for (const std::vector<int32_t>* ids : {&ins.in, &ins.out}) {
        for (int32_t b : *ids) {
          if (b < low || b >= shared) {
            return make_error(Errc::kInvalidArgument,
                              "device {}: template {} ('{}') names buffer {}, outside the {} "
                              "buffers and {} micro-batch classes it may use",
                              dp.device, t, ins.what, b, shared, (use[t] & 1) != 0 ? 0 : classes);
          }
        }
      }
    }
  }
  return Status::ok();
}

}  // namespace meshpipe::runtime
