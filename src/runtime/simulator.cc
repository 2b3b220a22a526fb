// simulate(): the device programs against a cost-model clock (see simulator.h).
#include "runtime/simulator.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include "mesh/resharding.h"
#include "planner/cost_model.h"
#include "runtime/compact_program.h"
#include "runtime/cost_models.h"

namespace meshpipe::runtime {

namespace {

using MessageKey = std::tuple<int32_t, int32_t, uint64_t>;    // (from, to, tag)
using GroupKey = std::tuple<int32_t, int, int64_t, int64_t>;  // (stage, axis, other coord, seq)

struct Meeting {
  int arrived = 0;
  int left = 0;  // members that have not yet passed the collective
  double latest = 0.0;
};

// One device's instructions: runs of a flat program's instructions or of a compact program's
// templates, each for a micro-batch (-1: as written; see compact_program.h).
struct Run {
  const std::vector<Instruction>* code = nullptr;
  int32_t micro_batch = -1;
};

// One device's live buffers: a buffer (for class buffers of a compact program, each
// micro-batch's instance) counts from its first write to its kFree, at the allocator's size;
// persistent ones from the start. Shared by simulate() and peak_memory().
class LiveBuffers {
 public:
  LiveBuffers(const DeviceProgram& dp, const std::vector<BufferDesc>* classes,
              int64_t micro_batches, const planner::CostModel& sizes)
      : dp_(&dp),
        classes_(classes),
        micro_batches_(std::max<int64_t>(1, micro_batches)),
        sizes_(&sizes) {
    const size_t n = classes != nullptr ? classes->size() : 0;
    allocated_.assign(dp.buffers.size() + n * static_cast<size_t>(micro_batches_), false);
    for (size_t b = 0; b < dp.buffers.size(); ++b) {
      if (dp.buffers[b].kind == BufferKind::kPersistent) allocate(static_cast<int32_t>(b), -1);
    }
  }

  // Buffer b of a run of micro-batch mb: its index among the device's buffers.
  int64_t slot(int32_t b, int32_t mb) const {
    if (b >= 0) return b;
    return static_cast<int64_t>(dp_->buffers.size()) +
           (-(static_cast<int64_t>(b) + 1)) * micro_batches_ + mb;
  }

  const BufferDesc& desc(int32_t b) const {
    return b >= 0 ? dp_->buffers[static_cast<size_t>(b)]
                  : (*classes_)[static_cast<size_t>(-(static_cast<int64_t>(b) + 1))];
  }

  // True when the buffer was not live.
  bool allocate(int32_t b, int32_t mb) {
    auto ref = allocated_[static_cast<size_t>(slot(b, mb))];
    if (ref) return false;
    ref = true;
    live_ += sizes_->allocation_bytes(desc(b).bytes());
    peak_ = std::max(peak_, live_);
    return true;
  }

  // True when the buffer was live.
  bool release(int32_t b, int32_t mb) {
    auto ref = allocated_[static_cast<size_t>(slot(b, mb))];
    if (!ref) return false;
    ref = false;
    live_ -= sizes_->allocation_bytes(desc(b).bytes());
    return true;
  }

  // A kernel's scratch of `bytes` next to what is live while it runs.
  void with_scratch(int64_t bytes) {
    if (bytes > 0) peak_ = std::max(peak_, live_ + sizes_->allocation_bytes(bytes));
  }

  int64_t live() const { return live_; }
  int64_t peak() const { return peak_; }

 private:
  const DeviceProgram* dp_;
  const std::vector<BufferDesc>* classes_;
  int64_t micro_batches_;
  const planner::CostModel* sizes_;
  std::vector<bool> allocated_;
  int64_t live_ = 0;
  int64_t peak_ = 0;
};

struct Device {
  const DeviceProgram* dp = nullptr;
  std::vector<Run> runs;
  size_t run = 0;
  size_t pc = 0;
  double clock = 0.0;
  std::optional<LiveBuffers> memory;
  std::vector<double> op_time;                                   // per op, priced once
  std::map<int64_t, std::pair<int32_t, uint64_t>> pending_recv;  // buffer slot -> (from, tag)
  int64_t collectives[2] = {0, 0};
  bool registered = false;  // at the collective under pc
  SimulatedDevice out;
  // Compute spans (ops and tile copies) in order, for the next pass's sharing factors (when
  // recorded), and how many there were.
  std::vector<std::pair<double, double>> spans;
  size_t computed = 0;
};

// Per device, a factor for each compute span in program order (see Simulation::sharing).
using SharingFactors = std::vector<std::vector<double>>;

std::string json_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) r += c;
  }
  return r;
}

