/*
 * fake_module.c: a hand-written stand-in for a compiled miras module, so the runtime
 * can be tested without the compiler. It is a gated linear-attention memory,
 *     W_t = alpha_t W_{t-1} + (beta_t * v_t) k_t^T,   o_t = W_t q_t   (read after write)
 * with dk = 3 and dv = 4 (different on purpose, so a swapped axis cannot pass), a
 * scalar gate `alpha` (declared in (0, 1]) and a channel gate `beta` along dv (no range).
 *
 * Compile definitions build broken variants from the same source:
 *   FAKE_ENTRY_ABI=n   entry table claims ABI version n
 *   FAKE_META_ABI=n    metadata claims ABI version n
 *   FAKE_BAD_DK        metadata has dk = 0
 *   FAKE_BAD_BACKWARD_FLOPS  backward_flops_per_token without a backward
 *   FAKE_BAD_RANGE     gate alpha's range is (1, 0] (empty)
 *   FAKE_FORWARD_FAILS forward returns MIRAS_ERR_DEVICE
 *   FAKE_BACKWARD      has the backward entry points (backward_segment 4): the exact
 *                      adjoint of the recurrence, written out by hand
 * and CUDA variants:
 *   FAKE_CUDA          targets "cpu,cuda" with a cuda table (fake PTX and sm_90 cubin:
 *                      only the fake driver of cuda_test.cpp can "run" them)
 *   FAKE_CUDA_ONLY     with FAKE_CUDA: targets "cuda", NULL forward and forward_range
 *   FAKE_INITS         four states, each with a declared init (see states below)
 *   FAKE_SHARED_BYTES=n  the table's shared_bytes (default 4096)
 *   FAKE_BAD_CUDA=n    with FAKE_CUDA: one malformed cuda field (see below)
 *   FAKE_CUDA with FAKE_BACKWARD: also the backward's cuda table (ABI 7), whose kernel
 *                      the fake driver runs through fake_backward on checkpoint slot 0
 *
 * fake_kernel_forward is exported under its own name in every variant: the fake driver's
 * cuLaunchKernel runs it on the "device" buffers, standing in for the GPU kernel.
 */
#include <stdlib.h>
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
/* alpha declares its range (a decay, (0, 1]); beta declares none. FAKE_BAD_RANGE turns
 * alpha's into (1, 0]. */
#ifdef FAKE_BAD_RANGE
#define FAKE_ALPHA_LO 1.0
#define FAKE_ALPHA_HI 0.0
#else
#define FAKE_ALPHA_LO 0.0
#define FAKE_ALPHA_HI 1.0
#endif
static const miras_gate_info gates[] = {
    {"alpha", MIRAS_GATE_SCALAR, MIRAS_AXIS_NONE, 1, 0, 1, FAKE_ALPHA_LO, FAKE_ALPHA_HI, 0, 1},
    {"beta", MIRAS_GATE_CHANNEL, MIRAS_AXIS_VALUE, DV, 0, 0, 0.0, 0.0, 0, 0},
};
#ifdef FAKE_INITS
/* A declared start for each kind (init_test.cpp): W uniform 0.25 (the one the forward
 * and backward read), I an identity of 1.5 on the last two axes of a rank-3 state, N a
 * normal of deviation 0.5 from seed 42, and Z zeros. The fake's entry points write only
 * W's final state and initial-state adjoint. */
static const miras_state_info states[] = {
    {"W", 2, {DV, DK, 0, 0}, MIRAS_STATE_CARRIED, -1, MIRAS_INIT_UNIFORM, 0.25, 0},
    {"I", 3, {2, 3, 4, 0}, MIRAS_STATE_CARRIED, -1, MIRAS_INIT_IDENTITY, 1.5, 0},
    {"N", 2, {16, 32, 0, 0}, MIRAS_STATE_CARRIED, -1, MIRAS_INIT_NORMAL, 0.5, 42},
    {"Z", 1, {5, 0, 0, 0}, MIRAS_STATE_CARRIED, -1, MIRAS_INIT_ZEROS, 0.0, 0}};
#else
static const miras_state_info states[] = {
    {"W", 2, {DV, DK, 0, 0}, MIRAS_STATE_CARRIED, -1, MIRAS_INIT_ZEROS, 0.0, 0}};
#endif

