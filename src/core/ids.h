// Strong integer ids, so a value id is never passed where an op id is expected (docs/style.md rule
// 14).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>

namespace meshpipe {

/// An integer id tagged with the kind of thing it names. Default-constructed ids are invalid.
template <class Tag>
class StrongId {
 public:
  using Underlying = int32_t;
  constexpr StrongId() = default;
  constexpr explicit StrongId(Underlying v) : v_(v) {}

  constexpr Underlying value() const { return v_; }
  constexpr bool is_valid() const { return v_ >= 0; }
  /// The id as an index into a vector (only for valid ids).
  constexpr size_t index() const { return static_cast<size_t>(v_); }

  friend constexpr bool operator==(StrongId a, StrongId b) { return a.v_ == b.v_; }
  friend constexpr auto operator<=>(StrongId a, StrongId b) { return a.v_ <=> b.v_; }

 private:
  Underlying v_ = -1;
};

struct ValueIdTag {};
struct OpIdTag {};
struct LayerIdTag {};
struct DeviceIdTag {};

/// A value (tensor) of a graph.
using ValueId = StrongId<ValueIdTag>;
/// An operation of a graph.
using OpId = StrongId<OpIdTag>;
/// A device of a mesh or a cluster.
using DeviceId = StrongId<DeviceIdTag>;

}  // namespace meshpipe

template <class Tag>
struct std::hash<meshpipe::StrongId<Tag>> {
  size_t operator()(meshpipe::StrongId<Tag> id) const noexcept {
    return std::hash<int32_t>()(id.value());
  }
};