class Simulation {
 public:
  Simulation(const Program& p, const CompactProgram* compact, const mesh::ClusterSpec& c,
             const SimulationOptions& o, const SharingFactors* factors = nullptr)
      : program_(p),
        compact_(compact),
        cluster_(c),
        default_cost_(cost_model_for(c)),
        cost_(o.cost != nullptr ? *o.cost : *default_cost_),
        options_(o),
        factors_(factors) {}

  // Whether compute speeds up when fewer devices compute (CPU devices sharing cores).
  bool shares_cores() const { return cost_.sharing(1.0) < 1.0; }
  // Keep every compute span for sharing() (off by default: a span per op and micro-batch on
  // every device is gigabytes for large clusters).
  void record_spans() { record_spans_ = true; }

  // After run(): for each device's compute spans, the model's sharing factor at the mean number
  // of devices computing during the span (itself included) in this pass's timeline.
  SharingFactors sharing() const {
    SharingFactors f(devices_.size());
    for (size_t a = 0; a < devices_.size(); ++a) {
      for (const auto& [start, end] : devices_[a].spans) {
        double busy = 1.0;
        for (size_t b = 0; b < devices_.size(); ++b) {
          if (b != a) busy += overlap(devices_[b].spans, start, end);
        }
        f[a].push_back(cost_.sharing(busy));
      }
    }
    return f;
  }

  Expected<SimulationResult> run() {
    for (const DeviceProgram& dp : program_.devices) {
      if (dp.device < 0) continue;
      Device d;
      d.dp = &dp;
      d.out.device = dp.device;
      d.out.stage = dp.stage;
      const std::vector<BufferDesc>* classes = nullptr;
      if (compact_ == nullptr) {
        d.runs.push_back({&dp.instructions, -1});
      } else {
        const CompactCode& cc = compact_->code[static_cast<size_t>(&dp - program_.devices.data())];
        classes = &cc.classes;
        for (const Segment& s : cc.segments) {
          d.runs.push_back({&cc.templates[static_cast<size_t>(s.code)], s.micro_batch});
        }
      }
      d.op_time.assign(dp.ops.size(), -1.0);
      d.memory.emplace(dp, classes, program_.micro_batches, *default_cost_);
      d.out.peak_bytes = d.memory->peak();
      memory_changed(d);
      devices_.push_back(std::move(d));
    }
    nic_free_.assign(program_.devices.size(), 0.0);
    bool all_done = false;
    while (!all_done) {
      bool progress = false;
      all_done = true;
      for (Device& d : devices_) {
        MP_ASSIGN_OR_RETURN(bool moved, advance(d));
        progress = progress || moved;
        all_done = all_done && d.run == d.runs.size();
      }
      if (!all_done && !progress) return deadlock();
    }
    SimulationResult r;
    for (const Device& d : devices_) r.step_time = std::max(r.step_time, d.clock);
    for (Device& d : devices_) {
      d.out.end = d.clock;
      if (r.step_time > 0) {
        // (Clamped: busy time can exceed the step by a rounding error.)
        r.bubble_fraction += std::max(0.0, 1.0 - (d.out.compute + d.out.collective) / r.step_time);
      }
      r.devices.push_back(std::move(d.out));
    }
    if (!r.devices.empty()) r.bubble_fraction /= static_cast<double>(r.devices.size());
    if (options_.trace) r.trace_json = "{\"traceEvents\": [\n" + trace_ + "\n]}\n";
    return r;
  }

 private:
  void allocate(Device& d, int32_t b, int32_t mb) {
    if (!d.memory->allocate(b, mb)) return;
    d.out.peak_bytes = d.memory->peak();
    memory_changed(d);
  }

  void release(Device& d, int32_t b, int32_t mb) {
    if (d.memory->release(b, mb)) memory_changed(d);
  }