#ifndef FAKE_BAD_CUDA
#define FAKE_BAD_CUDA 0
#endif
#ifndef FAKE_SHARED_BYTES
#define FAKE_SHARED_BYTES 4096
#endif

#if defined(FAKE_CUDA_ONLY)
#define FAKE_TARGETS "cuda"
#elif defined(FAKE_CUDA) && FAKE_BAD_CUDA == 2
#define FAKE_TARGETS "cpu" /* but a cuda table */
#elif defined(FAKE_CUDA) && FAKE_BAD_CUDA == 8
#define FAKE_TARGETS "tpu"
#elif defined(FAKE_CUDA)
#define FAKE_TARGETS "cpu, cuda"
#else
#define FAKE_TARGETS "cpu"
#endif

#ifdef FAKE_CUDA
static const unsigned char fake_cubin[] = "fake cubin for sm_90";
/* FAKE_BAD_CUDA: 1 no table, 3 block_threads 0, 4 block_threads 2048, 5 cubin without
 * size, 6 empty PTX, 7 no bf16 kernel name, 9 NULL forward although targets names cpu. */
static const miras_cuda_binary cuda_binary = {
    .arch = "sm_90",
    .ptx = FAKE_BAD_CUDA == 6 ? "" : "// fake PTX of fake_linear\n",
    .cubin = fake_cubin,
    .cubin_size = FAKE_BAD_CUDA == 5 ? 0 : sizeof fake_cubin,
    .kernel_f32 = "fake_linear_f32",
    .kernel_bf16 = FAKE_BAD_CUDA == 7 ? NULL : "fake_linear_bf16",
    .block_threads = FAKE_BAD_CUDA == 3 ? 0 : FAKE_BAD_CUDA == 4 ? 2048 : 128,
    .shared_bytes = FAKE_SHARED_BYTES,
    .workspace_bytes = 64,
};
#define FAKE_CUDA_TABLE (FAKE_BAD_CUDA == 1 ? NULL : &cuda_binary)
#else
#define FAKE_CUDA_TABLE NULL
#endif

#if defined(FAKE_CUDA) && defined(FAKE_BACKWARD)
static const unsigned char fake_backward_cubin[] = "fake backward cubin for sm_90";
static const miras_cuda_binary cuda_backward_binary = {
    .arch = "sm_90",
    .ptx = "// fake PTX of fake_linear's backward\n",
    .cubin = fake_backward_cubin,
    .cubin_size = sizeof fake_backward_cubin,
    .kernel_f32 = "fake_linear_backward_f32",
    .kernel_bf16 = NULL,
    .block_threads = 64,
    .shared_bytes = 0,
    .workspace_bytes = 32,
};
#define FAKE_CUDA_BACKWARD_TABLE (&cuda_backward_binary)
#else
#define FAKE_CUDA_BACKWARD_TABLE NULL
#endif

/* Entry points are exported functions, as in a generated module: the loader accepts
 * only pointers to the start of one of the library's exported symbols. */
#define FAKE_ENTRY_POINT __attribute__((visibility("default")))

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
    .num_states = sizeof states / sizeof states[0],
    .states = states,
    .targets = FAKE_TARGETS,
    .rule = "W = alpha * W + (beta * v) k^T",
    .flops_per_token = 4.0 * DV * DK + DV,
    .algorithm = "sequential",
    .cuda = FAKE_CUDA_TABLE,
#ifdef FAKE_BACKWARD
    .backward_segment = 4,
    .backward_flops_per_token = 10.0 * DV * DK,
#elif defined(FAKE_BAD_BACKWARD_FLOPS)
    .backward_flops_per_token = 1.0,
#endif
    .cuda_backward = FAKE_CUDA_BACKWARD_TABLE,
};

