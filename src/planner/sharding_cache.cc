// Stage fingerprints and the sharding cache.
#include "planner/sharding_cache.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <optional>
#include <set>
#include <thread>

#include "planner/ilp.h"

namespace meshpipe::planner {
namespace {

// Optimizer hyper-parameters (learning rate, momentum, betas, weight decay) change no shape,
// cost or layout, so they are left out: a plan stays valid for another learning rate.
std::string attrs_text(const graph::OpAttrs& a) {
  return fmt::format(
      "dot[{}|{}|{}|{}] axes[{}] shape{} axis{} start{} end{} win[{},{},{},{},{},{}] causal{} "
      "k{} cap{} a{} b{} eps{}",
      fmt::join(a.dot.lhs_batch, ","), fmt::join(a.dot.rhs_batch, ","),
      fmt::join(a.dot.lhs_contract, ","), fmt::join(a.dot.rhs_contract, ","),
      fmt::join(a.axes, ","), a.shape.to_string(), a.axis, a.start, a.end, a.window.kernel_h,
      a.window.kernel_w, a.window.stride_h, a.window.stride_w, a.window.pad_h, a.window.pad_w,
      a.causal, a.k, a.capacity, a.alpha, a.beta, a.eps);
}

std::string mesh_key(const mesh::LogicalMesh& m) {
  return fmt::format("{}x{} a{:.17g},{:.17g} b{:.17g},{:.17g}", m.shape[0], m.shape[1], m.alpha[0],
                     m.alpha[1], m.beta[0], m.beta[1]);
}

}  // namespace

StageFingerprint stage_fingerprint(const graph::Graph& g, int32_t first, int32_t last) {
  StageFingerprint f;
  std::map<ValueId, size_t> number;
  const auto id_of = [&](ValueId v) {
    auto it = number.find(v);
    if (it != number.end()) return it->second;
    const graph::Value& val = g.value(v);
    const size_t n = f.values.size();
    number.emplace(v, n);
    f.values.push_back(v);
    // External values are described by what they are; produced ones by their producer.
    f.text += fmt::format("v{}:{}:{}:{};", n, val.shape.to_string(), dtype_name(val.dtype),
                          value_role_name(val.role));
    return n;
  };
  for (int64_t i = 0; i < g.num_ops(); ++i) {
    const graph::Op& op = g.ops()[static_cast<size_t>(i)];
    if (first >= 0 && (op.layer < first || op.layer > last)) continue;
    f.ops.push_back(OpId(static_cast<int32_t>(i)));
    std::vector<size_t> ins;
    for (ValueId in : op.inputs) ins.push_back(id_of(in));
    std::vector<size_t> outs;
    for (ValueId out : op.outputs) outs.push_back(id_of(out));
    f.text += fmt::format("{}({}){}->({});", op_kind_name(op.kind), fmt::join(ins, ","),
                          attrs_text(op.attrs), fmt::join(outs, ","));
  }
  // Which produced values are also read outside the range (they leave the stage).
  std::vector<bool> read_outside(static_cast<size_t>(g.num_values()), false);
  for (const graph::Op& op : g.ops()) {
    if (first < 0 || (op.layer >= first && op.layer <= last)) continue;
    for (ValueId in : op.inputs) read_outside[in.index()] = true;
  }
  for (size_t n = 0; n < f.values.size(); ++n) {
    if (read_outside[f.values[n].index()]) f.text += fmt::format("out{};", n);
  }
  for (const graph::Alias& a : g.aliases()) {
    auto s = number.find(a.source);
    auto u = number.find(a.updated);
    if (s != number.end() && u != number.end()) {
      f.text += fmt::format("alias{}={};", s->second, u->second);
    }
  }
  return f;
}

std::string ShardingCache::key_of(const mesh::LogicalMesh& mesh, const ShardingOptions& options,
                                  const StageFingerprint& f) {
  return fmt::format("{}|{}|M{:.17g}|Z{}|B{}|F{}|I{}|P{}|C{}|{}", mesh_key(mesh),
                     options.solver.time_limit_seconds, options.memory_budget,
                     options.prefer_reduce_scatter, options.micro_batches,
                     static_cast<int>(options.force_batch_to_axis0), options.batch_split_inputs,
                     static_cast<int>(options.parameter_mode), options.canonical_boundaries,
                     f.text);
}

void ShardingCache::prefetch(const graph::Graph& g, const std::vector<ShardRequest>& requests,
                             const CostModel& cost, int threads) {
  if (threads <= 1) return;
  // The distinct problems not cached yet, in request order.
  struct Job {
    const ShardRequest* request = nullptr;
    std::string key;
    StageFingerprint fingerprint;
    std::optional<Expected<ShardingPlan>> result;
  };
  std::vector<Job> jobs;
  std::set<std::string> queued;
  for (const ShardRequest& r : requests) {
    StageFingerprint f = r.fingerprint != nullptr
                             ? *r.fingerprint
                             : stage_fingerprint(g, r.options.first_layer, r.options.last_layer);
    std::string key = key_of(r.mesh, r.options, f);
    if (entries_.count(key) != 0 || !queued.insert(key).second) continue;
    jobs.push_back({&r, std::move(key), std::move(f), std::nullopt});
  }
  if (jobs.size() < 2) return;
  std::atomic<size_t> next{0};
  const auto work = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      jobs[i].result = shard_stage(g, jobs[i].request->mesh, cost, jobs[i].request->options);
    }
    release_solver_thread();
  };
  std::vector<std::thread> pool;
  const size_t n = std::min(jobs.size(), static_cast<size_t>(threads));
  for (size_t t = 1; t < n; ++t) pool.emplace_back(work);
  for (size_t i = next++; i < jobs.size(); i = next++) {  // this thread works too
    jobs[i].result = shard_stage(g, jobs[i].request->mesh, cost, jobs[i].request->options);
  }
  for (std::thread& t : pool) t.join();
  for (Job& j : jobs) {
    if (!j.result || !j.result->has_value()) continue;
    ++solves_;
    prefetched_.insert(j.key);
    entries_.emplace(std::move(j.key), Entry{std::move(**j.result), std::move(j.fingerprint.ops),
                                             std::move(j.fingerprint.values)});
  }
}