  // Memory over time: kept per device when asked, and a counter track in the trace.
  void memory_changed(Device& d) {
    if (options_.memory_timeline) d.out.memory.emplace_back(d.clock, d.memory->live());
    if (!options_.trace) return;
    if (!trace_.empty()) trace_ += ",\n";
    trace_ += fmt::format(
        "{{\"name\": \"memory device {}\", \"ph\": \"C\", \"ts\": {:.3f}, \"pid\": {}, "
        "\"args\": {{\"MiB\": {:.3f}}}}}",
        d.dp->device, d.clock * 1e6, d.dp->stage,
        static_cast<double>(d.memory->live()) / 1048576.0);
  }

  // The share of [start, end] that `spans` (ascending, disjoint) cover; at a point, 1 if a span
  // holds it.
  static double overlap(const std::vector<std::pair<double, double>>& spans, double start,
                        double end) {
    auto it =
        std::upper_bound(spans.begin(), spans.end(), start,
                         [](double t, const std::pair<double, double>& s) { return t < s.second; });
    if (end <= start) return it != spans.end() && it->first <= start ? 1.0 : 0.0;
    double covered = 0.0;
    for (; it != spans.end() && it->first < end; ++it) {
      covered += std::min(end, it->second) - std::max(start, it->first);
    }
    return std::clamp(covered / (end - start), 0.0, 1.0);
  }

  // A compute span of d: scaled by this pass's factor for it, and recorded.
  double computed(Device& d, double dur) {
    if (factors_ != nullptr) {
      const auto& f = (*factors_)[static_cast<size_t>(&d - devices_.data())];
      const size_t k = d.computed++;
      if (k < f.size()) dur *= f[k];
    }
    if (record_spans_) d.spans.emplace_back(d.clock, d.clock + dur);
    d.out.compute += dur;
    return dur;
  }

  double copy_time(int64_t bytes) const {
    if (cluster_.profile != nullptr) {  // a measured memory-bound kernel, read and write
      return cost_.compute({Flops(0.0), Bytes(2 * bytes), DType::kF32, false, {}, {}}).value();
    }
    const double bw = cluster_.device.memory_bandwidth;
    return bw > 0 ? 2.0 * static_cast<double>(bytes) / bw : 0.0;
  }

  const mesh::LinkSpec& link(int32_t a, int32_t b) const {
    const int32_t per = cluster_.devices_per_host;
    return a / per == b / per ? cluster_.intra_host : cluster_.inter_host;
  }

  void event(const Device& d, const Instruction& ins, int32_t mb, double start, double dur) {
    if (!options_.trace || dur <= 0.0) return;
    if (!trace_.empty()) trace_ += ",\n";
    trace_ += fmt::format(
        "{{\"name\": \"{}\", \"cat\": \"{}\", \"ph\": \"X\", \"ts\": {:.3f}, \"dur\": {:.3f}, "
        "\"pid\": {}, \"tid\": {}, \"args\": {{\"phase\": \"{}\", \"micro_batch\": {}}}}}",
        json_escape(micro_batch_text(ins.what, mb)), opcode_name(ins.code), start * 1e6, dur * 1e6,
        d.dp->stage, d.dp->device, phase_name(ins.phase), mb >= 0 ? mb : ins.micro_batch);
  }

