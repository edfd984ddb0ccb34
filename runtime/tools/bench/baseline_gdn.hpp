// baseline_gdn.hpp: a hand-fused Gated DeltaNet CPU kernel in the structure of ggml's
// fused gated-delta-net op, the peer baseline of `miras bench` for gated_deltanet.
#ifndef MIRAS_TOOLS_BENCH_BASELINE_GDN_HPP
#define MIRAS_TOOLS_BENCH_BASELINE_GDN_HPP

#include <string>

#include "miras/miras_abi.h"
#include "problem.hpp"

namespace miras::bench {

// Gate indices of a module the baseline can stand in for: a Gated DeltaNet, recognised by
// its structure (findReference in reference.hpp), read after write.
struct GatedDeltaNetGates {
  int eta = -1, alpha = -1;
};

// True when `meta` is such a module; otherwise false with the reason in *whyNot.
bool matchGatedDeltaNet(const miras_module_metadata &meta, GatedDeltaNetGates *gates,
                        std::string *whyNot);

// The exact sequential recurrence (C = 1, read after write)
//   W_t = alpha_t W_{t-1} - eta_t (alpha_t W_{t-1} k_t - v_t) k_t^T,   o_t = W_t q_t
// on the (batch, head) pairs [pairBegin, pairEnd); disjoint ranges may run concurrently.
void runGatedDeltaNetBaseline(const Problem &problem, GatedDeltaNetGates gates, float *o,
                              float *finalState, int64_t pairBegin, int64_t pairEnd);

// Instruction set the multiversioned kernel dispatches to on this machine, e.g.
// "x86-64-v4 (avx512)" or "default".
const char *baselineIsa();

} // namespace miras::bench

#endif // MIRAS_TOOLS_BENCH_BASELINE_GDN_HPP
