// DeviceInterpreter on hand-built one- and two-device Programs with in-process comm: each opcode
// against values computed in the test (tiles cut by hand, sums, gathers, exchanges of known
// tensors), peak bytes, and errors naming device, instruction and cause.
#include "runtime/interpreter.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <optional>
#include <thread>

#include "comm/communicator.h"
#include "comm/transport.h"

namespace meshpipe::runtime {
namespace {

using mesh::CollectiveKind;
using std::chrono::milliseconds;

BufferDesc step_buffer(const std::string& name, Shape shape, DType dtype = DType::kF32) {
  return {name, std::move(shape), dtype, BufferKind::kStep};
}

BufferDesc persistent_buffer(const std::string& name, Shape shape, DType dtype = DType::kF32) {
  return {name, std::move(shape), dtype, BufferKind::kPersistent};
}

Instruction make(Opcode code, std::vector<int32_t> in, std::vector<int32_t> out,
                 const std::string& what) {
  Instruction i;
  i.code = code;
  i.in = std::move(in);
  i.out = std::move(out);
  i.what = what;
  return i;
}

// Copies the whole of buffer `from` (shape `dims`) to buffer `to`.
Instruction copy_whole(int32_t from, int32_t to, const std::vector<int64_t>& dims) {
  Instruction i = make(Opcode::kCopyBox, {from}, {to}, "copy");
  i.src_offset.assign(dims.size(), 0);
  i.dst_offset.assign(dims.size(), 0);
  i.extent = dims;
  return i;
}

Instruction load(int32_t input, int32_t mb, int32_t out, std::vector<int64_t> offset) {
  Instruction i = make(Opcode::kLoadInput, {}, {out}, fmt::format("load {} #{}", input, mb));
  i.input = input;
  i.micro_batch = mb;
  i.src_offset = std::move(offset);
  return i;
}

// A program of `n` devices, device d alone on stage d (a (1, 1) mesh), or all on one stage of
// a (d0, d1) mesh.
Program pipeline(int32_t n) {
  Program p;
  for (int32_t d = 0; d < n; ++d) {
    StageLayout st;
    st.devices = {d};
    p.stages.push_back(st);
    DeviceProgram dp;
    dp.device = d;
    dp.stage = d;
    p.devices.push_back(dp);
  }
  return p;
}

Program mesh_stage(int64_t d0, int64_t d1) {
  Program p;
  StageLayout st;
  st.mesh.shape[0] = d0;
  st.mesh.shape[1] = d1;
  for (int32_t k = 0; k < d0 * d1; ++k) {
    st.devices.push_back(k);
    DeviceProgram dp;
    dp.device = k;
    dp.coord[0] = k / d1;
    dp.coord[1] = k % d1;
    p.devices.push_back(dp);
  }
  p.stages = {st};
  return p;
}

// Declares buffer b of every device as its persistent tile i (for reading and writing).
void expose(Program& p, int32_t device, int32_t buffer) {
  DeviceProgram& dp = p.devices[static_cast<size_t>(device)];
  dp.persistent.push_back({buffer, dp.buffers[static_cast<size_t>(buffer)].name, {}});
}

void set_tile(DeviceInterpreter& in, size_t i, const std::vector<float>& values) {
  kernels::TensorView v = in.persistent(i);
  REQUIRE(static_cast<size_t>(v.numel()) == values.size());
  std::copy(values.begin(), values.end(), v.f32());
}

std::vector<float> tile(const DeviceInterpreter& in, size_t i) {
  kernels::TensorView v = in.persistent(i);
  return std::vector<float>(v.f32(), v.f32() + v.numel());
}

std::vector<float> iota(size_t n, float start, float step = 1.0f) {
  std::vector<float> v(n);
  for (size_t k = 0; k < n; ++k) v[k] = start + step * static_cast<float>(k);
  return v;
}

// Interpreters, communicators per mesh-axis group and transport endpoints for every device of
// a program, all in this process.
struct Harness {
  const Program* program = nullptr;
  std::vector<std::unique_ptr<DeviceInterpreter>> interp;
  std::vector<std::unique_ptr<comm::Communicator>> comms;
  std::shared_ptr<comm::InProcessFabric> fabric;
  std::vector<std::unique_ptr<comm::Transport>> endpoints;
  std::vector<DeviceLinks> links;

