// Mixed-precision training graphs: a forward graph built in f16 or bf16 becomes one whose
// parameters are f32 master weights, each converted to its half type where a layer reads it,
// and whose floating data inputs arrive in f32 and are converted likewise. Activations and
// activation gradients stay in the half type; the gradient of each conversion brings a
// parameter's gradient back to f32, so gradient accumulation, the collectives on gradients and
// the optimizer (moments in f32) all work in f32 (the "f32 master weights and optimizer state"
// of mixed-precision training; NVIDIA's mixed-precision training guide, Micikevicius et al.
// 2018). The loss is f32 (cross_entropy computes it so).
#pragma once

#include "core/status.h"
#include "graph/builder.h"

namespace meshpipe::graph {

/// `forward` with f32 master weights as described above. Parameters and inputs that are
/// already f32 (or integer) are left alone; every layer that reads a half parameter gets its
/// own conversion (named "<parameter>/to_<dtype>@<layer>"), so a pipeline stage converts the
/// weights it uses itself. Op names, layers and order are kept. A graph with no half value is
/// returned unchanged.
Expected<ForwardGraph> with_master_weights(const ForwardGraph& forward);

}  // namespace meshpipe::graph