  // Runs d's instructions until one blocks; true when something moved.
  Expected<bool> advance(Device& d) {
    bool moved = false;
    while (d.run < d.runs.size()) {
      const Run& run = d.runs[d.run];
      if (d.pc == run.code->size()) {
        ++d.run;
        d.pc = 0;
        continue;
      }
      const Instruction& ins = (*run.code)[d.pc];
      const int32_t mb = run.micro_batch;
      // A read of a received buffer waits for the message to arrive (an add into a buffer
      // reads it too); false: not sent yet.
      const auto arrived = [&](int32_t b) {
        if (d.pending_recv.empty()) return true;
        auto it = d.pending_recv.find(d.memory->slot(b, mb));
        if (it == d.pending_recv.end()) return true;
        auto msg = messages_.find({it->second.first, d.dp->device, it->second.second});
        if (msg == messages_.end()) return false;
        if (msg->second > d.clock) {
          d.out.waiting += msg->second - d.clock;
          d.clock = msg->second;
        }
        messages_.erase(msg);
        d.pending_recv.erase(it);
        return true;
      };
      if (!std::all_of(ins.in.begin(), ins.in.end(), arrived)) return moved;
      if (ins.code == Opcode::kAccumulate && !ins.first && !arrived(ins.out[0])) return moved;
      const double start = d.clock;
      double dur = 0.0;
      const int64_t out_bytes = ins.out.empty() ? 0 : d.memory->desc(ins.out[0]).bytes();
      const uint64_t tag =
          mb >= 0 ? ins.tag | (static_cast<uint64_t>(mb + 1) << 16) : ins.tag;  // see compact
      switch (ins.code) {
        case Opcode::kRun: {
          const size_t op = static_cast<size_t>(ins.op);
          double& priced = d.op_time[op];
          if (priced < 0.0) {
            const shard::OpWork& work = d.dp->ops[op].work;
            // A piece that carries no work of its own (the later pieces of a split op) is free.
            const bool idle = work.flops.value() == 0.0 && work.bytes.value() == 0;
            priced = idle ? 0.0 : cost_.compute(work).value();
          }
          dur = computed(d, priced);
          // The kernel's scratch (im2col columns, packed operands) lives while it runs, with
          // its outputs.
          for (int32_t b : ins.out) allocate(d, b, mb);
          d.memory->with_scratch(d.dp->ops[op].workspace_bytes);
          d.out.peak_bytes = d.memory->peak();
          break;
        }
        case Opcode::kCollective: {
          const int a = ins.collective.axis;
          const auto& mesh = program_.stages[static_cast<size_t>(d.dp->stage)].mesh;
          const int n = static_cast<int>(mesh.size(a));
          if (n == 1 || ins.collective.kind == mesh::CollectiveKind::kSlice) {
            dur = computed(d, copy_time(out_bytes));
            break;
          }
          const GroupKey key{d.dp->stage, a, d.dp->coord[1 - a], d.collectives[a]};
          Meeting& m = meetings_[key];
          if (!d.registered) {
            d.registered = true;
            moved = true;
            if (m.arrived == 0) m.left = n;
            ++m.arrived;
            m.latest = std::max(m.latest, d.clock);
          }
          if (m.arrived < n) return moved;
          d.out.waiting += m.latest - d.clock;
          d.clock = m.latest;
          // Priced at lowering by the analytic model; a measured profile prices it again (a
          // fused collective as one call of its summed bytes).
          dur = cluster_.profile != nullptr
                    ? cost_.collective(ins.collective.kind, ins.collective.bytes, mesh, a).value()
                    : ins.collective.cost.value();
          d.out.collective += dur;
          d.registered = false;
          ++d.collectives[a];
          if (--m.left == 0) meetings_.erase(key);
          break;
        }
        case Opcode::kSend: {
          const int64_t bytes = options_.signal_transfers ? 1 : d.memory->desc(ins.in[0]).bytes();
          const mesh::LinkSpec& l = link(d.dp->device, ins.peer);
          const bool inter =
              d.dp->device / cluster_.devices_per_host != ins.peer / cluster_.devices_per_host;
          // The message's time as the cost model prices it; its part beyond the link latency
          // occupies the sender's link (later sends queue behind it).
          const double total = cost_.transfer(bytes, l, inter).value();
          const double wire = std::max(0.0, total - l.latency.value());
          double& nic = nic_free_[static_cast<size_t>(d.dp->device)];
          const double leave = std::max(d.clock, nic);
          nic = leave + wire;
          messages_[{d.dp->device, ins.peer, tag}] = leave + total;
          break;
        }
        case Opcode::kRecv:
          d.pending_recv[d.memory->slot(ins.out[0], mb)] = {ins.peer, tag};
          break;
        case Opcode::kCopyBox:
        case Opcode::kLoadInput:
        case Opcode::kAccumulate:
        case Opcode::kScale:
          dur =
              computed(d, copy_time(ins.code == Opcode::kCopyBox ? d.memory->desc(ins.in[0]).bytes()
                                                                 : out_bytes));
          break;
        case Opcode::kReportLoss:
          break;
        case Opcode::kFree:
          release(d, ins.in[0], mb);
          break;
      }
      for (int32_t b : ins.out) allocate(d, b, mb);
      event(d, ins, mb, start, dur);
      d.clock += dur;
      ++d.pc;
      moved = true;
    }
    return moved;
  }

  Status deadlock() const {
    std::string where;
    for (const Device& d : devices_) {
      if (d.run >= d.runs.size()) continue;
      const Run& run = d.runs[d.run];
      const Instruction& ins = (*run.code)[d.pc];
      int64_t at = static_cast<int64_t>(d.pc);
      for (size_t r = 0; r < d.run; ++r) at += static_cast<int64_t>(d.runs[r].code->size());
      where += fmt::format("; device {} at instruction {} ({} '{}')", d.dp->device, at,
                           opcode_name(ins.code), micro_batch_text(ins.what, run.micro_batch));
    }
    return make_error(Errc::kInternal, "the program deadlocks{}", where);
  }

