// ShardingSpec text form, validation against a shape and mesh, and the tile algebra.
#include "mesh/sharding.h"

#include <fmt/format.h>

#include <string_view>

#include "core/check.h"

namespace meshpipe::mesh {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "P0", "P1", "P01" (either order, each axis once) -> mask.
bool parse_partial(std::string_view token, uint8_t* mask) {
  if (token.size() < 2 || token.front() != 'P') return false;
  uint8_t m = 0;
  for (char ch : token.substr(1)) {
    if (ch != '0' && ch != '1') return false;
    const uint8_t bit = static_cast<uint8_t>(1u << (ch - '0'));
    if ((m & bit) != 0) return false;
    m = static_cast<uint8_t>(m | bit);
  }
  *mask = m;
  return true;
}

}  // namespace

std::string_view dim_sharding_name(DimSharding s) {
  switch (s) {
    case DimSharding::kR:
      return "R";
    case DimSharding::kS0:
      return "S0";
    case DimSharding::kS1:
      return "S1";
    case DimSharding::kS01:
      return "S01";
    case DimSharding::kS10:
      return "S10";
  }
  return "?";
}

bool parse_dim_sharding(std::string_view token, DimSharding* out) {
  for (DimSharding s : {DimSharding::kR, DimSharding::kS0, DimSharding::kS1, DimSharding::kS01,
                        DimSharding::kS10}) {
    if (token == dim_sharding_name(s)) {
      *out = s;
      return true;
    }
  }
  return false;
}

std::vector<int> dim_axes(DimSharding s) {
  switch (s) {
    case DimSharding::kR:
      return {};
    case DimSharding::kS0:
      return {0};
    case DimSharding::kS1:
      return {1};
    case DimSharding::kS01:
      return {0, 1};
    case DimSharding::kS10:
      return {1, 0};
  }
  return {};
}

DimSharding dim_sharding_of(const std::vector<int>& axes) {
  if (axes.empty()) return DimSharding::kR;
  if (axes.size() == 1) {
    MP_CHECK(axes[0] == 0 || axes[0] == 1) << "mesh axis " << axes[0] << " out of range";
    return axes[0] == 0 ? DimSharding::kS0 : DimSharding::kS1;
  }
  MP_CHECK(axes.size() == 2 && axes[0] != axes[1] && (axes[0] == 0 || axes[0] == 1) &&
           (axes[1] == 0 || axes[1] == 1))
      << "bad mesh axes for one dim";
  return axes[0] == 0 ? DimSharding::kS01 : DimSharding::kS10;
}

int64_t num_shards(DimSharding s, const LogicalMesh& mesh) {
  int64_t n = 1;
  for (int a : dim_axes(s)) n *= mesh.size(a);
  return n;
}

ShardingSpec ShardingSpec::replicated(int64_t rank) {
  ShardingSpec spec;
  spec.dims.assign(static_cast<size_t>(rank), DimSharding::kR);
  return spec;
}

uint8_t ShardingSpec::used_axes() const {
  uint8_t used = partial;
  for (DimSharding s : dims) {
    for (int a : dim_axes(s)) used = static_cast<uint8_t>(used | (1u << a));
  }
  return used;
}

int64_t ShardingSpec::num_tiles(const LogicalMesh& mesh) const {
  int64_t n = 1;
  for (DimSharding s : dims) n *= num_shards(s, mesh);
  return n;
}

std::string ShardingSpec::to_string() const {
  std::string out;
  if (dims.empty()) out = "scalar";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) out += ",";
    out += dim_sharding_name(dims[i]);
  }
  if (partial != 0) {
    out += " | P";
    for (int a = 0; a < 8; ++a) {
      if ((partial >> a) & 1u) out += static_cast<char>('0' + a);
    }
  }
  return out;
}

