// Recognising identical sub-problems: a structural fingerprint of a layer range, and a cache that
// solves each distinct (fingerprint, mesh, options) once and maps the answer onto every range
// with the same structure. Transformer blocks 1..L-2 of GPT are all alike, so the O(L^2) stage
// candidates of the inter-op pass need only O(L) intra-op solves.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "planner/sharding_pass.h"

namespace meshpipe::planner {

/// The ops of layers first..last in op order and every value they touch numbered by first
/// appearance, with a canonical text of kinds, attributes, shapes, dtypes, roles and wiring.
/// Two ranges with equal `text` are the same problem up to renaming, position by position.
struct StageFingerprint {
  std::string text;
  std::vector<OpId> ops;
  std::vector<ValueId> values;
};

/// Fingerprint of the ops tagged first..last (all layers when first < 0).
StageFingerprint stage_fingerprint(const graph::Graph& g, int32_t first, int32_t last);

/// One problem for ShardingCache::prefetch: what shard() would be asked.
struct ShardRequest {
  mesh::LogicalMesh mesh;
  ShardingOptions options;
  /// stage_fingerprint of the options' layer range, when the caller has it (else computed).
  const StageFingerprint* fingerprint = nullptr;
};

/// Solves each distinct sub-problem once (docs/style.md rule 5: the memo table is explicit state
/// owned by the caller).
class ShardingCache {
 public:
  /// shard_stage, or the cached plan of an identical problem with ops and values renamed.
  /// `fingerprint`, when given, must be stage_fingerprint(g, options.first_layer,
  /// options.last_layer) (callers asking about one range on many meshes compute it once).
  Expected<ShardingPlan> shard(const graph::Graph& g, const mesh::LogicalMesh& mesh,
                               const CostModel& cost, const ShardingOptions& options,
                               const StageFingerprint* fingerprint = nullptr);

  /// Solves every distinct problem among `requests` that is not cached yet, each once, on up to
  /// `threads` threads (the intra-op ILPs of different problems are independent), and caches
  /// the answers in request order; shard() then answers each request from the cache, exactly as
  /// if it had solved them itself, for any thread count. Problems without a plan (infeasible,
  /// timed out) are not cached: shard() meets their error again. threads <= 1: nothing is done.
  void prefetch(const graph::Graph& g, const std::vector<ShardRequest>& requests,
                const CostModel& cost, int threads);

  int64_t solves() const { return solves_; }
  int64_t hits() const { return hits_; }

 private:
  struct Entry {
    ShardingPlan plan;
    std::vector<OpId> ops;
    std::vector<ValueId> values;
  };
  static std::string key_of(const mesh::LogicalMesh& mesh, const ShardingOptions& options,
                            const StageFingerprint& f);
  std::map<std::string, Entry> entries_;
  std::set<std::string> prefetched_;  // solved by prefetch, not yet asked for: not a reuse
  int64_t solves_ = 0;
  int64_t hits_ = 0;
};

}  // namespace meshpipe::planner
