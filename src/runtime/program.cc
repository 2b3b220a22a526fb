// Device programs: names, validation, all-reduce fusion, the free pass, fingerprints and listings.
#include "runtime/program.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>

#include "core/rng.h"

namespace meshpipe::runtime {

const char* opcode_name(Opcode code) {
  switch (code) {
    case Opcode::kRun:
      return "run";
    case Opcode::kCollective:
      return "collective";
    case Opcode::kSend:
      return "send";
    case Opcode::kRecv:
      return "recv";
    case Opcode::kCopyBox:
      return "copy-box";
    case Opcode::kLoadInput:
      return "load-input";
    case Opcode::kAccumulate:
      return "accumulate";
    case Opcode::kScale:
      return "scale";
    case Opcode::kReportLoss:
      return "report-loss";
    case Opcode::kFree:
      return "free";
  }
  return "?";
}

const char* phase_name(Phase phase) {
  switch (phase) {
    case Phase::kPrologue:
      return "prologue";
    case Phase::kForward:
      return "forward";
    case Phase::kBackward:
      return "backward";
    case Phase::kGradSync:
      return "grad-sync";
    case Phase::kUpdate:
      return "update";
  }
  return "?";
}

const DeviceProgram* Program::device(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= devices.size()) return nullptr;
  const DeviceProgram& d = devices[static_cast<size_t>(id)];
  return d.device == id ? &d : nullptr;
}

namespace {

Status check_device(const DeviceProgram& dp) {
  const auto fail = [&](size_t i, const std::string& why) {
    return make_error(Errc::kInternal, "device {} instruction {} ({} '{}'): {}", dp.device, i,
                      opcode_name(dp.instructions[i].code), dp.instructions[i].what, why);
  };
  std::vector<bool> written(dp.buffers.size(), false);
  for (size_t b = 0; b < dp.buffers.size(); ++b) {
    written[b] = dp.buffers[b].kind == BufferKind::kPersistent;
  }
  for (size_t i = 0; i < dp.instructions.size(); ++i) {
    const Instruction& ins = dp.instructions[i];
    for (int32_t b : ins.in) {
      if (b < 0 || static_cast<size_t>(b) >= dp.buffers.size()) {
        return fail(i, fmt::format("buffer {} out of range", b));
      }
      // A collective's or an accumulation's output may be read before written only by itself.
      if (!written[static_cast<size_t>(b)]) {
        return fail(i, fmt::format("reads buffer '{}' before it is written",
                                   dp.buffers[static_cast<size_t>(b)].name));
      }
    }
    for (int32_t b : ins.out) {
      if (b < 0 || static_cast<size_t>(b) >= dp.buffers.size()) {
        return fail(i, fmt::format("buffer {} out of range", b));
      }
    }
    if (ins.code == Opcode::kAccumulate && !ins.first &&
        !written[static_cast<size_t>(ins.out[0])]) {
      return fail(i, "accumulates into a buffer not yet written");
    }
    if (ins.code == Opcode::kRun && (ins.op < 0 || static_cast<size_t>(ins.op) >= dp.ops.size())) {
      return fail(i, fmt::format("op {} out of range", ins.op));
    }
    if (ins.code == Opcode::kFree) {
      if (dp.buffers[static_cast<size_t>(ins.in[0])].kind == BufferKind::kPersistent) {
        return fail(i, "frees a persistent buffer");
      }
      written[static_cast<size_t>(ins.in[0])] = false;
    }
    for (int32_t b : ins.out) written[static_cast<size_t>(b)] = true;
  }
  return Status::ok();
}

// Per mesh axis, every group member's collectives as (kind, bytes of all inputs): an
// error naming the device when the members of some group differ.
Status group_sequences_match(const Program& program, const StageLayout& stage) {
  for (int axis = 0; axis < 2; ++axis) {
    std::map<int64_t, std::vector<std::tuple<int, int64_t>>> first;  // other coord -> sequence
    for (int32_t d : stage.devices) {
      const DeviceProgram* dp = program.device(d);
      if (dp == nullptr) continue;
      std::vector<std::tuple<int, int64_t>> seq;
      for (const Instruction& ins : dp->instructions) {
        if (ins.code == Opcode::kCollective && ins.collective.axis == axis) {
          int64_t bytes = 0;
          for (int32_t b : ins.in) bytes += dp->buffers[static_cast<size_t>(b)].bytes();
          seq.emplace_back(static_cast<int>(ins.collective.kind), bytes);
        }
      }
      auto [it, fresh] = first.emplace(dp->coord[1 - axis], seq);
      if (!fresh && it->second != seq) {
        return make_error(Errc::kInternal,
                          "device {} runs other collectives along mesh axis {} than its group", d,
                          axis);
      }
    }
  }
  return Status::ok();
}

}  // namespace