  Harness(const Program& p, InterpreterOptions options = {},
          milliseconds timeout = milliseconds(10000))
      : program(&p) {
    const size_t n = p.devices.size();
    links.resize(n);
    for (size_t d = 0; d < n; ++d) {
      auto made = DeviceInterpreter::create(p, static_cast<int32_t>(d), options);
      if (!made.has_value()) FAIL(made.status().to_string());
      interp.push_back(std::move(*made));
    }
    for (const StageLayout& st : p.stages) {
      for (int axis = 0; axis < 2; ++axis) {
        const int64_t size = st.mesh.size(axis);
        if (size == 1) continue;
        const int64_t groups = st.mesh.num_devices() / size;
        for (int64_t g = 0; g < groups; ++g) {
          auto group = comm::InProcessGroup::create(static_cast<int>(size), timeout);
          for (int64_t r = 0; r < size; ++r) {
            const int64_t i0 = axis == 0 ? r : g;
            const int64_t i1 = axis == 0 ? g : r;
            const int32_t d = st.devices[static_cast<size_t>(i0 * st.mesh.size(1) + i1)];
            comms.push_back(group->communicator(static_cast<int>(r)));
            links[static_cast<size_t>(d)].axis[axis] = comms.back().get();
          }
        }
      }
    }
    fabric = comm::InProcessFabric::create(static_cast<int>(n));
    for (size_t d = 0; d < n; ++d) {
      endpoints.push_back(fabric->endpoint(static_cast<int>(d)));
      links[d].transport = endpoints.back().get();
    }
  }

  DeviceInterpreter& operator[](size_t d) { return *interp[d]; }

  // One step of every device, each on its own thread.
  std::vector<Expected<DeviceStepResult>> step(
      const std::vector<std::vector<HostTensor>>& inputs = {}) {
    std::vector<std::optional<Expected<DeviceStepResult>>> out(interp.size());
    std::vector<std::thread> threads;
    for (size_t d = 0; d < interp.size(); ++d) {
      threads.emplace_back([&, d] { out[d] = interp[d]->run_step(inputs, links[d]); });
    }
    for (std::thread& t : threads) t.join();
    std::vector<Expected<DeviceStepResult>> results;
    for (auto& r : out) results.push_back(std::move(*r));
    return results;
  }

  // One step of device d alone, on this thread.
  Expected<DeviceStepResult> step_one(size_t d,
                                      const std::vector<std::vector<HostTensor>>& inputs = {}) {
    return interp[d]->run_step(inputs, links[d]);
  }
};

void require_ok(const std::vector<Expected<DeviceStepResult>>& results) {
  for (size_t d = 0; d < results.size(); ++d) {
    if (!results[d].has_value()) FAIL("device " << d << ": " << results[d].status().to_string());
  }
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_CASE("kLoadInput copies the tile at its offset from its micro-batch's input",
          "[runtime][interpreter]") {
  Program p = pipeline(1);
  p.inputs = {"x", "ids"};
  p.input_shapes = {Shape{4, 6}, Shape{5}};
  p.input_dtypes = {DType::kF32, DType::kI32};
  DeviceProgram& dp = p.devices[0];
  dp.buffers = {persistent_buffer("out", Shape{2, 3}), step_buffer("x tile", Shape{2, 3}),
                persistent_buffer("ids out", Shape{2}, DType::kI32),
                step_buffer("ids tile", Shape{2}, DType::kI32)};
  dp.instructions = {load(0, 1, 1, {2, 3}), copy_whole(1, 0, {2, 3}), load(1, 0, 3, {3}),
                     copy_whole(3, 2, {2})};
  expose(p, 0, 0);
  expose(p, 0, 2);
  // x of micro-batch mb holds 100 mb + 10 row + column; ids of micro-batch 0 hold 7 .. 11.
  std::vector<std::vector<HostTensor>> inputs;
  for (int mb = 0; mb < 2; ++mb) {
    std::vector<float> x;
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 6; ++c) x.push_back(static_cast<float>(100 * mb + 10 * r + c));
    }
    inputs.push_back({HostTensor::from_f32(Shape{4, 6}, x),
                      HostTensor::from_i32(Shape{5}, {7 + 10 * mb, 8, 9, 10, 11})});
  }
  Harness h(p);
  auto r = h.step_one(0, inputs);
  if (!r.has_value()) FAIL(r.status().to_string());
  // Rows 2..3, columns 3..5 of micro-batch 1.
  CHECK(tile(h[0], 0) == std::vector<float>{123, 124, 125, 133, 134, 135});
  const kernels::TensorView ids = h[0].persistent(1);
  CHECK(ids.i32()[0] == 10);
  CHECK(ids.i32()[1] == 11);
}

TEST_CASE("kCopyBox copies one box between offsets and leaves the rest of the output",
          "[runtime][interpreter]") {
  Program p = pipeline(1);
  DeviceProgram& dp = p.devices[0];
  dp.buffers = {persistent_buffer("src", Shape{3, 4}), persistent_buffer("dst", Shape{4, 5})};
  Instruction box = make(Opcode::kCopyBox, {0}, {1}, "box");
  box.src_offset = {1, 1};
  box.dst_offset = {2, 0};
  box.extent = {2, 3};
  dp.instructions = {box};
  expose(p, 0, 0);
  expose(p, 0, 1);
  Harness h(p);
  set_tile(h[0], 0, iota(12, 0.0f));
  set_tile(h[0], 1, std::vector<float>(20, -1.0f));
  REQUIRE(h.step_one(0).has_value());
  std::vector<float> want(20, -1.0f);
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 3; ++c) want[static_cast<size_t>((2 + r) * 5 + c)] = (1 + r) * 4 + 1 + c;
  }
  CHECK(tile(h[0], 1) == want);
  CHECK(tile(h[0], 0) == iota(12, 0.0f));
}