Expected<ShardingPlan> ShardingCache::shard(const graph::Graph& g, const mesh::LogicalMesh& mesh,
                                            const CostModel& cost, const ShardingOptions& options,
                                            const StageFingerprint* fingerprint) {
  std::optional<StageFingerprint> own;
  if (fingerprint == nullptr) {
    own = stage_fingerprint(g, options.first_layer, options.last_layer);
    fingerprint = &*own;
  }
  const StageFingerprint& f = *fingerprint;
  const std::string key = key_of(mesh, options, f);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    MP_ASSIGN_OR_RETURN(ShardingPlan plan, shard_stage(g, mesh, cost, options));
    ++solves_;
    it = entries_.emplace(key, Entry{std::move(plan), f.ops, f.values}).first;
    return it->second.plan;
  }
  if (prefetched_.erase(key) == 0) ++hits_;
  const Entry& e = it->second;
  ShardingPlan plan = e.plan;
  std::map<OpId, OpId> op_map;
  for (size_t i = 0; i < e.ops.size(); ++i) op_map[e.ops[i]] = f.ops[i];
  std::map<ValueId, ValueId> value_map;
  for (size_t i = 0; i < e.values.size(); ++i) value_map[e.values[i]] = f.values[i];
  for (OpDecision& d : plan.ops) d.op = op_map.at(d.op);
  plan.specs.clear();
  for (const auto& [v, s] : e.plan.specs) plan.specs[value_map.at(v)] = s;
  return plan;
}

}  // namespace meshpipe::planner
