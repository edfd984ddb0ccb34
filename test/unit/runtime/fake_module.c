/*
 * fake_module.c: a hand-written stand-in for a compiled miras module, so the runtime
 * can be tested without the compiler. It is a gated linear-attention memory,
 *     W_t = alpha_t W_{t-1} + (beta_t * v_t) k_t^T,   o_t = W_t q_t   (read after write)
 * with dk = 3 and dv = 4 (different on purpose, so a swapped axis cannot pass), a
 * scalar gate `alpha` and a channel gate `beta` along dv.
 *
 * Compile definitions build broken variants from the same source:
 *   FAKE_ENTRY_ABI=n   entry table claims ABI version n
 *   FAKE_META_ABI=n    metadata claims ABI version n
 *   FAKE_BAD_DK        metadata has dk = 0
 *   FAKE_FORWARD_FAILS forward returns MIRAS_ERR_DEVICE
 */
#include <string.h>

#include "miras/miras_abi.h"

#ifndef FAKE_ENTRY_ABI
#define FAKE_ENTRY_ABI MIRAS_ABI_VERSION
#endif
#ifndef FAKE_META_ABI
#define FAKE_META_ABI MIRAS_ABI_VERSION
#endif
#ifdef FAKE_BAD_DK
#define FAKE_DK 0
#else
#define FAKE_DK 3
#endif

enum { DK = 3, DV = 4 };

static const miras_param_info params[] = {{"eta", 0.5, 0}, {"steps", 2.0, 1}};
static const miras_gate_info gates[] = {
    {"alpha", MIRAS_GATE_SCALAR, MIRAS_AXIS_NONE, 1},
    {"beta", MIRAS_GATE_CHANNEL, MIRAS_AXIS_VALUE, DV},
};
static const miras_state_info states[] = {{"W", 2, {DV, DK, 0, 0}}};

static const miras_module_metadata metadata = {
    .abi_version = FAKE_META_ABI,
    .name = "fake_linear",
    .source = "test/unit/runtime/fake_module.c",
    .compiler = "hand-written",
    .dk = FAKE_DK,
    .dv = DV,
    .chunk = 1,
    .steps = 1,
    .read_after_write = 1,
    .num_params = 2,
    .params = params,
    .num_gates = 2,
    .gates = gates,
    .num_states = 1,
    .states = states,
    .targets = "cpu",
    .rule = "W = alpha * W + (beta * v) k^T",
    .flops_per_token = 4.0 * DV * DK + DV,
    .algorithm = "sequential",
};

static const miras_module_metadata *fake_metadata(void) { return &metadata; }

/* One (batch, head) sequence; W is updated in place. */
static void run_head(const miras_forward_args *a, int64_t b, int64_t h, float *W) {
  for (int64_t t = 0; t < a->length; ++t) {
    int64_t tok = (b * a->length + t) * a->heads + h;
    const float *q = a->q + tok * DK, *k = a->k + tok * DK, *v = a->v + tok * DV;
    float alpha = a->gates[0][tok];
    const float *beta = a->gates[1] + tok * DV;
    for (int i = 0; i < DV; ++i)
      for (int j = 0; j < DK; ++j)
        W[i * DK + j] = alpha * W[i * DK + j] + beta[i] * v[i] * k[j];
    for (int i = 0; i < DV; ++i) {
      float acc = 0.0f;
      for (int j = 0; j < DK; ++j)
        acc += W[i * DK + j] * q[j];
      a->o[tok * DV + i] = acc;
    }
  }
}

/* Pairs [begin, end) of the flattened B * H range, as a compiled module does. */
static int32_t fake_forward_range(const miras_forward_args *a, int64_t begin, int64_t end) {
#ifdef FAKE_FORWARD_FAILS
  return MIRAS_ERR_DEVICE;
#endif
  if (begin < 0 || begin > end || end > a->batch * a->heads)
    return MIRAS_ERR_INVALID_ARGUMENT;
  for (int64_t pair = begin; pair < end; ++pair) {
    int64_t off = pair * DV * DK;
    float *W = a->state_out[0] + off;
    /* memmove: state_in may alias state_out (in-place continuation). */
    if (a->state_in[0])
      memmove(W, a->state_in[0] + off, sizeof(float) * DV * DK);
    else
      memset(W, 0, sizeof(float) * DV * DK);
    run_head(a, pair / a->heads, pair % a->heads, W);
  }
  return MIRAS_OK;
}

static int32_t fake_forward(const miras_forward_args *a) {
  return fake_forward_range(a, 0, a->batch * a->heads);
}

__attribute__((visibility("default"))) const miras_module_entry miras_module_v1 = {
    FAKE_ENTRY_ABI, fake_metadata, fake_forward, fake_forward_range};