TEST_CASE("kAccumulate overwrites on the first micro-batch and adds after it; kScale scales",
          "[runtime][interpreter]") {
  // Three micro-batches of x [3] summed into the persistent "acc" and averaged, two steps.
  Program p = pipeline(1);
  p.inputs = {"x"};
  p.input_shapes = {Shape{3}};
  p.input_dtypes = {DType::kF32};
  DeviceProgram& dp = p.devices[0];
  dp.buffers = {persistent_buffer("acc", Shape{3})};
  for (int32_t mb = 0; mb < 3; ++mb) {
    dp.buffers.push_back(step_buffer(fmt::format("x #{}", mb), Shape{3}));
    dp.instructions.push_back(load(0, mb, mb + 1, {0}));
    Instruction acc = make(Opcode::kAccumulate, {mb + 1}, {0}, "accumulate");
    acc.first = mb == 0;
    acc.micro_batch = mb;
    dp.instructions.push_back(acc);
    dp.instructions.push_back(make(Opcode::kFree, {mb + 1}, {}, "free"));
  }
  Instruction avg = make(Opcode::kScale, {0}, {0}, "average");
  avg.factor = 1.0f / 3.0f;
  dp.instructions.push_back(avg);
  expose(p, 0, 0);
  REQUIRE(validate_program(p).is_ok());
  Harness h(p);
  set_tile(h[0], 0, {1000, 1000, 1000});  // overwritten by the first accumulation
  for (int step = 0; step < 2; ++step) {
    std::vector<std::vector<HostTensor>> inputs;
    std::vector<float> want(3, 0.0f);
    for (int mb = 0; mb < 3; ++mb) {
      const std::vector<float> x = iota(3, static_cast<float>(10 * step + mb), 2.0f);
      for (size_t k = 0; k < 3; ++k) want[k] += x[k];
      inputs.push_back({HostTensor::from_f32(Shape{3}, x)});
    }
    for (float& w : want) w *= 1.0f / 3.0f;
    INFO("step " << step);
    REQUIRE(h.step_one(0, inputs).has_value());
    const std::vector<float> got = tile(h[0], 0);
    for (size_t k = 0; k < 3; ++k) CHECK(got[k] == Approx(want[k]));
  }
}

// A LocalOp of kind `kind` with one output of `shape` from inputs of the same shape.
LocalOp local(OpKind kind, const std::string& name, int inputs, const Shape& shape) {
  LocalOp l;
  l.op.kind = kind;
  l.op.name = name;
  l.inputs.assign(static_cast<size_t>(inputs), shape);
  l.outputs = {shape};
  return l;
}