Status validate_program(const Program& program) {
  // (from, to, tag) -> bytes
  std::map<std::tuple<int32_t, int32_t, uint64_t>, int64_t> sends;
  std::map<std::tuple<int32_t, int32_t, uint64_t>, int64_t> recvs;
  for (const DeviceProgram& dp : program.devices) {
    if (dp.device < 0) continue;
    MP_RETURN_IF_ERROR(check_device(dp));
    for (const Instruction& ins : dp.instructions) {
      if (ins.code != Opcode::kSend && ins.code != Opcode::kRecv) continue;
      if (program.device(ins.peer) == nullptr) {
        return make_error(Errc::kInternal, "device {}: '{}' names device {}, which has no program",
                          dp.device, ins.what, ins.peer);
      }
      const bool send = ins.code == Opcode::kSend;
      const int32_t b = send ? ins.in[0] : ins.out[0];
      const auto key = send ? std::make_tuple(dp.device, ins.peer, ins.tag)
                            : std::make_tuple(ins.peer, dp.device, ins.tag);
      auto& table = send ? sends : recvs;
      if (!table.emplace(key, dp.buffers[static_cast<size_t>(b)].bytes()).second) {
        return make_error(Errc::kInternal, "device {}: tag {:#x} is used twice ('{}')", dp.device,
                          ins.tag, ins.what);
      }
    }
  }
  for (const auto& [key, bytes] : sends) {
    auto it = recvs.find(key);
    if (it == recvs.end() || it->second != bytes) {
      return make_error(Errc::kInternal,
                        "send from device {} to device {} (tag {:#x}, {} bytes) has no matching "
                        "receive",
                        std::get<0>(key), std::get<1>(key), std::get<2>(key), bytes);
    }
  }
  if (sends.size() != recvs.size()) {
    for (const auto& [key, bytes] : recvs) {
      if (sends.count(key) == 0) {
        return make_error(Errc::kInternal,
                          "receive on device {} from device {} (tag {:#x}) has no matching send",
                          std::get<1>(key), std::get<0>(key), std::get<2>(key));
      }
    }
  }
  // Members of one collective group run the same collectives in the same order.
  for (const StageLayout& stage : program.stages) {
    MP_RETURN_IF_ERROR(group_sequences_match(program, stage));
  }
  return Status::ok();
}

namespace {

// A sharding spec as integers: per dim its sharding, then the partial-sum mask.
std::vector<int64_t> spec_code(const mesh::ShardingSpec& spec) {
  std::vector<int64_t> code;
  for (mesh::DimSharding d : spec.dims) code.push_back(static_cast<int64_t>(d));
  code.push_back(static_cast<int64_t>(spec.partial));
  return code;
}

// FNV-1a (core/rng.h) over integers, each as 8 bytes, in a fixed order.
struct Fnv {
  uint64_t h = kFnvOffset;
  void add(int64_t v) { h = fnv1a_u64(h, static_cast<uint64_t>(v)); }
  void add(const std::vector<int64_t>& v) {
    add(static_cast<int64_t>(v.size()));
    for (int64_t x : v) add(x);
  }
  void add(const std::vector<int32_t>& v) {
    add(static_cast<int64_t>(v.size()));
    for (int32_t x : v) add(x);
  }
};

}  // namespace

