// baseline_gdn.cpp: hand-fused Gated DeltaNet, the peer baseline of `miras bench`.
//
// Structure of ggml's fused CPU gated-delta-net op: the state is kept in f32 laid out so
// that every per-token loop runs over contiguous memory (our W [dv, dk] is the transpose
// of the fla/ggml [dk, dv] state, so its rows are the contiguous axis), and each token
// does four passes over it:
//   1. scale the state by alpha_t                       (ggml_vec_scale_f32)
//   2. kv = W k                  one dot per row        (ggml_vec_dot_f32)
//   3. delta = eta_t (v - kv);   W += delta k^T, one axpy per row (ggml_vec_mad_f32)
//   4. o = W q                   one dot per row
// The (batch, head) pairs are split over the same threads as the compiled module.
//
// To be a fair peer the file is compiled optimised (-O3, see runtime/CMakeLists.txt) and
// the kernel is multiversioned with target_clones, so it runs AVX-512 code on a machine
// that has it while the `miras` binary stays portable. The vector helpers accumulate in
// 16 independent lanes, which the vectoriser maps onto one zmm (or two ymm) register
// without needing -ffast-math to reorder a single running sum.
#include "baseline_gdn.hpp"
#include "reference.hpp"

#include <cstring>
#include <optional>
#include <vector>

namespace miras::bench {

namespace {

constexpr int kLanes = 16;

// Always inlined, so each clone of the kernel compiles them for its own instruction set.
__attribute__((always_inline)) inline void scaleRow(float *__restrict x, float a, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    x[j] *= a;
}

__attribute__((always_inline)) inline float dotRow(const float *__restrict x,
                                                   const float *__restrict y, int64_t n) {
  float lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l)
      lanes[l] += x[j + l] * y[j + l];
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l)
    sum += lanes[l];
  for (; j < n; ++j)
    sum += x[j] * y[j];
  return sum;
}

__attribute__((always_inline)) inline void axpyRow(float *__restrict y, float a,
                                                   const float *__restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    y[j] += a * x[j];
}

// x86-64-v4 is AVX-512 (F, BW, CD, DQ, VL), x86-64-v3 AVX2 + FMA. Clang spells the clones
// by single features, so its AVX2 clone goes without FMA.
#if defined(__clang__)
#define MIRAS_BASELINE_CLONES target_clones("avx512f", "avx2", "default")
#else
#define MIRAS_BASELINE_CLONES target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")
#endif

__attribute__((MIRAS_BASELINE_CLONES)) void
gatedDeltaNetPairs(const float *q, const float *k, const float *v, const float *eta,
                   const float *alpha, const float *initialState, float *o, float *finalState,
                   float *kv, int64_t T, int64_t H, int64_t dk, int64_t dv, int64_t pairBegin,
                   int64_t pairEnd) {
  for (int64_t pair = pairBegin; pair < pairEnd; ++pair) {
    const int64_t b = pair / H, h = pair % H;
    float *W = finalState + pair * dv * dk;
    std::memcpy(W, initialState + pair * dv * dk, sizeof(float) * dv * dk);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t token = (b * T + t) * H + h;
      const float *kt = k + token * dk, *qt = q + token * dk, *vt = v + token * dv;
      float *ot = o + token * dv;
      const float decay = alpha[token], rate = eta[token];
      for (int64_t i = 0; i < dv; ++i)
        scaleRow(W + i * dk, decay, dk);
      for (int64_t i = 0; i < dv; ++i)
        kv[i] = dotRow(W + i * dk, kt, dk);
      for (int64_t i = 0; i < dv; ++i)
        axpyRow(W + i * dk, rate * (vt[i] - kv[i]), kt, dk);
      for (int64_t i = 0; i < dv; ++i)
        ot[i] = dotRow(W + i * dk, qt, dk);
    }
  }
}

} // namespace

bool matchGatedDeltaNet(const miras_module_metadata &meta, GatedDeltaNetGates *gates,
                        std::string *whyNot) {
  // By structure, as the scalar reference recognises it: the name says nothing.
  std::string why;
  std::optional<ReferenceModel> model = findReference(meta, &why);
  if (!model || model->kind != ReferenceKind::GatedDeltaNet) {
    *whyNot = "the hand-fused baseline computes the Gated DeltaNet rule; module '" +
              std::string(meta.name) + "' has another";
    return false;
  }
  if (!model->readAfterWrite) {
    *whyNot = "module '" + std::string(meta.name) + "' reads before the write; the baseline "
              "reads after it";
    return false;
  }
  gates->eta = model->etaGate;
  gates->alpha = model->alphaGate;
  return true;
}

void runGatedDeltaNetBaseline(const Problem &p, GatedDeltaNetGates gates, float *o,
                              float *finalState, int64_t pairBegin, int64_t pairEnd) {
  float kvStack[1024];
  std::vector<float> kvHeap(p.dv > 1024 ? p.dv : 0);
  float *kv = p.dv > 1024 ? kvHeap.data() : kvStack;
  gatedDeltaNetPairs(p.q, p.k, p.v, p.gates[gates.eta], p.gates[gates.alpha],
                     p.initialStates[0], o, finalState, kv, p.length, p.heads, p.dk, p.dv,
                     pairBegin, pairEnd);
}

const char *baselineIsa() {
  __builtin_cpu_init();
#if defined(__clang__)
  if (__builtin_cpu_supports("avx512f"))
    return "avx512f";
  if (__builtin_cpu_supports("avx2"))
    return "avx2";
#else
  if (__builtin_cpu_supports("x86-64-v4"))
    return "x86-64-v4 (avx512)";
  if (__builtin_cpu_supports("x86-64-v3"))
    return "x86-64-v3 (avx2+fma)";
#endif
  return "default";
}

} // namespace miras::bench