TEST_CASE("kRun runs the device's local op on its buffers and applies its output scale",
          "[runtime][interpreter]") {
  Program p = pipeline(1);
  DeviceProgram& dp = p.devices[0];
  dp.buffers = {persistent_buffer("x", Shape{2, 3}), persistent_buffer("y", Shape{2, 3}),
                persistent_buffer("z", Shape{6})};
  LocalOp affine = local(OpKind::kScale, "affine", 1, Shape{2, 3});
  affine.op.attrs.alpha = 2.0f;
  affine.op.attrs.beta = 1.0f;
  LocalOp halved = local(OpKind::kScale, "halved", 1, Shape{6});  // reads y as [6]
  halved.op.attrs.alpha = 3.0f;
  halved.output_scale = 0.5f;
  dp.ops = {affine, halved};
  Instruction r0 = make(Opcode::kRun, {0}, {1}, "affine");
  r0.op = 0;
  Instruction r1 = make(Opcode::kRun, {1}, {2}, "halved");
  r1.op = 1;
  dp.instructions = {r0, r1};
  for (int32_t b = 0; b < 3; ++b) expose(p, 0, b);
  Harness h(p);
  const std::vector<float> x = {-1, 0, 1, 2, 3, 4.5f};
  set_tile(h[0], 0, x);
  REQUIRE(h.step_one(0).has_value());
  std::vector<float> y;
  std::vector<float> z;
  for (float v : x) {
    y.push_back(2 * v + 1);
    z.push_back(3 * (2 * v + 1) * 0.5f);
  }
  CHECK(tile(h[0], 1) == y);
  CHECK(tile(h[0], 2) == z);
}

// A one-collective program on a (d0, d1) mesh: persistent "in" of `in_shape` and "out" of
// `out_shape`, exposed as tiles 0 and 1.
Program collective_program(int64_t d0, int64_t d1, CollectiveKind kind, int axis, const char* spec,
                           const char* after, const Shape& full, const Shape& in_shape,
                           const Shape& out_shape) {
  Program p = mesh_stage(d0, d1);
  for (DeviceProgram& dp : p.devices) {
    dp.buffers = {persistent_buffer("in", in_shape), persistent_buffer("out", out_shape)};
    Instruction c = make(Opcode::kCollective, {0}, {1}, mesh::collective_name(kind));
    c.collective.kind = kind;
    c.collective.axis = axis;
    c.spec = *mesh::parse_sharding(spec);
    c.collective.after = *mesh::parse_sharding(after);
    c.shape = full;
    dp.instructions = {c};
    expose(p, dp.device, 0);
    expose(p, dp.device, 1);
  }
  return p;
}

// Row-major [rows, cols] tensor t[r][c] = 10 r + c + base.
std::vector<float> grid_values(int64_t rows, int64_t cols, float base) {
  std::vector<float> v;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) v.push_back(static_cast<float>(10 * r + c) + base);
  }
  return v;
}

// The box rows [r0, r1) x columns [c0, c1) of a row-major tensor with `cols` columns.
std::vector<float> box_of(const std::vector<float>& t, int64_t cols, int64_t r0, int64_t r1,
                          int64_t c0, int64_t c1) {
  std::vector<float> out;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) out.push_back(t[static_cast<size_t>(r * cols + c)]);
  }
  return out;
}

TEST_CASE("kCollective all-reduce sums the group's buffers, fused or not",
          "[runtime][interpreter]") {
  SECTION("one buffer, out of place") {
    Program p = collective_program(2, 1, CollectiveKind::kAllReduce, 0, "R,R | P0", "R,R",
                                   Shape{2, 3}, Shape{2, 3}, Shape{2, 3});
    Harness h(p);
    set_tile(h[0], 0, iota(6, 1.0f));
    set_tile(h[1], 0, iota(6, 100.0f, 10.0f));
    require_ok(h.step());
    std::vector<float> sum(6);
    for (size_t k = 0; k < 6; ++k) sum[k] = (1.0f + k) + (100.0f + 10.0f * k);
    for (size_t d = 0; d < 2; ++d) {
      CHECK(tile(h[d], 1) == sum);
      CHECK(tile(h[d], 0) == (d == 0 ? iota(6, 1.0f) : iota(6, 100.0f, 10.0f)));  // unchanged
    }
  }
  SECTION("two buffers in one fused instruction") {
    Program p = mesh_stage(2, 1);
    for (DeviceProgram& dp : p.devices) {
      dp.buffers = {persistent_buffer("a", Shape{3}), persistent_buffer("b", Shape{5})};
      Instruction c = make(Opcode::kCollective, {0, 1}, {0, 1}, "fused");
      c.collective.kind = CollectiveKind::kAllReduce;
      dp.instructions = {c};
      expose(p, dp.device, 0);
      expose(p, dp.device, 1);
    }
    Harness h(p);
    for (size_t d = 0; d < 2; ++d) {
      set_tile(h[d], 0, iota(3, static_cast<float>(d + 1)));
      set_tile(h[d], 1, iota(5, static_cast<float>(10 * (d + 1)), -1.0f));
    }
    for (int step = 0; step < 2; ++step) {  // the packing buffer is reused
      require_ok(h.step());
      for (size_t d = 0; d < 2; ++d) {
        INFO("step " << step << " device " << d);
        const float f = step == 0 ? 1.0f : 2.0f;  // the second step sums the sums
        CHECK(tile(h[d], 0) == std::vector<float>{3 * f, 5 * f, 7 * f});
        CHECK(tile(h[d], 1) == std::vector<float>{30 * f, 28 * f, 26 * f, 24 * f, 22 * f});
      }
    }
  }
}

