// reference.hpp: scalar reference implementations of the linear-memory models of SPEC
// section 6 and of the two-layer MLP memories of Titans and TTT-MLP, forward and
// backward, used by `miras bench` as the speed-up baseline and as a correctness
// cross-check of compiled modules.
#ifndef MIRAS_TOOLS_BENCH_REFERENCE_HPP
#define MIRAS_TOOLS_BENCH_REFERENCE_HPP

#include <optional>
#include <string>
#include <vector>

#include "miras/miras_abi.h"
#include "problem.hpp"

namespace miras::bench {

enum class ReferenceKind {
  LinearAttention, // W_t = W_{t-1} + v k^T
  RetNet,          // W_t = gamma W_{t-1} + v k^T
  Mamba2,          // W_t = alpha_t W_{t-1} + v k^T
  Gla,             // W_t = W_{t-1} Diag(alpha_t) + v k^T
  DeltaNet,        // W_t = W_{t-1} - eta_t (W_a k - v) k^T
  GatedDeltaNet,   // W_t = alpha_t W_{t-1} - eta_t (alpha_t W_a k - v) k^T
  TttLinear,       // W_t = W_{t-1} - lr (W_a k - v) k^T
  Titans,          // MLP W1, W2 (SiLU); S_t = mu S_{t-1} - theta g_t, W_t = alpha W_{t-1} + S_t
  TttMlp,          // MLP W1, W2 (GELU-tanh, residual, LayerNorm); W_t = W_{t-1} - eta g_t
};

enum class MlpActivation { Silu, GeluTanh };

// A two-layer MLP memory f(W; z) = [z +] [LN] (W2 act(W1 z)) (reference_mlp.cpp).
struct MlpReference {
  int64_t hidden = 0;         // W1 [hidden, dk], W2 [dv, hidden]; 0: not an MLP memory
  MlpActivation activation = MlpActivation::Silu;
  bool residual = false, layerNorm = false;
  float epsilon = 0.0f;       // the LayerNorm's
  bool momentum = false;      // Titans: S1, S2 carried
  int w1 = -1, w2 = -1, s1 = -1, s2 = -1; // the states' indices in metadata order
};
// Everything a reference needs from the module's metadata, resolved once.
struct ReferenceModel {
  ReferenceKind kind = ReferenceKind::LinearAttention;
  std::string name;        // the model the rule was recognised as ("gated_deltanet")
  int etaGate = -1;        // index into Problem::gates, -1 when the model has none
  int alphaGate = -1;
  int momentumGate = -1;   // Titans' mu
  bool constantLr = false; // ttt_linear: the learning rate is a constant of the rule
  float constant = 0.0f;   // retnet's decay or ttt_linear's learning rate
  int64_t chunk = 1;       // SPEC section 7: gradients at the state that starts the chunk
  bool readAfterWrite = true;
  MlpReference mlp;        // the MLP memories
};

// The reference for a module, recognised by its structure: the single state W [dv, dk]
// (or the MLP's W1 [hidden, dk], W2 [dv, hidden] and momentum S1, S2), one (k, v) pair
// per token, and the derived update rule of the metadata (`rule`) being one of the
// references' rules, whatever the module and its gates are named. nullopt with the
// reason in *whyNot otherwise.
std::optional<ReferenceModel> findReference(const miras_module_metadata &meta,
                                            std::string *whyNot);

// Runs the reference on the (batch, head) pairs [pairBegin, pairEnd) of b * H + h,
// writing their part of o [B, T, H, dv] and of the final states (metadata order; a NULL
// entry is not written). Disjoint ranges may run concurrently.
void runReference(const ReferenceModel &model, const Problem &problem, float *o,
                  const std::vector<float *> &finalStates, int64_t pairBegin, int64_t pairEnd);

// The adjoints of one backward call (layouts as in Problem): inputs o (dL/do) and
// finalStates (dL/d(final state), metadata order; a missing or NULL entry: zero);
// outputs dq, dk, dv, gates[i] (the adjoint of Problem::gates[i]; a gate the rule does
// not read is left as it is: zero it first) and initialStates (dL/d(initial state),
// metadata order, for the states the reference carries).
struct ReferenceAdjoints {
  const float *o = nullptr;
  std::vector<const float *> finalStates;
  float *dq = nullptr, *dk = nullptr, *dv = nullptr;
  std::vector<float *> gates, initialStates;
};

// The reverse of runReference over the pairs [pairBegin, pairEnd), written out by hand
// from the recurrences: the states recomputed a segment of `segment` tokens at a time
// from checkpoints (a multiple of the chunk, as the module's backward), then each token's
// adjoints, the anchor's summed over its chunk. A NULL Problem::initialStates entry:
// zeros.
void runReferenceBackward(const ReferenceModel &model, const Problem &problem,
                          const ReferenceAdjoints &adjoints, int64_t segment, int64_t pairBegin,
                          int64_t pairEnd);

} // namespace miras::bench

#endif // MIRAS_TOOLS_BENCH_REFERENCE_HPP
