/* host.c: runs linear attention (examples/linear_attention.miras, D = 8) on fixed inputs
 * and checks o and the final state against the closed form W_t = W_{t-1} + v_t k_t^T,
 * o_t = W_t q_t. Built three ways by test/install/check.sh: through the runtime's C API
 * (CMake: miras::runtime; pkg-config: miras), and with DIRECT_CALL through the generated
 * header's linear_attention_forward, the module linked like any shared library.
 * Usage: host [MODULE.so] (the C API builds; default MODULE_PATH). Exit 0 when it matches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef DIRECT_CALL
#include "linear_attention.h"
#else
#include <miras/runtime.h>
#endif

enum { B = 1, T = 5, H = 2, D = 8 };

static float value(int i, int salt) { return (float)sin(0.37 * i + salt) * 0.5f; }

int main(int argc, char **argv) {
  static float q[B * T * H * D], k[B * T * H * D], v[B * T * H * D], o[B * T * H * D];
  static float w[B * H * D * D];
  for (int i = 0; i < B * T * H * D; ++i) {
    q[i] = value(i, 1);
    k[i] = value(i, 2);
    v[i] = value(i, 3);
  }
#ifdef DIRECT_CALL
  (void)argc;
  (void)argv;
  float *state_out[1] = {w};
  miras_forward_args args = {B, T, H, q, k, v, NULL, NULL, state_out, o};
  int32_t status = linear_attention_forward(&args);
  if (status != MIRAS_OK) {
    fprintf(stderr, "linear_attention_forward: status %d\n", status);
    return 1;
  }
#else
  const char *path = argc > 1 ? argv[1] : MODULE_PATH;
  miras_library *lib = NULL;
  if (miras_library_open(path, &lib) != MIRAS_OK) {
    fprintf(stderr, "open: %s\n", miras_last_error());
    return 1;
  }
  miras_tensor inputs[3] = {
      {"q", q, MIRAS_DTYPE_F32, 4, {B, T, H, D}},
      {"k", k, MIRAS_DTYPE_F32, 4, {B, T, H, D}},
      {"v", v, MIRAS_DTYPE_F32, 4, {B, T, H, D}}};
  miras_tensor outputs[2] = {{"o", o, MIRAS_DTYPE_F32, 4, {B, T, H, D}},
                             {"W", w, MIRAS_DTYPE_F32, 4, {B, H, D, D}}};
  if (miras_library_forward(lib, inputs, 3, outputs, 2) != MIRAS_OK) {
    fprintf(stderr, "forward: %s\n", miras_last_error());
    miras_library_close(lib);
    return 1;
  }
  miras_library_close(lib);
#endif
  /* The closed form, head by head, in double. */
  double worst = 0;
  for (int h = 0; h < H; ++h) {
    double W[D][D] = {{0}};
    for (int t = 0; t < T; ++t) {
      const int at = (t * H + h) * D;
      for (int r = 0; r < D; ++r)
        for (int c = 0; c < D; ++c)
          W[r][c] += (double)v[at + r] * k[at + c];
      for (int r = 0; r < D; ++r) {
        double expected = 0;
        for (int c = 0; c < D; ++c)
          expected += W[r][c] * q[at + c];
        worst = fmax(worst, fabs(expected - o[at + r]));
      }
    }
    for (int r = 0; r < D; ++r)
      for (int c = 0; c < D; ++c)
        worst = fmax(worst, fabs(W[r][c] - w[(h * D + r) * D + c]));
  }
  printf("max |o - o_ref|, |W - W_ref| = %.3g\n", worst);
  return worst < 1e-5 ? 0 : 1;
}