TEST_CASE("kCollective all-gather assembles the tiles of a split dim", "[runtime][interpreter]") {
  const std::vector<float> full = grid_values(4, 6, 1.0f);
  SECTION("dim 0 over mesh axis 0") {
    Program p = collective_program(2, 1, CollectiveKind::kAllGather, 0, "S0,R", "R,R", Shape{4, 6},
                                   Shape{2, 6}, Shape{4, 6});
    Harness h(p);
    for (size_t d = 0; d < 2; ++d) set_tile(h[d], 0, box_of(full, 6, 2 * d, 2 * d + 2, 0, 6));
    require_ok(h.step());
    CHECK(tile(h[0], 1) == full);
    CHECK(tile(h[1], 1) == full);
  }
  SECTION("dim 1 over mesh axis 1") {
    Program p = collective_program(1, 2, CollectiveKind::kAllGather, 1, "R,S1", "R,R", Shape{4, 6},
                                   Shape{4, 3}, Shape{4, 6});
    Harness h(p);
    for (size_t d = 0; d < 2; ++d) set_tile(h[d], 0, box_of(full, 6, 0, 4, 3 * d, 3 * d + 3));
    require_ok(h.step());
    CHECK(tile(h[0], 1) == full);
    CHECK(tile(h[1], 1) == full);
  }
}

TEST_CASE("kCollective reduce-scatter leaves each device its chunk of the sum",
          "[runtime][interpreter]") {
  Program p = collective_program(2, 1, CollectiveKind::kReduceScatter, 0, "R,R | P0", "S0,R",
                                 Shape{4, 3}, Shape{4, 3}, Shape{2, 3});
  Harness h(p);
  const std::vector<float> a = grid_values(4, 3, 0.0f);
  const std::vector<float> b = grid_values(4, 3, 0.5f);
  set_tile(h[0], 0, a);
  set_tile(h[1], 0, b);
  require_ok(h.step());
  std::vector<float> sum(12);
  for (size_t k = 0; k < 12; ++k) sum[k] = a[k] + b[k];
  CHECK(tile(h[0], 1) == box_of(sum, 3, 0, 2, 0, 3));
  CHECK(tile(h[1], 1) == box_of(sum, 3, 2, 4, 0, 3));
}

TEST_CASE("kCollective all-to-all moves a split from one dim to another",
          "[runtime][interpreter]") {
  // [4, 6] from rows split over axis 0 ("S0,R", tiles [2, 6]) to columns ("R,S0", [4, 3]).
  Program p = collective_program(2, 1, CollectiveKind::kAllToAll, 0, "S0,R", "R,S0", Shape{4, 6},
                                 Shape{2, 6}, Shape{4, 3});
  for (DeviceProgram& dp : p.devices) {
    dp.instructions[0].collective.dim = 0;
    dp.instructions[0].collective.split_dim = 1;
  }
  Harness h(p);
  const std::vector<float> full = grid_values(4, 6, 0.0f);
  for (size_t d = 0; d < 2; ++d) set_tile(h[d], 0, box_of(full, 6, 2 * d, 2 * d + 2, 0, 6));
  require_ok(h.step());
  CHECK(tile(h[0], 1) == box_of(full, 6, 0, 4, 0, 3));
  CHECK(tile(h[1], 1) == box_of(full, 6, 0, 4, 3, 6));
}

