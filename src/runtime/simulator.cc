// simulate(): the device programs against a cost-model clock (see simulator.h).
#include "runtime/simulator.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <tuple>

#include "mesh/resharding.h"
#include "planner/cost_model.h"
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

struct Device {
  const DeviceProgram* dp = nullptr;
  size_t pc = 0;
  double clock = 0.0;
  int64_t live = 0;
  std::vector<bool> allocated;
  std::map<int32_t, std::pair<int32_t, uint64_t>> pending_recv;  // buffer -> (from, tag)
  int64_t collectives[2] = {0, 0};
  bool registered = false;  // at the collective under pc
  SimulatedDevice out;
};

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
  Simulation(const Program& p, const mesh::ClusterSpec& c, const SimulationOptions& o)
      : program_(p),
        cluster_(c),
        default_cost_(cost_model_for(c)),
        cost_(o.cost != nullptr ? *o.cost : *default_cost_),
        options_(o) {}

  Expected<SimulationResult> run() {
    for (const DeviceProgram& dp : program_.devices) {
      if (dp.device < 0) continue;
      Device d;
      d.dp = &dp;
      d.out.device = dp.device;
      d.out.stage = dp.stage;
      d.allocated.assign(dp.buffers.size(), false);
      for (size_t b = 0; b < dp.buffers.size(); ++b) {
        if (dp.buffers[b].kind == BufferKind::kPersistent) allocate(d, static_cast<int32_t>(b));
      }
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
        all_done = all_done && d.pc == d.dp->instructions.size();
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
  void allocate(Device& d, int32_t b) {
    if (d.allocated[static_cast<size_t>(b)]) return;
    d.allocated[static_cast<size_t>(b)] = true;
    d.live += default_cost_->allocation_bytes(d.dp->buffers[static_cast<size_t>(b)].bytes());
    d.out.peak_bytes = std::max(d.out.peak_bytes, d.live);
    memory_changed(d);
  }

  void release(Device& d, int32_t b) {
    if (!d.allocated[static_cast<size_t>(b)]) return;
    d.allocated[static_cast<size_t>(b)] = false;
    d.live -= default_cost_->allocation_bytes(d.dp->buffers[static_cast<size_t>(b)].bytes());
    memory_changed(d);
  }

  // Memory over time: kept per device when asked, and a counter track in the trace.
  void memory_changed(Device& d) {
    if (options_.memory_timeline) d.out.memory.emplace_back(d.clock, d.live);
    if (!options_.trace) return;
    if (!trace_.empty()) trace_ += ",\n";
    trace_ += fmt::format(
        "{{\"name\": \"memory device {}\", \"ph\": \"C\", \"ts\": {:.3f}, \"pid\": {}, "
        "\"args\": {{\"MiB\": {:.3f}}}}}",
        d.dp->device, d.clock * 1e6, d.dp->stage, static_cast<double>(d.live) / 1048576.0);
  }

  double copy_time(int64_t bytes) const {
    const double bw = cluster_.device.memory_bandwidth;
    return bw > 0 ? 2.0 * static_cast<double>(bytes) / bw : 0.0;
  }

  const mesh::LinkSpec& link(int32_t a, int32_t b) const {
    const int32_t per = cluster_.devices_per_host;
    return a / per == b / per ? cluster_.intra_host : cluster_.inter_host;
  }

  void event(const Device& d, const Instruction& ins, double start, double dur) {
    if (!options_.trace || dur <= 0.0) return;
    if (!trace_.empty()) trace_ += ",\n";
    trace_ += fmt::format(
        "{{\"name\": \"{}\", \"cat\": \"{}\", \"ph\": \"X\", \"ts\": {:.3f}, \"dur\": {:.3f}, "
        "\"pid\": {}, \"tid\": {}, \"args\": {{\"phase\": \"{}\", \"micro_batch\": {}}}}}",
        json_escape(ins.what), opcode_name(ins.code), start * 1e6, dur * 1e6, d.dp->stage,
        d.dp->device, phase_name(ins.phase), ins.micro_batch);
  }

  // Runs d's instructions until one blocks; true when something moved.
  Expected<bool> advance(Device& d) {
    bool moved = false;
    const auto& code = d.dp->instructions;
    while (d.pc < code.size()) {
      const Instruction& ins = code[d.pc];
      // A read of a received buffer waits for the message to arrive.
      for (int32_t b : ins.in) {
        auto it = d.pending_recv.find(b);
        if (it == d.pending_recv.end()) continue;
        auto msg = messages_.find({it->second.first, d.dp->device, it->second.second});
        if (msg == messages_.end()) return moved;  // not sent yet
        if (msg->second > d.clock) {
          d.out.waiting += msg->second - d.clock;
          d.clock = msg->second;
        }
        messages_.erase(msg);
        d.pending_recv.erase(it);
      }
      const double start = d.clock;
      double dur = 0.0;
      const int64_t out_bytes =
          ins.out.empty() ? 0 : d.dp->buffers[static_cast<size_t>(ins.out[0])].bytes();
      switch (ins.code) {
        case Opcode::kRun: {
          const shard::OpWork& work = d.dp->ops[static_cast<size_t>(ins.op)].work;
          // A piece that carries no work of its own (the later pieces of a split op) is free.
          const bool idle = work.flops.value() == 0.0 && work.bytes.value() == 0;
          dur = idle ? 0.0 : cost_.compute(work).value();
          d.out.compute += dur;
          // The kernel's scratch (im2col columns, packed operands) lives while it runs, with
          // its outputs.
          for (int32_t b : ins.out) allocate(d, b);
          const int64_t ws = d.dp->ops[static_cast<size_t>(ins.op)].workspace_bytes;
          const int64_t scratch = ws > 0 ? default_cost_->allocation_bytes(ws) : 0;
          d.out.peak_bytes = std::max(d.out.peak_bytes, d.live + scratch);
          break;
        }
        case Opcode::kCollective: {
          const int a = ins.collective.axis;
          const auto& mesh = program_.stages[static_cast<size_t>(d.dp->stage)].mesh;
          const int n = static_cast<int>(mesh.size(a));
          if (n == 1 || ins.collective.kind == mesh::CollectiveKind::kSlice) {
            dur = copy_time(out_bytes);
            d.out.compute += dur;
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
          dur = ins.collective.cost.value();
          d.out.collective += dur;
          d.registered = false;
          ++d.collectives[a];
          if (--m.left == 0) meetings_.erase(key);
          break;
        }
        case Opcode::kSend: {
          const int64_t bytes = d.dp->buffers[static_cast<size_t>(ins.in[0])].bytes();
          const mesh::LinkSpec& l = link(d.dp->device, ins.peer);
          const double wire = l.bandwidth > 0 ? static_cast<double>(bytes) / l.bandwidth : 0.0;
          double& nic = nic_free_[static_cast<size_t>(d.dp->device)];
          const double leave = std::max(d.clock, nic);
          nic = leave + wire;
          messages_[{d.dp->device, ins.peer, ins.tag}] = leave + l.latency.value() + wire;
          break;
        }
        case Opcode::kRecv:
          d.pending_recv[ins.out[0]] = {ins.peer, ins.tag};
          break;
        case Opcode::kCopyBox:
        case Opcode::kLoadInput:
        case Opcode::kAccumulate:
        case Opcode::kScale:
          dur = copy_time(ins.code == Opcode::kCopyBox
                              ? d.dp->buffers[static_cast<size_t>(ins.in[0])].bytes()
                              : out_bytes);
          d.out.compute += dur;
          break;
        case Opcode::kReportLoss:
          break;
        case Opcode::kFree:
          release(d, ins.in[0]);
          break;
      }
      for (int32_t b : ins.out) allocate(d, b);
      event(d, ins, start, dur);
      d.clock += dur;
      ++d.pc;
      moved = true;
    }
    return moved;
  }

  Status deadlock() const {
    std::string where;
    for (const Device& d : devices_) {
      if (d.pc >= d.dp->instructions.size()) continue;
      const Instruction& ins = d.dp->instructions[d.pc];
      where += fmt::format("; device {} at instruction {} ({} '{}')", d.dp->device, d.pc,
                           opcode_name(ins.code), ins.what);
    }
    return make_error(Errc::kInternal, "the program deadlocks{}", where);
  }

  const Program& program_;
  const mesh::ClusterSpec& cluster_;
  // The cluster's model: buffer sizes always (the device's allocator), times unless the options
  // give a model.
  std::unique_ptr<planner::CostModel> default_cost_;
  const planner::CostModel& cost_;
  SimulationOptions options_;
  std::vector<Device> devices_;
  std::map<MessageKey, double> messages_;  // arrival times of sent messages
  std::map<GroupKey, Meeting> meetings_;
  std::vector<double> nic_free_;
  std::string trace_;
};

}  // namespace

Expected<SimulationResult> simulate(const Program& program, const mesh::ClusterSpec& cluster,
                                    const SimulationOptions& options) {
  if (static_cast<int64_t>(program.devices.size()) > cluster.num_devices()) {
    return make_error(Errc::kInvalidArgument, "the program has {} devices, cluster {} has {}",
                      program.devices.size(), cluster.name, cluster.num_devices());
  }
  Simulation s(program, cluster, options);
  return s.run();
}

}  // namespace meshpipe::runtime