uint64_t instructions_fingerprint(const std::vector<Instruction>& code, uint64_t h) {
  Fnv f;
  f.h = h;
  f.add(static_cast<int64_t>(code.size()));
  for (const Instruction& ins : code) {
    f.add(static_cast<int64_t>(ins.code));
    f.add(static_cast<int64_t>(ins.phase));
    f.add(ins.micro_batch);
    f.add(ins.in);
    f.add(ins.out);
    f.add(ins.op);
    f.add(static_cast<int64_t>(ins.collective.kind));
    f.add(ins.collective.axis);
    f.add(ins.collective.dim);
    f.add(ins.collective.split_dim);
    f.add(spec_code(ins.spec));
    f.add(spec_code(ins.collective.after));
    f.add(ins.shape.dims());
    f.add(ins.peer);
    f.add(static_cast<int64_t>(ins.tag));
    f.add(ins.input);
    f.add(ins.src_offset);
    f.add(ins.dst_offset);
    f.add(ins.extent);
    uint32_t factor_bits = 0;
    std::memcpy(&factor_bits, &ins.factor, sizeof(factor_bits));
    f.add(static_cast<int64_t>(factor_bits));
    f.add(ins.first ? 1 : 0);
  }
  return f.h;
}

uint64_t program_fingerprint(const Program& program) {
  Fnv f;
  f.add(program.micro_batches);
  f.add(program.loss_device);
  f.add(static_cast<int64_t>(program.devices.size()));
  for (const DeviceProgram& dp : program.devices) {
    f.add(dp.device);
    f.add(dp.stage);
    f.add(dp.coord[0]);
    f.add(dp.coord[1]);
    f.add(static_cast<int64_t>(dp.buffers.size()));
    for (const BufferDesc& b : dp.buffers) {
      f.add(b.shape.dims());
      f.add(static_cast<int64_t>(b.dtype));
      f.add(static_cast<int64_t>(b.kind));
    }
    f.h = instructions_fingerprint(dp.instructions, f.h);
    for (const PersistentTile& t : dp.persistent) {
      f.add(t.buffer);
      for (const mesh::DimRange& r : t.region) {
        f.add(r.begin);
        f.add(r.end);
      }
    }
  }
  return f.h;
}

namespace {

// What one device's fusion replaced: at output position `at`, the instructions merged into one.
struct Merge {
  size_t at = 0;
  std::vector<Instruction> parts;
};

// One device's fusion (see fuse_all_reduces). Returns what it merged, so that a stage whose
// members fused differently can be put back without copying every instruction beforehand.
std::vector<Merge> fuse_device(DeviceProgram& dp, const mesh::LogicalMesh& mesh,
                               int64_t max_bytes) {
  const auto fusable = [&](const Instruction& ins) {
    return ins.code == Opcode::kCollective &&
           ins.collective.kind == mesh::CollectiveKind::kAllReduce && ins.in.size() == 1 &&
           ins.out.size() == 1 && mesh.size(ins.collective.axis) > 1 &&
           dp.buffers[static_cast<size_t>(ins.in[0])].dtype == DType::kF32;
  };
  const auto bytes = [&](int32_t b) { return dp.buffers[static_cast<size_t>(b)].bytes(); };
  std::vector<Merge> merges;
  std::vector<Instruction> out;
  out.reserve(dp.instructions.size());
  for (size_t i = 0; i < dp.instructions.size();) {
    Instruction fused = std::move(dp.instructions[i++]);
    if (fusable(fused)) {
      const size_t first = i - 1;
      int64_t total = bytes(fused.in[0]);
      std::vector<int32_t> seen = {fused.in[0], fused.out[0]};
      const auto touched = [&](int32_t b) {
        return std::find(seen.begin(), seen.end(), b) != seen.end();
      };
      while (i < dp.instructions.size()) {
        const Instruction& next = dp.instructions[i];
        if (!fusable(next) || next.collective.axis != fused.collective.axis ||
            touched(next.in[0]) || touched(next.out[0]) || total + bytes(next.in[0]) > max_bytes) {
          break;
        }
        total += bytes(next.in[0]);
        seen.push_back(next.in[0]);
        seen.push_back(next.out[0]);
        ++i;
      }
      if (i - first > 1) {
        Merge m;
        m.at = out.size();
        m.parts.push_back(fused);
        for (size_t k = first + 1; k < i; ++k) {
          Instruction& next = dp.instructions[k];
          fused.in.push_back(next.in[0]);
          fused.out.push_back(next.out[0]);
          fused.collective.bytes += next.collective.bytes;
          fused.collective.cost += next.collective.cost;
          m.parts.push_back(std::move(next));
        }
        fused.what = fmt::format("{} all-reduces fused, from {}", i - first, fused.what);
        merges.push_back(std::move(m));
      }
    }
    out.push_back(std::move(fused));
  }
  dp.instructions = std::move(out);
  return merges;
}

// Puts back what fuse_device merged.
void unfuse_device(DeviceProgram& dp, std::vector<Merge> merges) {
  std::vector<Instruction> out;
  out.reserve(dp.instructions.size());
  size_t next = 0;
  for (size_t i = 0; i < dp.instructions.size(); ++i) {
    if (next < merges.size() && merges[next].at == i) {
      for (Instruction& part : merges[next].parts) out.push_back(std::move(part));
      ++next;
    } else {
      out.push_back(std::move(dp.instructions[i]));
    }
  }
  dp.instructions = std::move(out);
}

}  // namespace