TEST_CASE("kSend and kRecv move bytes between devices, matched by tag", "[runtime][interpreter]") {
  // Device 0 sends "a" (tag 1) then "b" (tag 2); device 1 posts the receive of b first.
  Program p = pipeline(2);
  DeviceProgram& d0 = p.devices[0];
  d0.buffers = {persistent_buffer("a", Shape{4}), persistent_buffer("b", Shape{2, 3})};
  Instruction sa = make(Opcode::kSend, {0}, {}, "send a");
  sa.peer = 1;
  sa.tag = 1;
  Instruction sb = make(Opcode::kSend, {1}, {}, "send b");
  sb.peer = 1;
  sb.tag = 2;
  d0.instructions = {sa, sb};
  DeviceProgram& d1 = p.devices[1];
  d1.buffers = {step_buffer("rb", Shape{2, 3}), step_buffer("ra", Shape{4}),
                persistent_buffer("a", Shape{4}), persistent_buffer("b", Shape{2, 3})};
  Instruction rb = make(Opcode::kRecv, {}, {0}, "recv b");
  rb.peer = 0;
  rb.tag = 2;
  Instruction ra = make(Opcode::kRecv, {}, {1}, "recv a");
  ra.peer = 0;
  ra.tag = 1;
  d1.instructions = {rb,
                     ra,
                     copy_whole(1, 2, {4}),
                     copy_whole(0, 3, {2, 3}),
                     make(Opcode::kFree, {0}, {}, "free"),
                     make(Opcode::kFree, {1}, {}, "free")};
  expose(p, 0, 0);
  expose(p, 0, 1);
  expose(p, 1, 2);
  expose(p, 1, 3);
  REQUIRE(validate_program(p).is_ok());
  Harness h(p);
  for (int step = 0; step < 2; ++step) {
    INFO("step " << step);
    const float base = 10.0f * static_cast<float>(step);
    set_tile(h[0], 0, iota(4, base + 1.0f));
    set_tile(h[0], 1, iota(6, base - 3.0f, 0.5f));
    require_ok(h.step());
    CHECK(tile(h[1], 0) == iota(4, base + 1.0f));
    CHECK(tile(h[1], 1) == iota(6, base - 3.0f, 0.5f));
  }
}

TEST_CASE("kReportLoss reports each micro-batch's scalar", "[runtime][interpreter]") {
  Program p = pipeline(1);
  p.inputs = {"loss"};
  p.input_shapes = {Shape{1}};
  p.input_dtypes = {DType::kF32};
  DeviceProgram& dp = p.devices[0];
  for (int32_t mb = 0; mb < 2; ++mb) {
    dp.buffers.push_back(step_buffer(fmt::format("loss #{}", mb), Shape{1}));
    dp.instructions.push_back(load(0, mb, mb, {0}));
    Instruction report = make(Opcode::kReportLoss, {mb}, {}, "loss");
    report.micro_batch = mb;
    dp.instructions.push_back(report);
  }
  Harness h(p);
  auto r = h.step_one(
      0, {{HostTensor::from_f32(Shape{1}, {0.25f})}, {HostTensor::from_f32(Shape{1}, {1.5f})}});
  REQUIRE(r.has_value());
  REQUIRE(r->losses.size() == 2);
  CHECK(r->losses[0] == std::make_pair(int32_t{0}, 0.25));
  CHECK(r->losses[1] == std::make_pair(int32_t{1}, 1.5));
}

TEST_CASE("kFree releases a buffer: peak bytes count persistent tiles and live step buffers",
          "[runtime][interpreter]") {
  // A 64-byte persistent weight and two 4 KiB step buffers, freed in between or not.
  const auto make_program = [](bool free_early) {
    Program p = pipeline(1);
    DeviceProgram& dp = p.devices[0];
    dp.buffers = {persistent_buffer("w", Shape{16}), step_buffer("a", Shape{1024}),
                  step_buffer("b", Shape{1024})};
    Instruction to_a = copy_whole(0, 1, {16});
    Instruction to_b = copy_whole(0, 2, {16});
    if (free_early) {
      dp.instructions = {to_a, make(Opcode::kFree, {1}, {}, "free a"), to_b,
                         make(Opcode::kFree, {2}, {}, "free b")};
    } else {
      dp.instructions = {to_a, to_b, make(Opcode::kFree, {1}, {}, "free a"),
                         make(Opcode::kFree, {2}, {}, "free b")};
    }
    return p;
  };
  const Program early = make_program(true);
  const Program late = make_program(false);
  Harness he(early);
  Harness hl(late);
  CHECK(he[0].persistent_bytes() == 64);
  for (int step = 0; step < 2; ++step) {  // the same peak every step: nothing leaks
    INFO("step " << step);
    auto a = he.step_one(0);
    auto b = hl.step_one(0);
    REQUIRE(a.has_value());
    REQUIRE(b.has_value());
    CHECK(a->peak_bytes == 64 + 4096);
    CHECK(b->peak_bytes == 64 + 2 * 4096);
  }

  // A step buffer the program leaves allocated is released at the end of the step.
  Program kept = make_program(false);
  kept.devices[0].instructions.resize(2);  // no frees
  Harness hk(kept);
  for (int step = 0; step < 2; ++step) {
    auto r = hk.step_one(0);
    REQUIRE(r.has_value());
    CHECK(r->peak_bytes == 64 + 2 * 4096);
  }

  // After its free, a buffer reads as never written.
  Program reread = make_program(true);
  reread.devices[0].instructions.push_back(copy_whole(1, 0, {16}));
  Harness hr(reread);
  auto r = hr.step_one(0);
  REQUIRE_FALSE(r.has_value());
  CHECK(contains(r.status().message(), "device 0 instruction 4 (copy-box 'copy')"));
  CHECK(contains(r.status().message(), "buffer 'a' is read before it is written"));
}

