// CollectiveKind: the collectives a resharding or a profile names (mesh/resharding.h prices them,
// mesh/device_profile.h holds their measured times).
#pragma once

#include <cstdint>
#include <string>

namespace meshpipe::mesh {

/// Collective operations within the groups along one mesh axis.
enum class CollectiveKind : uint8_t {
  kAllGather,      ///< concatenate tiles of the group along a tensor dim
  kReduceScatter,  ///< sum partial tiles of the group, each device keeps one chunk of a dim
  kAllReduce,      ///< sum partial tiles of the group, everyone keeps the sum
  kAllToAll,       ///< split a dim into group-size chunks, exchange, concatenate along another
  kSlice,          ///< keep this device's chunk of a dim (no communication)
};

/// "all-gather", "reduce-scatter", "all-reduce", "all-to-all", "slice".
std::string collective_name(CollectiveKind k);

}  // namespace meshpipe::mesh