  const Program& program_;
  const CompactProgram* compact_;  // null: program_'s instructions as they are
  const mesh::ClusterSpec& cluster_;
  // The cluster's model: buffer sizes always (the device's allocator), times unless the options
  // give a model.
  std::unique_ptr<planner::CostModel> default_cost_;
  const planner::CostModel& cost_;
  SimulationOptions options_;
  const SharingFactors* factors_;  // null: compute as priced (every device computing)
  bool record_spans_ = false;
  std::vector<Device> devices_;
  std::map<MessageKey, double> messages_;  // arrival times of sent messages
  std::map<GroupKey, Meeting> meetings_;
  std::vector<double> nic_free_;
  std::string trace_;
};

// Devices that share cores (Simulation::shares_cores) compute faster while others wait: the
// first pass prices every op as if all devices computed, each later pass rescales every compute
// span by the sharing factor at how many devices computed during it in the pass before.
constexpr int kSharingPasses = 3;

Expected<SimulationResult> simulate_passes(const Program& p, const CompactProgram* compact,
                                           const mesh::ClusterSpec& cluster,
                                           const SimulationOptions& options) {
  Simulation once(p, compact, cluster, options);
  if (!once.shares_cores()) return once.run();
  SimulationOptions quiet = options;  // traces and timelines of the last pass only
  quiet.trace = false;
  quiet.memory_timeline = false;
  SharingFactors factors;
  for (int pass = 1;; ++pass) {
    const bool last = pass == kSharingPasses;
    Simulation s(p, compact, cluster, last ? options : quiet, pass == 1 ? nullptr : &factors);
    if (!last) s.record_spans();
    auto r = s.run();
    if (last || !r.has_value()) return r;
    factors = s.sharing();
  }
}

}  // namespace

Expected<SimulationResult> simulate(const Program& program, const mesh::ClusterSpec& cluster,
                                    const SimulationOptions& options) {
  if (static_cast<int64_t>(program.devices.size()) > cluster.num_devices()) {
    return make_error(Errc::kInvalidArgument, "the program has {} devices, cluster {} has {}",
                      program.devices.size(), cluster.name, cluster.num_devices());
  }
  return simulate_passes(program, nullptr, cluster, options);
}

Expected<SimulationResult> simulate(const CompactProgram& program, const mesh::ClusterSpec& cluster,
                                    const SimulationOptions& options) {
  if (static_cast<int64_t>(program.base.devices.size()) > cluster.num_devices()) {
    return make_error(Errc::kInvalidArgument, "the program has {} devices, cluster {} has {}",
                      program.base.devices.size(), cluster.name, cluster.num_devices());
  }
  if (program.code.size() != program.base.devices.size()) {
    return make_error(Errc::kInvalidArgument, "compact program: {} codes for {} devices",
                      program.code.size(), program.base.devices.size());
  }
  return simulate_passes(program.base, &program, cluster, options);
}

}  // namespace meshpipe::runtime

namespace meshpipe::runtime {

std::vector<int64_t> peak_memory(const CompactProgram& program, const mesh::ClusterSpec& cluster) {
  const auto sizes = cost_model_for(cluster);
  std::vector<int64_t> peaks(program.base.devices.size(), 0);
  for (size_t k = 0; k < program.base.devices.size(); ++k) {
    const DeviceProgram& dp = program.base.devices[k];
    if (dp.device < 0) continue;
    const CompactCode& cc = program.code[k];
    LiveBuffers memory(dp, &cc.classes, program.base.micro_batches, *sizes);
    for (const Segment& s : cc.segments) {
      for (const Instruction& ins : cc.templates[static_cast<size_t>(s.code)]) {
        for (int32_t b : ins.out) memory.allocate(b, s.micro_batch);
        if (ins.code == Opcode::kRun) {
          memory.with_scratch(dp.ops[static_cast<size_t>(ins.op)].workspace_bytes);
        } else if (ins.code == Opcode::kFree) {
          memory.release(ins.in[0], s.micro_batch);
        }
      }
    }
    peaks[k] = memory.peak();
  }
  return peaks;
}

}  // namespace meshpipe::runtime