TEST_CASE("a step error names device, instruction and cause", "[runtime][interpreter]") {
  SECTION("a read before the buffer is written") {
    Program p = pipeline(2);
    p.devices[1].buffers = {step_buffer("t", Shape{4}), persistent_buffer("w", Shape{4})};
    p.devices[1].instructions = {copy_whole(1, 0, {4}), make(Opcode::kFree, {0}, {}, "free t"),
                                 make(Opcode::kScale, {0}, {0}, "halve t")};
    Harness h(p);
    auto r = h.step_one(1);
    REQUIRE_FALSE(r.has_value());
    INFO(r.status().to_string());
    CHECK(r.status().code() == Errc::kInternal);
    CHECK(r.status().message() ==
          "device 1 instruction 2 (scale 'halve t'): buffer 't' is read before it is written");
  }
  SECTION("a data input that is missing or of another shape") {
    Program p = pipeline(1);
    p.inputs = {"x"};
    p.input_shapes = {Shape{4, 6}};
    p.input_dtypes = {DType::kF32};
    p.devices[0].buffers = {step_buffer("x #1", Shape{2, 6})};
    p.devices[0].instructions = {load(0, 1, 0, {2, 0})};
    Harness h(p);
    auto missing = h.step_one(0, {{HostTensor(Shape{4, 6}, DType::kF32)}});  // one micro-batch
    REQUIRE_FALSE(missing.has_value());
    INFO(missing.status().to_string());
    CHECK(missing.status().code() == Errc::kInvalidArgument);
    CHECK(contains(missing.status().message(), "device 0 instruction 0 (load-input 'load 0 #1')"));
    CHECK(contains(missing.status().message(), "data input 0 of micro-batch 1 is missing"));
    auto shape = h.step_one(
        0, {{HostTensor(Shape{4, 6}, DType::kF32)}, {HostTensor(Shape{3, 6}, DType::kF32)}});
    REQUIRE_FALSE(shape.has_value());
    INFO(shape.status().to_string());
    CHECK(contains(shape.status().message(),
                   "data input 'x' has shape [3, 6], the program expects [4, 6]"));
  }
  SECTION("a receive that times out, at the instruction that reads it") {
    Program p = pipeline(2);
    p.devices[0].buffers = {step_buffer("r", Shape{4}), persistent_buffer("w", Shape{4})};
    Instruction rv = make(Opcode::kRecv, {}, {0}, "recv r");
    rv.peer = 1;
    rv.tag = 9;
    p.devices[0].instructions = {rv, copy_whole(0, 1, {4})};
    InterpreterOptions o;
    o.timeout = milliseconds(50);
    Harness h(p, o);
    auto r = h.step_one(0);  // device 1 never sends
    REQUIRE_FALSE(r.has_value());
    INFO(r.status().to_string());
    CHECK(r.status().code() == Errc::kTimeout);
    CHECK(contains(r.status().message(), "device 0 instruction 1 (copy-box 'copy')"));
    CHECK(contains(r.status().message(), "recv from endpoint 1 tag 9"));
    CHECK(contains(r.status().message(), "within 50 ms"));
  }
  SECTION("an injected kernel failure") {
    Program p = pipeline(2);
    p.devices[1].buffers = {persistent_buffer("x", Shape{4}), persistent_buffer("y", Shape{4})};
    p.devices[1].ops = {local(OpKind::kScale, "layer0/fc", 1, Shape{4})};
    Instruction run = make(Opcode::kRun, {0}, {1}, "layer0/fc #0");
    run.op = 0;
    p.devices[1].instructions = {run};
    InterpreterOptions o;
    o.fail_op = "layer0/fc";
    Harness h(p, o);
    auto r = h.step_one(1);
    REQUIRE_FALSE(r.has_value());
    INFO(r.status().to_string());
    CHECK(r.status().code() == Errc::kInternal);
    CHECK(r.status().message() ==
          "device 1 instruction 0 (run 'layer0/fc #0'): injected kernel failure in op "
          "'layer0/fc'");
    o.fail_op = "layer1/fc";  // another op's name: this one runs
    Harness other(p, o);
    CHECK(other.step_one(1).has_value());
  }
  SECTION("a send without a transport, a receive nobody reads") {
    Program p = pipeline(2);
    p.devices[0].buffers = {persistent_buffer("w", Shape{4})};
    Instruction s = make(Opcode::kSend, {0}, {}, "send w");
    s.peer = 1;
    s.tag = 3;
    p.devices[0].instructions = {s};
    p.devices[1].buffers = {step_buffer("r", Shape{4})};
    Instruction rv = make(Opcode::kRecv, {}, {0}, "recv w");
    rv.peer = 0;
    rv.tag = 3;
    p.devices[1].instructions = {rv};
    Harness h(p);
    auto no_transport = h[0].run_step({}, DeviceLinks{});
    REQUIRE_FALSE(no_transport.has_value());
    CHECK(no_transport.status().message() == "device 0 instruction 0: no transport");
    auto results = h.step();
    REQUIRE(results[0].has_value());
    REQUIRE_FALSE(results[1].has_value());
    CHECK(results[1].status().message() == "device 1: receive into 'r' was never read");
  }
  SECTION("a device without a program") {
    Program p = pipeline(1);
    auto made = DeviceInterpreter::create(p, 3);
    REQUIRE_FALSE(made.has_value());
    CHECK(made.status().code() == Errc::kInvalidArgument);
    CHECK(made.status().message() == "device 3 has no program");
  }
}

