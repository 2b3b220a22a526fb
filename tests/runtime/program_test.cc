// Device programs on hand-built Programs: validate_program catches each broken invariant,
// program_fingerprint tells programs apart by every field it covers, fuse_all_reduces packs only
// what it may, insert_frees frees each step buffer after its last use, and the listings.
#include "runtime/program.h"

#include <catch2/catch.hpp>
#include <functional>
#include <set>
#include <sstream>

namespace meshpipe::runtime {
namespace {

using mesh::CollectiveKind;

BufferDesc step_buffer(const std::string& name, Shape shape, DType dtype = DType::kF32) {
  return {name, std::move(shape), dtype, BufferKind::kStep};
}

BufferDesc persistent_buffer(const std::string& name, Shape shape, DType dtype = DType::kF32) {
  return {name, std::move(shape), dtype, BufferKind::kPersistent};
}

Instruction copy_all(int32_t from, int32_t to, int64_t n, const std::string& what) {
  Instruction i;
  i.code = Opcode::kCopyBox;
  i.in = {from};
  i.out = {to};
  i.src_offset = {0};
  i.dst_offset = {0};
  i.extent = {n};
  i.what = what;
  return i;
}

Instruction send(int32_t b, int32_t peer, uint64_t tag) {
  Instruction i;
  i.code = Opcode::kSend;
  i.in = {b};
  i.peer = peer;
  i.tag = tag;
  i.what = "send";
  return i;
}

Instruction recv(int32_t b, int32_t peer, uint64_t tag) {
  Instruction i;
  i.code = Opcode::kRecv;
  i.out = {b};
  i.peer = peer;
  i.tag = tag;
  i.what = "recv";
  return i;
}

Instruction scale(int32_t b, float factor) {
  Instruction i;
  i.code = Opcode::kScale;
  i.in = {b};
  i.out = {b};
  i.factor = factor;
  i.what = "scale";
  return i;
}

Instruction free_buffer(int32_t b) {
  Instruction i;
  i.code = Opcode::kFree;
  i.in = {b};
  i.what = "free";
  return i;
}

Instruction collective(CollectiveKind kind, int axis, int32_t in, int32_t out) {
  Instruction i;
  i.code = Opcode::kCollective;
  i.collective.kind = kind;
  i.collective.axis = axis;
  i.in = {in};
  i.out = {out};
  i.what = fmt::format("{} of {}", mesh::collective_name(kind), in);
  return i;
}

Instruction all_reduce(int32_t b, int axis = 0) {
  return collective(CollectiveKind::kAllReduce, axis, b, b);
}

StageLayout stage_of(std::vector<int32_t> devices, int64_t d0, int64_t d1) {
  StageLayout st;
  st.devices = std::move(devices);
  st.mesh.shape[0] = d0;
  st.mesh.shape[1] = d1;
  return st;
}

// Two stages of one device each: device 0 copies its weight into "h" and sends it to device 1
// (tag 5), which receives it into "r" and stores it in its persistent "acc".
Program pipeline_pair() {
  Program p;
  p.stages = {stage_of({0}, 1, 1), stage_of({1}, 1, 1)};
  DeviceProgram d0;
  d0.device = 0;
  d0.stage = 0;
  d0.buffers = {persistent_buffer("w", Shape{4}), step_buffer("h", Shape{4})};
  d0.instructions = {copy_all(0, 1, 4, "stage h"), send(1, 1, 5), free_buffer(1)};
  DeviceProgram d1;
  d1.device = 1;
  d1.stage = 1;
  d1.buffers = {persistent_buffer("acc", Shape{4}), step_buffer("r", Shape{4})};
  d1.instructions = {recv(1, 0, 5), copy_all(1, 0, 4, "store r"), free_buffer(1)};
  p.devices = {d0, d1};
  return p;
}

// One stage on a (d0, d1) mesh whose devices all have `buffers` and `code`.
Program spmd_stage(int64_t d0, int64_t d1, const std::vector<BufferDesc>& buffers,
                   const std::vector<Instruction>& code) {
  Program p;
  std::vector<int32_t> ids;
  for (int32_t k = 0; k < d0 * d1; ++k) ids.push_back(k);
  p.stages = {stage_of(ids, d0, d1)};
  for (int32_t k = 0; k < d0 * d1; ++k) {
    DeviceProgram dp;
    dp.device = k;
    dp.coord[0] = k / d1;
    dp.coord[1] = k % d1;
    dp.buffers = buffers;
    dp.instructions = code;
    p.devices.push_back(dp);
  }
  return p;
}

std::string error_of(const Program& p) {
  const Status s = validate_program(p);
  return s.is_ok() ? "ok" : s.message();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_CASE("validate_program accepts a well-formed pipeline pair", "[runtime][program]") {
  CHECK(error_of(pipeline_pair()) == "ok");
}

TEST_CASE("validate_program rejects a buffer id out of range, naming device and instruction",
          "[runtime][program]") {
  Program in_range = pipeline_pair();
  in_range.devices[0].instructions[0].in = {7};
  const std::string a = error_of(in_range);
  INFO(a);
  CHECK(contains(a, "device 0 instruction 0 (copy-box 'stage h')"));
  CHECK(contains(a, "buffer 7 out of range"));

  Program out_range = pipeline_pair();
  out_range.devices[1].instructions[1].out = {-1};
  const std::string b = error_of(out_range);
  INFO(b);
  CHECK(contains(b, "device 1 instruction 1"));
  CHECK(contains(b, "buffer -1 out of range"));
  CHECK(validate_program(out_range).code() == Errc::kInternal);
}

TEST_CASE("validate_program rejects a step buffer read before it is written or after its free",
          "[runtime][program]") {
  Program early = pipeline_pair();
  // The send now comes before the copy that writes "h".
  std::swap(early.devices[0].instructions[0], early.devices[0].instructions[1]);
  const std::string a = error_of(early);
  INFO(a);
  CHECK(contains(a, "device 0 instruction 0 (send"));
  CHECK(contains(a, "reads buffer 'h' before it is written"));

  Program late = pipeline_pair();
  late.devices[1].instructions.push_back(scale(1, 2.0f));  // after "free r"
  const std::string b = error_of(late);
  INFO(b);
  CHECK(contains(b, "device 1 instruction 3 (scale"));
  CHECK(contains(b, "reads buffer 'r' before it is written"));

  // A persistent buffer counts as written from the start.
  Program persistent = pipeline_pair();
  persistent.devices[1].instructions.insert(persistent.devices[1].instructions.begin(),
                                            scale(0, 2.0f));
  CHECK(error_of(persistent) == "ok");
}

TEST_CASE("validate_program rejects accumulating into an unwritten buffer unless it is the first",
          "[runtime][program]") {
  Program p = pipeline_pair();
  p.devices[1].buffers.push_back(step_buffer("sum", Shape{4}));
  Instruction acc;
  acc.code = Opcode::kAccumulate;
  acc.in = {1};
  acc.out = {2};
  acc.first = false;
  acc.what = "accumulate r";
  p.devices[1].instructions.insert(p.devices[1].instructions.begin() + 1, acc);
  const std::string a = error_of(p);
  INFO(a);
  CHECK(contains(a, "device 1 instruction 1 (accumulate 'accumulate r')"));
  CHECK(contains(a, "accumulates into a buffer not yet written"));
  p.devices[1].instructions[1].first = true;
  CHECK(error_of(p) == "ok");
}

TEST_CASE("validate_program rejects freeing a persistent buffer and running a missing op",
          "[runtime][program]") {
  Program freed = pipeline_pair();
  freed.devices[0].instructions.push_back(free_buffer(0));
  const std::string a = error_of(freed);
  INFO(a);
  CHECK(contains(a, "device 0 instruction 3"));
  CHECK(contains(a, "frees a persistent buffer"));

  Program run = pipeline_pair();
  Instruction r;
  r.code = Opcode::kRun;
  r.op = 0;  // the device has no ops
  r.in = {0};
  r.out = {0};
  r.what = "missing op";
  run.devices[0].instructions.push_back(r);
  const std::string b = error_of(run);
  INFO(b);
  CHECK(contains(b, "device 0 instruction 3 (run 'missing op')"));
  CHECK(contains(b, "op 0 out of range"));
}

TEST_CASE("validate_program rejects sends and receives that do not pair up", "[runtime][program]") {
  SECTION("a receive under another tag") {
    Program p = pipeline_pair();
    p.devices[1].instructions[0].tag = 6;
    const std::string e = error_of(p);
    INFO(e);
    CHECK(contains(e, "send from device 0 to device 1 (tag 0x5, 16 bytes) has no matching"));
  }
  SECTION("a receive of another size") {
    Program p = pipeline_pair();
    p.devices[1].buffers[1].shape = Shape{2};
    p.devices[1].instructions[1].extent = {2};
    const std::string e = error_of(p);
    INFO(e);
    CHECK(contains(e, "send from device 0 to device 1 (tag 0x5, 16 bytes) has no matching"));
  }
  SECTION("a receive without a send") {
    Program p = pipeline_pair();
    p.devices[0].instructions.erase(p.devices[0].instructions.begin() + 1);
    const std::string e = error_of(p);
    INFO(e);
    CHECK(contains(e, "receive on device 1 from device 0 (tag 0x5) has no matching send"));
  }
  SECTION("a send to a device without a program") {
    Program p = pipeline_pair();
    p.devices[0].instructions[1].peer = 3;
    const std::string e = error_of(p);
    INFO(e);
    CHECK(contains(e, "device 0: 'send' names device 3, which has no program"));
  }
  SECTION("a tag used twice between the same devices") {
    Program p = pipeline_pair();
    p.devices[0].instructions.insert(p.devices[0].instructions.begin() + 2, send(1, 1, 5));
    const std::string e = error_of(p);
    INFO(e);
    CHECK(contains(e, "device 0: tag 0x5 is used twice"));
  }
}

TEST_CASE("validate_program rejects group members that run different collectives",
          "[runtime][program]") {
  const std::vector<BufferDesc> bufs = {persistent_buffer("a", Shape{8}),
                                        persistent_buffer("b", Shape{8}),
                                        persistent_buffer("c", Shape{4})};
  const std::vector<Instruction> code = {all_reduce(0), all_reduce(1)};
  CHECK(error_of(spmd_stage(2, 1, bufs, code)) == "ok");

  SECTION("another kind") {
    Program p = spmd_stage(2, 1, bufs, code);
    p.devices[1].instructions[1] = collective(CollectiveKind::kAllGather, 0, 1, 1);
    const std::string e = error_of(p);
    INFO(e);
    CHECK(contains(e, "device 1 runs other collectives along mesh axis 0 than its group"));
  }
  SECTION("another buffer size") {
    Program p = spmd_stage(2, 1, bufs, code);
    p.devices[1].instructions[1] = all_reduce(2);
    const std::string e = error_of(p);
    INFO(e);
    CHECK(contains(e, "device 1 runs other collectives along mesh axis 0"));
  }
  SECTION("one collective fewer") {
    Program p = spmd_stage(2, 1, bufs, code);
    p.devices[1].instructions.pop_back();
    CHECK(contains(error_of(p), "device 1 runs other collectives along mesh axis 0"));
  }
  SECTION("another order") {
    Program p = spmd_stage(2, 1, bufs, {all_reduce(0), all_reduce(2)});
    std::swap(p.devices[1].instructions[0], p.devices[1].instructions[1]);
    CHECK(contains(error_of(p), "device 1 runs other collectives along mesh axis 0"));
  }
  SECTION("two different groups may differ") {
    // On a (2, 2) mesh the axis-1 groups are {0, 1} and {2, 3}: only the second all-reduces.
    Program p = spmd_stage(2, 2, bufs, {});
    p.devices[2].instructions = {all_reduce(0, 1)};
    p.devices[3].instructions = {all_reduce(0, 1)};
    CHECK(error_of(p) == "ok");
    p.devices[3].instructions.clear();
    CHECK(contains(error_of(p), "device 3 runs other collectives along mesh axis 1"));
  }
}

// A program that sets every field program_fingerprint covers to a non-default value.
Program rich_program() {
  Program p = pipeline_pair();
  p.micro_batches = 2;
  p.loss_device = 1;
  DeviceProgram& d0 = p.devices[0];
  d0.buffers.push_back(step_buffer("x", Shape{2, 3}));
  d0.buffers.push_back(step_buffer("y", Shape{2, 3}));
  Instruction load;
  load.code = Opcode::kLoadInput;
  load.phase = Phase::kForward;
  load.micro_batch = 1;
  load.input = 0;
  load.out = {2};
  load.src_offset = {2, 0};
  Instruction box;
  box.code = Opcode::kCopyBox;
  box.phase = Phase::kBackward;
  box.micro_batch = 1;
  box.in = {2};
  box.out = {3};
  box.src_offset = {0, 1};
  box.dst_offset = {1, 0};
  box.extent = {1, 2};
  Instruction coll = collective(CollectiveKind::kAllToAll, 1, 3, 3);
  coll.collective.dim = 1;
  coll.collective.split_dim = 0;
  coll.shape = Shape{4, 6};
  coll.phase = Phase::kGradSync;
  Instruction acc;
  acc.code = Opcode::kAccumulate;
  acc.in = {3};
  acc.out = {2};
  acc.first = true;
  Instruction run;
  run.code = Opcode::kRun;
  run.op = 0;
  run.in = {2};
  run.out = {3};
  Instruction sc = scale(3, 0.5f);
  sc.phase = Phase::kUpdate;
  d0.instructions.insert(d0.instructions.begin(), {load, box, coll, acc, run, sc});
  d0.persistent = {{0, "w", {{0, 4}}}};
  p.devices[1].persistent = {{0, "acc", {{0, 4}}}};
  return p;
}

TEST_CASE("program_fingerprint is equal for equal programs and changes with each covered field",
          "[runtime][program]") {
  const uint64_t base = program_fingerprint(rich_program());
  CHECK(program_fingerprint(rich_program()) == base);
  CHECK(program_fingerprint(pipeline_pair()) != base);

  // Instruction k of device 0 of rich_program: 0 load, 1 copy-box, 2 collective, 3 accumulate,
  // 4 run, 5 scale, 6 copy-box, 7 send, 8 free.
  using Edit = std::function<void(Program&)>;
  const auto ins = [](Program& p, size_t k) -> Instruction& {
    return p.devices[0].instructions[k];
  };
  const std::vector<std::pair<const char*, Edit>> edits = {
      {"opcode", [&](Program& p) { ins(p, 5).code = Opcode::kReportLoss; }},
      {"phase", [&](Program& p) { ins(p, 1).phase = Phase::kForward; }},
      {"micro-batch", [&](Program& p) { ins(p, 0).micro_batch = 0; }},
      {"buffers read", [&](Program& p) { ins(p, 3).in = {2}; }},
      {"buffers written", [&](Program& p) { ins(p, 4).out = {2}; }},
      {"op", [&](Program& p) { ins(p, 4).op = 1; }},
      {"collective kind",
       [&](Program& p) { ins(p, 2).collective.kind = CollectiveKind::kAllGather; }},
      {"collective axis", [&](Program& p) { ins(p, 2).collective.axis = 0; }},
      {"collective dim", [&](Program& p) { ins(p, 2).collective.dim = 0; }},
      {"collective split dim", [&](Program& p) { ins(p, 2).collective.split_dim = 1; }},
      {"collective tensor shape",
       [&](Program& p) {
         ins(p, 2).shape = Shape{6, 4};
       }},
      {"peer", [&](Program& p) { ins(p, 7).peer = 0; }},
      {"tag", [&](Program& p) { ins(p, 7).tag = 6; }},
      {"data input", [&](Program& p) { ins(p, 0).input = 1; }},
      {"source offset",
       [&](Program& p) {
         ins(p, 0).src_offset = {0, 0};
       }},
      {"destination offset",
       [&](Program& p) {
         ins(p, 1).dst_offset = {0, 0};
       }},
      {"extent",
       [&](Program& p) {
         ins(p, 1).extent = {2, 1};
       }},
      {"factor", [&](Program& p) { ins(p, 5).factor = 0.25f; }},
      {"first", [&](Program& p) { ins(p, 3).first = false; }},
      {"one more instruction",
       [&](Program& p) { p.devices[0].instructions.push_back(scale(0, 1)); }},
      {"buffer shape",
       [&](Program& p) {
         p.devices[0].buffers[2].shape = Shape{3, 2};
       }},
      {"buffer dtype", [&](Program& p) { p.devices[1].buffers[1].dtype = DType::kI32; }},
      {"buffer kind", [&](Program& p) { p.devices[0].buffers[3].kind = BufferKind::kPersistent; }},
      {"persistent tile buffer", [&](Program& p) { p.devices[0].persistent[0].buffer = 1; }},
      {"persistent tile region",
       [&](Program& p) {
         p.devices[1].persistent[0].region = {{1, 4}};
       }},
      {"micro-batches", [&](Program& p) { p.micro_batches = 4; }},
      {"loss device", [&](Program& p) { p.loss_device = 0; }},
      {"device's stage", [&](Program& p) { p.devices[1].stage = 0; }},
  };
  std::set<uint64_t> seen = {base};
  for (const auto& [field, edit] : edits) {
    Program p = rich_program();
    edit(p);
    INFO("changed: " << field);
    const uint64_t f = program_fingerprint(p);
    CHECK(f != base);
    seen.insert(f);
  }
  CHECK(seen.size() == edits.size() + 1);  // every edit gives its own fingerprint
}

TEST_CASE(
    "program_fingerprint changes with a collective's specs and a device's mesh position, which "
    "decide the data it exchanges",
    "[runtime][program]") {
  // The interpreter places the tiles of a collective by ins.spec, ins.collective.after and the
  // device's coord (the tile ranges it packs and unpacks), so these decide what a device
  // exchanges; program_fingerprint hashes them (it once hashed none). Here: one all-gather whose
  // kind, axis,
  // dim and buffer shapes are equal, with "S01,R" or "S10,R" before it (the two axes' chunk
  // order differs), or "S0,R" or "S1,R" after it; and device 1 at another mesh position.
  const auto with_specs = [](const char* before, const char* after) {
    Program p = rich_program();
    Instruction& c = p.devices[0].instructions[2];
    c.collective.kind = CollectiveKind::kAllGather;
    c.collective.dim = 0;
    c.spec = *mesh::parse_sharding(before);
    c.collective.after = *mesh::parse_sharding(after);
    return p;
  };
  CHECK(program_fingerprint(with_specs("S01,R", "S0,R")) !=
        program_fingerprint(with_specs("S10,R", "S0,R")));
  CHECK(program_fingerprint(with_specs("S01,R", "S0,R")) !=
        program_fingerprint(with_specs("S01,R", "S1,R")));
  Program coord = rich_program();
  coord.devices[1].coord[1] = 1;
  CHECK(program_fingerprint(coord) != program_fingerprint(rich_program()));
}

// The `in` list of each instruction of device `d` ({-1} for other opcodes than kCollective).
std::vector<std::vector<int32_t>> collective_inputs(const Program& p, size_t d = 0) {
  std::vector<std::vector<int32_t>> out;
  for (const Instruction& i : p.devices[d].instructions) {
    out.push_back(i.code == Opcode::kCollective ? i.in : std::vector<int32_t>{-1});
  }
  return out;
}

using Groups = std::vector<std::vector<int32_t>>;

std::vector<BufferDesc> f32_buffers(int n, int64_t elements) {
  std::vector<BufferDesc> b;
  for (int i = 0; i < n; ++i) b.push_back(persistent_buffer(fmt::format("g{}", i), {elements}));
  return b;
}

TEST_CASE("fuse_all_reduces packs a run of fp32 all-reduces of one axis into one instruction",
          "[runtime][program]") {
  std::vector<Instruction> code = {all_reduce(0), all_reduce(1), all_reduce(2)};
  for (size_t k = 0; k < code.size(); ++k) {
    code[k].collective.bytes = 64;
    code[k].collective.cost = Seconds(0.5 * static_cast<double>(k + 1));
  }
  Program p = spmd_stage(2, 1, f32_buffers(3, 16), code);
  fuse_all_reduces(p, int64_t{1} << 20);
  for (size_t d = 0; d < 2; ++d) {
    INFO("device " << d);
    REQUIRE(p.devices[d].instructions.size() == 1);
    const Instruction& f = p.devices[d].instructions[0];
    CHECK(f.code == Opcode::kCollective);
    CHECK(f.collective.kind == CollectiveKind::kAllReduce);
    CHECK(f.collective.axis == 0);
    CHECK(f.in == std::vector<int32_t>{0, 1, 2});
    CHECK(f.out == std::vector<int32_t>{0, 1, 2});
    CHECK(f.collective.bytes == 3 * 64);
    CHECK(f.collective.cost.value() == Approx(0.5 + 1.0 + 1.5));
    CHECK(contains(f.what, "3 all-reduces fused"));
  }
  CHECK(error_of(p) == "ok");
}

TEST_CASE("fuse_all_reduces does not fuse across an axis, a kind, a dtype or another instruction",
          "[runtime][program]") {
  const int64_t big = int64_t{1} << 20;
  SECTION("another mesh axis starts a new run") {
    Program p =
        spmd_stage(2, 2, f32_buffers(4, 8),
                   {all_reduce(0, 0), all_reduce(1, 0), all_reduce(2, 1), all_reduce(3, 1)});
    fuse_all_reduces(p, big);
    CHECK(collective_inputs(p) == Groups{{0, 1}, {2, 3}});
  }
  SECTION("an all-gather is not fused") {
    Program p = spmd_stage(2, 1, f32_buffers(5, 8),
                           {all_reduce(0), collective(CollectiveKind::kAllGather, 0, 1, 2),
                            all_reduce(3), all_reduce(4)});
    fuse_all_reduces(p, big);
    CHECK(collective_inputs(p) == Groups{{0}, {1}, {3, 4}});
  }
  SECTION("an int32 buffer is not fused") {
    std::vector<BufferDesc> b = f32_buffers(3, 8);
    b[1].dtype = DType::kI32;
    Program p = spmd_stage(2, 1, b, {all_reduce(0), all_reduce(1), all_reduce(2)});
    fuse_all_reduces(p, big);
    CHECK(collective_inputs(p) == Groups{{0}, {1}, {2}});
  }
  SECTION("an axis of one device is not fused") {
    Program p = spmd_stage(2, 1, f32_buffers(2, 8), {all_reduce(0, 1), all_reduce(1, 1)});
    fuse_all_reduces(p, big);
    CHECK(collective_inputs(p) == Groups{{0}, {1}});
  }
  SECTION("another instruction cuts the run") {
    Program p = spmd_stage(2, 1, f32_buffers(3, 8),
                           {all_reduce(0), scale(2, 0.5f), all_reduce(1), all_reduce(2)});
    fuse_all_reduces(p, big);
    CHECK(collective_inputs(p) == Groups{{0}, {-1}, {1, 2}});
  }
  SECTION("a buffer the run already touches cuts it") {
    Program p =
        spmd_stage(2, 1, f32_buffers(3, 8),
                   {all_reduce(0), all_reduce(0), collective(CollectiveKind::kAllReduce, 0, 1, 2),
                    collective(CollectiveKind::kAllReduce, 0, 2, 1)});
    fuse_all_reduces(p, big);
    CHECK(collective_inputs(p) == Groups{{0}, {0, 1}, {2}});
  }
  SECTION("max_bytes 0 fuses nothing") {
    Program p = spmd_stage(2, 1, f32_buffers(3, 8), {all_reduce(0), all_reduce(1), all_reduce(2)});
    fuse_all_reduces(p, 0);
    CHECK(collective_inputs(p) == Groups{{0}, {1}, {2}});
  }
}

TEST_CASE("fuse_all_reduces cuts a run where its buffers would pass max_bytes",
          "[runtime][program]") {
  // Four buffers of 16 floats (64 bytes) and one of 64 floats (256 bytes).
  std::vector<BufferDesc> b = f32_buffers(4, 16);
  b.push_back(persistent_buffer("big", Shape{64}));
  const std::vector<Instruction> code = {all_reduce(0), all_reduce(1), all_reduce(2), all_reduce(3),
                                         all_reduce(4)};
  const auto fused = [&](int64_t max_bytes) {
    Program p = spmd_stage(2, 1, b, code);
    fuse_all_reduces(p, max_bytes);
    for (const Instruction& i : p.devices[0].instructions) {
      int64_t bytes = 0;
      for (int32_t x : i.in) bytes += b[static_cast<size_t>(x)].bytes();
      if (i.in.size() > 1) CHECK(bytes <= max_bytes);
    }
    return collective_inputs(p);
  };
  CHECK(fused(128) == Groups{{0, 1}, {2, 3}, {4}});
  CHECK(fused(127) == Groups{{0}, {1}, {2}, {3}, {4}});
  CHECK(fused(192) == Groups{{0, 1, 2}, {3}, {4}});
  CHECK(fused(256 + 64) == Groups{{0, 1, 2, 3}, {4}});
  CHECK(fused(512) == Groups{{0, 1, 2, 3, 4}});
}

TEST_CASE("fuse_all_reduces leaves a stage unfused when its members would fuse differently",
          "[runtime][program]") {
  // Stage 0 on devices {0, 1}, stage 1 on devices {2, 3}, both (2, 1) meshes that all-reduce
  // three buffers in a row; on device 1 a SCALE sits between the first two.
  Program p;
  p.stages = {stage_of({0, 1}, 2, 1), stage_of({2, 3}, 2, 1)};
  for (int32_t d = 0; d < 4; ++d) {
    DeviceProgram dp;
    dp.device = d;
    dp.stage = d / 2;
    dp.coord[0] = d % 2;
    dp.buffers = f32_buffers(3, 16);
    dp.instructions = {all_reduce(0), all_reduce(1), all_reduce(2)};
    if (d == 1) dp.instructions.insert(dp.instructions.begin() + 1, scale(2, 0.5f));
    p.devices.push_back(dp);
  }
  fuse_all_reduces(p, int64_t{1} << 20);
  CHECK(collective_inputs(p, 0) == Groups{{0}, {1}, {2}});  // alone it could fuse all three
  CHECK(collective_inputs(p, 1) == Groups{{0}, {-1}, {1}, {2}});
  CHECK(collective_inputs(p, 2) == Groups{{0, 1, 2}});  // the other stage still fuses
  CHECK(collective_inputs(p, 3) == Groups{{0, 1, 2}});
  CHECK(error_of(p) == "ok");
}

TEST_CASE("insert_frees frees each step buffer right after its last use, never a persistent one",
          "[runtime][program]") {
  DeviceProgram dp;
  dp.device = 0;
  dp.buffers = {persistent_buffer("w", Shape{4}), step_buffer("a", Shape{4}),
                step_buffer("b", Shape{4}), step_buffer("unused", Shape{4}),
                step_buffer("d", Shape{4})};
  Instruction c0 = copy_all(0, 1, 4, "w -> a");
  c0.micro_batch = 0;
  Instruction c1 = copy_all(1, 2, 4, "a -> b");
  c1.micro_batch = 0;
  Instruction s = scale(2, 0.5f);
  s.phase = Phase::kBackward;
  s.micro_batch = 1;
  Instruction acc;
  acc.code = Opcode::kAccumulate;
  acc.phase = Phase::kBackward;
  acc.micro_batch = 1;
  acc.in = {2};
  acc.out = {4};
  acc.first = true;
  Instruction w_scale = scale(0, 2.0f);  // the persistent weight is used last
  w_scale.phase = Phase::kUpdate;
  Instruction loss;
  loss.code = Opcode::kReportLoss;
  loss.phase = Phase::kGradSync;
  loss.in = {4};
  dp.instructions = {c0, c1, s, acc, loss, w_scale};
  insert_frees(dp);

  struct Want {
    Opcode code;
    std::vector<int32_t> in;
    Phase phase;
    int32_t micro_batch;
  };
  const std::vector<Want> want = {
      {Opcode::kCopyBox, {0}, Phase::kForward, 0},
      {Opcode::kCopyBox, {1}, Phase::kForward, 0},
      {Opcode::kFree, {1}, Phase::kForward, 0},  // a: last read by the second copy
      {Opcode::kScale, {2}, Phase::kBackward, 1},
      {Opcode::kAccumulate, {2}, Phase::kBackward, 1},
      {Opcode::kFree, {2}, Phase::kBackward, 1},  // b: last read by the accumulation
      {Opcode::kReportLoss, {4}, Phase::kGradSync, -1},
      {Opcode::kFree, {4}, Phase::kGradSync, -1},  // d: last read by the loss report
      {Opcode::kScale, {0}, Phase::kUpdate, -1},   // w: persistent, never freed
  };
  REQUIRE(dp.instructions.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("instruction " << i << ": " << opcode_name(dp.instructions[i].code));
    CHECK(dp.instructions[i].code == want[i].code);
    CHECK(dp.instructions[i].in == want[i].in);
    CHECK(dp.instructions[i].phase == want[i].phase);
    CHECK(dp.instructions[i].micro_batch == want[i].micro_batch);
  }
  CHECK(dp.instructions[2].what == "free a");
  Program p;
  p.stages = {stage_of({0}, 1, 1)};
  p.devices = {dp};
  CHECK(error_of(p) == "ok");
}

TEST_CASE("insert_frees frees a buffer written last, and several after one instruction in order",
          "[runtime][program]") {
  DeviceProgram dp;
  dp.buffers = {step_buffer("x", Shape{4}), step_buffer("y", Shape{4}), step_buffer("z", Shape{4})};
  Instruction load;
  load.code = Opcode::kLoadInput;
  load.micro_batch = 0;
  load.input = 0;
  load.out = {2};
  load.src_offset = {0};
  dp.instructions = {load, copy_all(2, 0, 4, "z -> x"), copy_all(0, 1, 4, "x -> y")};
  dp.instructions[1].in = {2};
  dp.instructions[2].in = {0, 2};  // the last reference of x and z
  insert_frees(dp);
  REQUIRE(dp.instructions.size() == 6);
  CHECK(dp.instructions[3].code == Opcode::kFree);
  CHECK(dp.instructions[3].in == std::vector<int32_t>{0});
  CHECK(dp.instructions[4].in == std::vector<int32_t>{1});  // y: only written, still freed
  CHECK(dp.instructions[5].in == std::vector<int32_t>{2});
}

TEST_CASE("describe_device_program lists every instruction with its details",
          "[runtime][program]") {
  Program p = rich_program();
  p.devices[0].coord[0] = 0;
  const DeviceProgram& d0 = p.devices[0];
  const std::string text = describe_device_program(d0);
  INFO(text);
  std::istringstream lines(text);
  std::string line;
  std::getline(lines, line);
  CHECK(line == "device 0 (stage 0, mesh position (0, 0)): 4 buffers, 9 instructions");
  size_t i = 0;
  while (std::getline(lines, line)) {
    REQUIRE(i < d0.instructions.size());
    const Instruction& ins = d0.instructions[i];
    INFO(line);
    CHECK(line.rfind(fmt::format("{:5} ", i), 0) == 0);
    CHECK(contains(line, phase_name(ins.phase)));
    CHECK(contains(line, opcode_name(ins.code)));
    CHECK(contains(line, ins.what));
    ++i;
  }
  CHECK(i == d0.instructions.size());
  CHECK(contains(text, "send peer 1 tag 0x5"));
  CHECK(contains(text, "all-to-all axis 1"));
  const std::string other = describe_device_program(p.devices[1]);
  CHECK(contains(other, "recv peer 0 tag 0x5"));
  CHECK(other.rfind("device 1 (stage 1, mesh position (0, 0)): 2 buffers, 3 instructions", 0) == 0);
}

TEST_CASE("opcode and phase names are distinct, and Program::device skips unused slots",
          "[runtime][program]") {
  std::set<std::string> opcodes;
  for (int c = 0; c <= static_cast<int>(Opcode::kFree); ++c) {
    opcodes.insert(opcode_name(static_cast<Opcode>(c)));
  }
  CHECK(opcodes.size() == 10);
  CHECK(opcodes.count("?") == 0);
  CHECK(std::string(opcode_name(Opcode::kCopyBox)) == "copy-box");
  std::set<std::string> phases;
  for (int ph = 0; ph <= static_cast<int>(Phase::kUpdate); ++ph) {
    phases.insert(phase_name(static_cast<Phase>(ph)));
  }
  CHECK(phases == std::set<std::string>{"prologue", "forward", "backward", "grad-sync", "update"});

  Program p = pipeline_pair();
  p.devices.push_back(DeviceProgram{});
  p.devices.back().device = -1;  // device 2 unused
  CHECK(p.device(0) == &p.devices[0]);
  CHECK(p.device(1) == &p.devices[1]);
  CHECK(p.device(2) == nullptr);
  CHECK(p.device(3) == nullptr);
  CHECK(p.device(-1) == nullptr);
}

}  // namespace
}  // namespace meshpipe::runtime