Expected<ShardingSpec> parse_sharding(const std::string& text) {
  std::string_view body = trim(text);
  ShardingSpec spec;
  const size_t bar = body.find('|');
  if (bar != std::string_view::npos) {
    const std::string_view p = trim(body.substr(bar + 1));
    if (!parse_partial(p, &spec.partial)) {
      return make_error(Errc::kInvalidArgument,
                        "sharding '{}': bad partial-sum part '{}' (expected P0, P1 or P01)", text,
                        p);
    }
    body = trim(body.substr(0, bar));
  }
  if (body == "scalar") return spec;
  if (body.empty()) {
    return make_error(Errc::kInvalidArgument,
                      "sharding '{}' is empty (a rank-0 tensor is written \"scalar\")", text);
  }
  while (true) {
    const size_t comma = body.find(',');
    const std::string_view token = trim(body.substr(0, comma));
    DimSharding s = DimSharding::kR;
    if (!parse_dim_sharding(token, &s)) {
      return make_error(Errc::kInvalidArgument,
                        "sharding '{}': bad dim '{}' (expected R, S0, S1, S01 or S10)", text,
                        token);
    }
    spec.dims.push_back(s);
    if (comma == std::string_view::npos) break;
    body = body.substr(comma + 1);
  }
  return spec;
}

Status validate_sharding(const Shape& shape, const ShardingSpec& spec, const LogicalMesh& mesh) {
  if (mesh.shape[0] < 1 || mesh.shape[1] < 1) {
    return make_error(Errc::kInvalidArgument, "mesh {} has an empty axis", mesh.to_string());
  }
  if (spec.dims.size() != static_cast<size_t>(shape.rank())) {
    return make_error(Errc::kInvalidArgument, "sharding '{}' has rank {} but shape {} has rank {}",
                      spec.to_string(), spec.dims.size(), shape.to_string(), shape.rank());
  }
  if ((spec.partial & ~3u) != 0) {
    return make_error(Errc::kInvalidArgument,
                      "sharding partial mask {} names a mesh axis other than 0 and 1",
                      static_cast<int>(spec.partial));
  }
  int64_t user[2] = {-1, -1};  // the dim that uses each mesh axis
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    for (int a : dim_axes(spec.dims[d])) {
      if (user[a] >= 0) {
        return make_error(Errc::kInvalidArgument,
                          "sharding '{}': mesh axis {} is used by dims {} and {}", spec.to_string(),
                          a, user[a], d);
      }
      user[a] = static_cast<int64_t>(d);
      if ((spec.partial >> a) & 1u) {
        return make_error(Errc::kInvalidArgument,
                          "sharding '{}': mesh axis {} splits dim {} and carries partial sums",
                          spec.to_string(), a, d);
      }
    }
  }
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    const int64_t size = shape[static_cast<int64_t>(d)];
    const int64_t n = num_shards(spec.dims[d], mesh);
    if (size < 0) {
      return make_error(Errc::kInvalidArgument, "shape {} has a negative dim", shape.to_string());
    }
    if (size % n != 0) {
      return make_error(Errc::kInvalidArgument,
                        "sharding '{}' on mesh {}: dim {} of size {} is not divisible by {} shards",
                        spec.to_string(), mesh.to_string(), d, size, n);
    }
  }
  return Status::ok();
}

Shape tile_shape(const Shape& shape, const ShardingSpec& spec, const LogicalMesh& mesh) {
  MP_CHECK(static_cast<size_t>(shape.rank()) == spec.dims.size()) << "rank mismatch";
  Shape tile = shape;
  for (int64_t d = 0; d < shape.rank(); ++d) {
    tile[d] = shape[d] / num_shards(spec.dims[static_cast<size_t>(d)], mesh);
  }
  return tile;
}

int64_t tile_bytes(const Shape& shape, int64_t dtype_bytes, const ShardingSpec& spec,
                   const LogicalMesh& mesh) {
  return tile_shape(shape, spec, mesh).numel() * dtype_bytes;
}

std::vector<DimRange> tile_ranges(const Shape& shape, const ShardingSpec& spec,
                                  const LogicalMesh& mesh, int64_t i0, int64_t i1) {
  MP_CHECK(static_cast<size_t>(shape.rank()) == spec.dims.size()) << "rank mismatch";
  const int64_t coord[2] = {i0, i1};
  std::vector<DimRange> ranges;
  ranges.reserve(spec.dims.size());
  for (int64_t d = 0; d < shape.rank(); ++d) {
    // Chunk index: the axes' coordinates as digits, outermost axis most significant.
    int64_t chunk = 0;
    int64_t n = 1;
    for (int a : dim_axes(spec.dims[static_cast<size_t>(d)])) {
      chunk = chunk * mesh.size(a) + coord[a];
      n *= mesh.size(a);
    }
    const int64_t len = shape[d] / n;
    ranges.push_back({chunk * len, (chunk + 1) * len});
  }
  return ranges;
}

}  // namespace meshpipe::mesh