TEST_CASE("a data input of another dtype is named as such", "[runtime][interpreter]") {
  // kLoadInput refuses an input whose shape or dtype differs (the message once spoke of shapes
  // only: "data input 'x' has shape [4, 6], the program expects [4, 6]").
  Program p = pipeline(1);
  p.inputs = {"x"};
  p.input_shapes = {Shape{4, 6}};
  p.input_dtypes = {DType::kF32};
  p.devices[0].buffers = {step_buffer("x #0", Shape{4, 6})};
  p.devices[0].instructions = {load(0, 0, 0, {0, 0})};
  Harness h(p);
  auto r = h.step_one(0, {{HostTensor(Shape{4, 6}, DType::kI32)}});
  REQUIRE_FALSE(r.has_value());
  INFO(r.status().to_string());
  CHECK(contains(r.status().message(), "i32"));
}

TEST_CASE("check_finite names the op that wrote Inf", "[runtime][interpreter]") {
  Program p = pipeline(1);
  DeviceProgram& dp = p.devices[0];
  dp.buffers = {persistent_buffer("x", Shape{3}), persistent_buffer("zero", Shape{3}),
                persistent_buffer("q", Shape{3})};
  dp.ops = {local(OpKind::kDiv, "layer1/ratio", 2, Shape{3})};
  Instruction run = make(Opcode::kRun, {0, 1}, {2}, "layer1/ratio #0");
  run.op = 0;
  dp.instructions = {run};
  expose(p, 0, 0);
  expose(p, 0, 1);
  expose(p, 0, 2);
  const auto step = [&](bool check, const std::vector<float>& den) {
    InterpreterOptions o;
    o.check_finite = check;
    Harness h(p, o);
    set_tile(h[0], 0, {1, 2, 3});
    set_tile(h[0], 1, den);
    auto r = h.step_one(0);
    return std::make_pair(r.status(), tile(h[0], 2));
  };
  const auto [finite, q] = step(true, {1, 2, 4});
  CHECK(finite.is_ok());
  CHECK(q == std::vector<float>{1, 1, 0.75f});
  const auto [inf, q_inf] = step(true, {1, 0, 1});
  REQUIRE_FALSE(inf.is_ok());
  INFO(inf.to_string());
  CHECK(inf.code() == Errc::kNumerics);
  CHECK(contains(inf.message(), "device 0 instruction 0 (run 'layer1/ratio #0')"));
  CHECK(contains(inf.message(),
                 "op 'layer1/ratio' (div) wrote a non-finite value (inf) at "
                 "element 1 of output 0"));
  const auto [unchecked, q_unchecked] = step(false, {1, 0, 1});
  CHECK(unchecked.is_ok());  // without the check the step runs through
  CHECK(std::isinf(q_unchecked[1]));
}

}  // namespace
}  // namespace meshpipe::runtime