void fuse_all_reduces(Program& program, int64_t max_bytes) {
  if (max_bytes <= 0) return;
  for (const StageLayout& stage : program.stages) {
    std::vector<std::pair<DeviceProgram*, std::vector<Merge>>> done;
    for (int32_t d : stage.devices) {
      DeviceProgram& dp = program.devices[static_cast<size_t>(d)];
      done.emplace_back(&dp, fuse_device(dp, stage.mesh, max_bytes));
    }
    if (group_sequences_match(program, stage).is_ok()) continue;
    for (auto& [dp, merges] : done) unfuse_device(*dp, std::move(merges));  // fuse nothing here
  }
}

void insert_frees(DeviceProgram& dp) {
  const size_t n = dp.instructions.size();
  std::vector<int64_t> last(dp.buffers.size(), -1);
  for (size_t i = 0; i < n; ++i) {
    for (int32_t b : dp.instructions[i].in) last[static_cast<size_t>(b)] = static_cast<int64_t>(i);
    for (int32_t b : dp.instructions[i].out) last[static_cast<size_t>(b)] = static_cast<int64_t>(i);
  }
  // The step buffers freed after each instruction, in buffer order (offsets into `freed`).
  std::vector<int64_t> start(n + 1, 0);
  for (size_t b = 0; b < dp.buffers.size(); ++b) {
    if (dp.buffers[b].kind == BufferKind::kStep && last[b] >= 0) ++start[size_t(last[b]) + 1];
  }
  for (size_t i = 0; i < n; ++i) start[i + 1] += start[i];
  std::vector<int32_t> freed(static_cast<size_t>(start[n]));
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (size_t b = 0; b < dp.buffers.size(); ++b) {
    if (dp.buffers[b].kind == BufferKind::kStep && last[b] >= 0) {
      freed[static_cast<size_t>(fill[size_t(last[b])]++)] = static_cast<int32_t>(b);
    }
  }
  std::vector<Instruction> out;
  out.reserve(n + freed.size());
  for (size_t i = 0; i < n; ++i) {
    const Phase phase = dp.instructions[i].phase;
    const int32_t mb = dp.instructions[i].micro_batch;
    out.push_back(std::move(dp.instructions[i]));
    for (int64_t k = start[i]; k < start[i + 1]; ++k) {
      const int32_t b = freed[static_cast<size_t>(k)];
      Instruction f;
      f.code = Opcode::kFree;
      f.phase = phase;
      f.micro_batch = mb;
      f.in = {b};
      f.what = "free " + dp.buffers[static_cast<size_t>(b)].name;
      out.push_back(std::move(f));
    }
  }
  dp.instructions = std::move(out);
}

std::string describe_device_program(const DeviceProgram& dp) {
  std::string text = fmt::format(
      "device {} (stage {}, mesh position ({}, {})): {} buffers, {} "
      "instructions\n",
      dp.device, dp.stage, dp.coord[0], dp.coord[1], dp.buffers.size(), dp.instructions.size());
  for (size_t i = 0; i < dp.instructions.size(); ++i) {
    const Instruction& ins = dp.instructions[i];
    std::string detail;
    if (ins.code == Opcode::kSend || ins.code == Opcode::kRecv) {
      detail = fmt::format(" peer {} tag {:#x}", ins.peer, ins.tag);
    } else if (ins.code == Opcode::kCollective) {
      detail = fmt::format(" {} axis {}", mesh::collective_name(ins.collective.kind),
                           ins.collective.axis);
    }
    text += fmt::format("{:5} {:9} {:11} {}{}\n", i, phase_name(ins.phase), opcode_name(ins.code),
                        ins.what, detail);
  }
  return text;
}

}  // namespace meshpipe::runtime