FAKE_ENTRY_POINT const miras_module_metadata *fake_metadata(void) { return &metadata; }

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
FAKE_ENTRY_POINT int32_t fake_forward_range(const miras_forward_args *a, int64_t begin, int64_t end) {
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

FAKE_ENTRY_POINT int32_t fake_forward(const miras_forward_args *a) {
  return fake_forward_range(a, 0, a->batch * a->heads);
}

__attribute__((visibility("default"))) int32_t fake_kernel_forward(const miras_forward_args *a) {
  return fake_forward(a);
}

#ifdef FAKE_BACKWARD
/* The adjoint of run_head for pairs [begin, end), walking the tokens backwards with
 * every state kept (the tests' sequences are short). G is the running adjoint of W:
 *   G += do_t q_t^T;  dq_t = W_t^T do_t;  with u = beta_t * v_t and g = G k_t:
 *   dv_t = beta_t * g, dbeta_t = v_t * g, dk_t = G^T u, dalpha_t = <G, W_{t-1}>;
 *   G = alpha_t G. */
FAKE_ENTRY_POINT int32_t fake_backward_range(const miras_backward_args *a, int64_t begin, int64_t end) {
  if (begin < 0 || begin > end || end > a->batch * a->heads)
    return MIRAS_ERR_INVALID_ARGUMENT;
  const int64_t T = a->length, H = a->heads;
  float *Ws = malloc(sizeof(float) * (size_t)(T + 1) * DV * DK);
  if (Ws == NULL)
    return MIRAS_ERR_ALLOC;
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t b = pair / H, h = pair % H, off = pair * DV * DK;
    if (a->state_in && a->state_in[0])
      memcpy(Ws, a->state_in[0] + off, sizeof(float) * DV * DK);
    else
      memset(Ws, 0, sizeof(float) * DV * DK);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t tok = (b * T + t) * H + h;
      const float *k = a->k + tok * DK, *v = a->v + tok * DV, *beta = a->gates[1] + tok * DV;
      const float alpha = a->gates[0][tok];
      const float *prev = Ws + t * DV * DK;
      float *W = Ws + (t + 1) * DV * DK;
      for (int i = 0; i < DV; ++i)
        for (int j = 0; j < DK; ++j)
          W[i * DK + j] = alpha * prev[i * DK + j] + beta[i] * v[i] * k[j];
    }
    float G[DV * DK];
    if (a->d_state_out && a->d_state_out[0])
      memcpy(G, a->d_state_out[0] + off, sizeof G);
    else
      memset(G, 0, sizeof G);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t tok = (b * T + t) * H + h;
      const float *q = a->q + tok * DK, *k = a->k + tok * DK, *v = a->v + tok * DV;
      const float *beta = a->gates[1] + tok * DV, *d_o = a->d_o + tok * DV;
      const float alpha = a->gates[0][tok];
      const float *W = Ws + (t + 1) * DV * DK, *prev = Ws + t * DV * DK;
      float g[DV], dalpha = 0.0f;
      for (int i = 0; i < DV; ++i)
        for (int j = 0; j < DK; ++j)
          G[i * DK + j] += d_o[i] * q[j];
      for (int j = 0; j < DK; ++j) {
        float dq = 0.0f, dk = 0.0f;
        for (int i = 0; i < DV; ++i) {
          dq += W[i * DK + j] * d_o[i];
          dk += G[i * DK + j] * beta[i] * v[i];
        }
        a->d_q[tok * DK + j] = dq;
        a->d_k[tok * DK + j] = dk;
      }
      for (int i = 0; i < DV; ++i) {
        g[i] = 0.0f;
        for (int j = 0; j < DK; ++j) {
          g[i] += G[i * DK + j] * k[j];
          dalpha += G[i * DK + j] * prev[i * DK + j];
        }
        a->d_v[tok * DV + i] = beta[i] * g[i];
        a->d_gates[1][tok * DV + i] = v[i] * g[i];
      }
      a->d_gates[0][tok] = dalpha;
      for (int i = 0; i < DV * DK; ++i)
        G[i] *= alpha;
    }
    memcpy(a->d_state_in[0] + off, G, sizeof G);
  }
  free(Ws);
  return MIRAS_OK;
}

FAKE_ENTRY_POINT int32_t fake_backward(const miras_backward_args *a) {
  return fake_backward_range(a, 0, a->batch * a->heads);
}
#define FAKE_BACKWARD_ENTRIES , fake_backward, fake_backward_range
#else
#define FAKE_BACKWARD_ENTRIES
#endif

#if defined(FAKE_CUDA_ONLY) || FAKE_BAD_CUDA == 9
__attribute__((visibility("default"))) const miras_module_entry miras_module_v1 = {
    FAKE_ENTRY_ABI, fake_metadata, NULL, NULL};
#else
__attribute__((visibility("default"))) const miras_module_entry miras_module_v1 = {
    FAKE_ENTRY_ABI, fake_metadata, fake_forward, fake_forward_range FAKE_BACKWARD_ENTRIES};
#endif
