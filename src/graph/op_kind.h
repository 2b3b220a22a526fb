// The op kinds of the graph IR: the closed set lives in core (core/op_kind.h), shared with the
// kernel backend table; the graph names them as its own.
#pragma once

#include "core/op_kind.h"

namespace meshpipe::graph {

using meshpipe::kNumOpKinds;
using meshpipe::op_kind_info;
using meshpipe::op_kind_name;
using meshpipe::OpKind;
using meshpipe::OpKindInfo;
using meshpipe::parse_op_kind;

}  // namespace meshpipe::graph
