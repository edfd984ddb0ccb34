/*
 * runtime.h: C API of the miras runtime (libmiras_runtime.so).
 *
 * The runtime loads a compiled module (lib<name>.so, see miras_abi.h), checks that it
 * speaks this ABI version, validates its metadata once, and runs it over named,
 * shape-checked tensors. libmiras_runtime.so is plain C on libc, libdl, libpthread and
 * libm (no MLIR/LLVM, no libstdc++); the C++ wrapper (runtime.hpp) is libmiras_runtime_cxx.so.
 *
 * Error handling: every function that can fail returns a miras_status and, on failure,
 * stores a human-readable message in a thread-local buffer (miras_last_error). No
 * function here aborts or throws on bad input.
 */
#ifndef MIRAS_RUNTIME_H
#define MIRAS_RUNTIME_H

#include <stdint.h>

#include "miras/miras_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MIRAS_RUNTIME_API __attribute__((visibility("default")))
#else
#define MIRAS_RUNTIME_API
#endif

/* Element types a miras_tensor may carry. The CPU path takes float32 only. On CUDA,
 * q, k, v and the gates may all be bfloat16 instead (state and o stay float32, and the
 * kernels accumulate in float32). */
typedef enum miras_dtype {
  MIRAS_DTYPE_F32 = 0,
  MIRAS_DTYPE_BF16 = 1 /* the upper 16 bits of an IEEE float32, stored as uint16_t */
} miras_dtype;

/* Where a forward runs. */
typedef enum miras_device {
  MIRAS_DEVICE_CPU = 0,
  MIRAS_DEVICE_CUDA = 1 /* GPU 0 through the CUDA driver API */
} miras_device;

#define MIRAS_TENSOR_MAX_RANK 8

/* A named, C-contiguous view of caller-owned memory. The runtime never keeps it. */
typedef struct miras_tensor {
  const char *name;                      /* "q", "k", "v", "o", a gate or a state name */
  void *data;
  int32_t dtype;                         /* miras_dtype */
  int32_t rank;
  int64_t shape[MIRAS_TENSOR_MAX_RANK];
} miras_tensor;

/* An opened module. Opaque; one per miras_library_open call. */
typedef struct miras_library miras_library;

/* Message of the last failing runtime call in this thread ("" when none failed yet).
 * Successful calls leave it unchanged. The pointer stays valid until the next failing
 * call in the same thread. */
MIRAS_RUNTIME_API const char *miras_last_error(void);

/* Static name of a status code, e.g. "shape error". Never NULL. */
MIRAS_RUNTIME_API const char *miras_status_string(miras_status status);

/* dlopens a compiled module, checks MIRAS_ABI_VERSION in its entry table and metadata,
 * and validates the metadata. A path without '/' is taken relative to the current
 * directory (not searched on the library path). On success *out owns the library.
 * Errors: MIRAS_ERR_NULL_POINTER, MIRAS_ERR_LOAD (missing file, not a miras module,
 * malformed metadata, e.g. an empty gate range), MIRAS_ERR_ABI_VERSION (a library built
 * for another version, such as 4 from before gate ranges: the message names both
 * versions; recompile the module). */
MIRAS_RUNTIME_API miras_status miras_library_open(const char *path, miras_library **out);

/* Unloads the module. NULL is ignored. */
MIRAS_RUNTIME_API void miras_library_close(miras_library *lib);

/* Validated metadata of an opened module (NULL for a NULL library). It lives as long
 * as the library. */
MIRAS_RUNTIME_API const miras_module_metadata *miras_library_metadata(const miras_library *lib);

/* Number of elements of state `state_index` for the given batch and heads
 * (B * H * prod(shape)); -1 when an argument is invalid or the count overflows. */
MIRAS_RUNTIME_API int64_t miras_state_numel(const miras_module_metadata *meta,
                                            int32_t state_index, int64_t batch,
                                            int64_t heads);

/* The declared initial value of state `state_index` (metadata->states[i].init, the DSL's
 * `init`) for B = batch and H = heads, written to out[B * H * prod(shape)] in the state's
 * layout [B, H, shape...]. This is what miras_library_forward, miras_library_forward_on
 * and miras_library_backward use for a carried state the caller leaves out (and so the
 * `miras` tool and the Python package); the module's own entry points, and the
 * pass-through calls below (miras_library_forward_args, the _cuda calls on device
 * memory), read a NULL state as zeros. Anchors and the chunk position always start from
 * zeros. With e the row-major index of an entry inside one (batch, head) pair's state
 * and s = init_scale:
 *   MIRAS_INIT_ZEROS     0.
 *   MIRAS_INIT_IDENTITY  s where the entry's last two indices are equal, else 0 (a
 *                        state of rank 0 or 1 is its own diagonal: s everywhere).
 *   MIRAS_INIT_UNIFORM   s (mirasc resolves the DSL's default, 1/n with n the state's
 *                        last axis, into init_scale).
 *   MIRAS_INIT_NORMAL    an N(0, s^2) draw that depends on (init_seed, head h, e) only,
 *                        not on the batch index (every sequence of a batch starts from
 *                        the same state). With all arithmetic on uint64_t modulo 2^64:
 *                          splitmix64(x): z = x + 0x9E3779B97F4A7C15;
 *                                         z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
 *                                         z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
 *                                         return z ^ (z >> 31)
 *                          key = splitmix64(splitmix64(init_seed) + h)
 *                          r1 = splitmix64(key + 2 e), r2 = splitmix64(key + 2 e + 1)
 *                          u1 = ((r1 >> 11) + 1) * 2^-53     in (0, 1]
 *                          u2 = (r2 >> 11) * 2^-53           in [0, 1)
 *                          entry = (float)(s * sqrt(-2 ln u1) * cos(2 pi u2))
 *                        in double precision (Box-Muller), rounded once to float.
 *                        States that share a seed and a shape share their values:
 *                        give each its own seed.
 * Nothing is written on failure.
 * Errors: MIRAS_ERR_NULL_POINTER (lib or out), MIRAS_ERR_INVALID_ARGUMENT (no such state),
 * MIRAS_ERR_SHAPE (B or H not positive, or the element count overflows). */
MIRAS_RUNTIME_API miras_status miras_library_initial_state(const miras_library *lib,
                                                           int32_t state_index, int64_t batch,
                                                           int64_t heads, float *out);

/* Number of elements of gate `gate_index` (B * T * H * dim; B * T * H * steps for a
 * per-step gate); -1 as above. */
MIRAS_RUNTIME_API int64_t miras_gate_numel(const miras_module_metadata *meta,
                                           int32_t gate_index, int64_t batch,
                                           int64_t length, int64_t heads);

/* Expected shape of the named tensor ("q", "k", "v", "o", a gate, a state or a carried
 * state's checkpoints, "W.checkpoints") for the
 * given B, T, H; SPEC.md section 8 is the single source of truth for these shapes.
 * Errors: MIRAS_ERR_NULL_POINTER, MIRAS_ERR_SHAPE (B, T or H not positive),
 * MIRAS_ERR_INVALID_ARGUMENT (unknown name). */
MIRAS_RUNTIME_API miras_status miras_library_tensor_shape(const miras_library *lib,
                                                          const char *name, int64_t batch,
                                                          int64_t length, int64_t heads,
                                                          int32_t *rank,
                                                          int64_t shape[MIRAS_TENSOR_MAX_RANK]);

/* Number of threads a forward of this library splits its B * H (batch, head) pairs over,
 * on a pool the library handle owns (threads start at the first parallel forward and end
 * at miras_library_close). 1 runs on the calling thread only; 0 means one per online CPU.
 * The default is the MIRAS_NUM_THREADS environment variable when it holds a positive
 * integer at open time, else 1. Results do not depend on the thread count: each
 * (batch, head) pair runs the same code on one thread. Forwards on one library from
 * several host threads are serialised while the pool is in use; do not change the
 * count while a forward on this library is running.
 * Errors: MIRAS_ERR_NULL_POINTER, MIRAS_ERR_INVALID_ARGUMENT (negative count). */
MIRAS_RUNTIME_API miras_status miras_library_set_num_threads(miras_library *lib,
                                                             int32_t num_threads);
/* Current thread count of the library (>= 1), or 0 for a NULL library. */
MIRAS_RUNTIME_API int32_t miras_library_num_threads(const miras_library *lib);

/* The non-finite check (off by default; on at open when the environment variable
 * MIRAS_CHECK_FINITE is set to anything but "" or "0"). When on, miras_library_forward,
 * miras_library_forward_on and miras_library_backward scan every input (and adjoint)
 * before the module runs and fail with MIRAS_ERR_NON_FINITE naming the first NaN or
 * infinity by tensor and index, e.g. "input tensor 'k' holds nan at [0, 3, 1, 2]", and
 * scan every output after it ran: MIRAS_ERR_NON_FINITE again if one holds a non-finite
 * value (the outputs then hold what the module computed). The scan reads every element
 * once (a few percent of a forward); the pass-through calls (miras_library_forward_args,
 * the _cuda calls on device memory) are not checked.
 * Errors: MIRAS_ERR_NULL_POINTER. */
MIRAS_RUNTIME_API miras_status miras_library_set_check_finite(miras_library *lib,
                                                              int32_t enabled);
/* 1 when the check is on, 0 when off or for a NULL library. */
MIRAS_RUNTIME_API int32_t miras_library_check_finite(const miras_library *lib);

/* Checkpoints (ABI 9; miras_abi.h MIRAS_CHECKPOINTS): a library built with --backward
 * recomputes, in its backward, the state every S tokens unless the forward saved them.
 * Over named tensors they are "<state>" MIRAS_CHECKPOINTS_SUFFIX ("W.checkpoints"), one
 * per MIRAS_STATE_CARRIED state, float32 [B, H, N, shape] with
 * N = MIRAS_CHECKPOINTS(T, chunk, backward_segment) (miras_library_tensor_shape gives
 * it): optional outputs of miras_library_forward, optional inputs of
 * miras_library_backward, every carried state's or none. */
#define MIRAS_CHECKPOINTS_SUFFIX ".checkpoints"

/* Runs the module over named tensors. A gate's declared range (miras_gate_info) is the
 * caller's promise and is not checked here: values outside it run, with whatever numbers
 * the recurrence gives.
 *   inputs:  q, k, v and every gate (required); every state (optional: an absent state
 *            starts from its declared init, miras_library_initial_state; zeros unless
 *            the module declares one). B, T, H are taken from q.
 *   outputs: o and every state (the final state); all required. Optionally the
 *            checkpoints of every carried state ("W.checkpoints", above), which the
 *            forward then fills for miras_library_backward (MIRAS_ERR_UNSUPPORTED on a
 *            library without a backward, MIRAS_ERR_INVALID_ARGUMENT when only some are
 *            given).
 * Every tensor is checked (name, null data, dtype, rank, each dimension) before the
 * module runs; an input state and its output may share memory (in-place continuation).
 * Errors: MIRAS_ERR_NULL_POINTER, MIRAS_ERR_SHAPE, MIRAS_ERR_DTYPE,
 * MIRAS_ERR_INVALID_ARGUMENT (unknown, duplicate or missing name), MIRAS_ERR_DEVICE (a
 * module built for cuda only), or the module's own status. */
MIRAS_RUNTIME_API miras_status miras_library_forward(miras_library *lib,
                                                     const miras_tensor *inputs,
                                                     int32_t num_inputs,
                                                     const miras_tensor *outputs,
                                                     int32_t num_outputs);

/* The backward pass of a module built with `mirasc --backward` (metadata
 * backward_segment > 0): the adjoints of a loss L with respect to every input of the
 * forward over the same tensors, given dL/do and dL/d(final states).
 *   inputs:   as miras_library_forward's (q, k, v, every gate; states optional, absent:
 *             the declared init, as in the forward). B, T, H are taken from q.
 *             Optionally the checkpoints a forward over the same inputs saved
 *             ("W.checkpoints" for every carried state, or none): the backward then
 *             skips its first pass (about two thirds of a forward's time).
 *   adjoints: "o" (dL/do, required, shaped like o) and any state (dL/d final state,
 *             shaped like it; absent: zero).
 *   outputs:  the adjoint of every input, named and shaped like it: q, k, v, every gate
 *             and every state (the initial state's adjoint); all required. An output
 *             state may share memory with its adjoint; nothing else may overlap.
 * The pairs are split over the library's threads like the forward's.
 * Errors: those of miras_library_forward, MIRAS_ERR_UNSUPPORTED (built without
 * --backward), MIRAS_ERR_ALLOC (the recompute workspace could not be allocated). */
MIRAS_RUNTIME_API miras_status miras_library_backward(miras_library *lib,
                                                      const miras_tensor *inputs,
                                                      int32_t num_inputs,
                                                      const miras_tensor *adjoints,
                                                      int32_t num_adjoints,
                                                      const miras_tensor *outputs,
                                                      int32_t num_outputs);

/* Pass-through to the module's forward for callers that build miras_forward_args
 * themselves. Only null pointers and B, T, H > 0 are checked: the buffer sizes are the
 * caller's responsibility. MIRAS_ERR_DEVICE for a module built for cuda only. */
MIRAS_RUNTIME_API miras_status miras_library_forward_args(miras_library *lib,
                                                          const miras_forward_args *args);

/* ---- CUDA -------------------------------------------------------------------------
 * The runtime never links against CUDA: the first call that needs the GPU dlopens
 * libcuda.so.1 and resolves the driver API. A machine without a driver or a GPU gets
 * MIRAS_ERR_DEVICE with the reason from these calls only; the CPU path is unaffected.
 * A library's kernels are loaded into the primary context of GPU 0 on first use (the
 * cubin when the GPU matches its architecture, else the PTX through the driver's JIT)
 * and unloaded by miras_library_close. */

/* MIRAS_OK when a CUDA driver and at least one GPU are usable from this process, else
 * MIRAS_ERR_DEVICE with a one-line reason (no libcuda.so.1, cuInit failed, no device). */
MIRAS_RUNTIME_API miras_status miras_cuda_available(void);

/* 1 when the library carries CUDA kernels (built with --target=cuda or cpu,cuda). */
MIRAS_RUNTIME_API int32_t miras_library_has_cuda(const miras_library *lib);

/* miras_library_forward on the given device. For MIRAS_DEVICE_CUDA the tensors are in
 * host memory, with q, k, v and the gates all MIRAS_DTYPE_F32 or all MIRAS_DTYPE_BF16;
 * the runtime copies them to the GPU, runs the kernel, copies o and the states back and
 * returns when they are there (on failure none of the outputs is written). Validation is
 * that of miras_library_forward. MIRAS_DEVICE_CPU is miras_library_forward itself, which
 * takes float32 only (MIRAS_ERR_DTYPE for bfloat16) and fails with MIRAS_ERR_DEVICE on a
 * module built for cuda alone.
 * Errors: those of miras_library_forward, plus MIRAS_ERR_DEVICE (library built without
 * cuda, or no usable GPU) and MIRAS_ERR_DTYPE (mixed input types). */
MIRAS_RUNTIME_API miras_status miras_library_forward_on(miras_library *lib, int32_t device,
                                                        const miras_tensor *inputs,
                                                        int32_t num_inputs,
                                                        const miras_tensor *outputs,
                                                        int32_t num_outputs);

/* The GPU forward on device memory. Every pointer in args is a CUdeviceptr of the
 * primary context of GPU 0 (the one PyTorch and the CUDA runtime use) cast to a pointer;
 * q, k, v and the gates are of input_dtype (MIRAS_DTYPE_F32 or MIRAS_DTYPE_BF16). The
 * work (state copies, zero fill for a NULL state_in, the kernel) is enqueued on stream
 * (a CUstream; NULL for the default stream) and the call returns without waiting.
 * Only null pointers, B, T, H > 0 and the dtype are checked. A failure of the kernel
 * itself surfaces at the caller's next synchronisation, not here.
 * Concurrency: calls on one library are serialised while they enqueue. A module with
 * workspace_bytes > 0 runs every launch of a library in the same workspace (allocated on
 * first use, grown when a larger B * H needs it, freed at close), so forwards of one
 * library on different streams must not overlap: use one stream per library handle, or
 * open the module once per stream.
 * Errors: MIRAS_ERR_NULL_POINTER, MIRAS_ERR_SHAPE, MIRAS_ERR_DTYPE, MIRAS_ERR_DEVICE. */
MIRAS_RUNTIME_API miras_status miras_library_forward_cuda(miras_library *lib,
                                                          const miras_forward_args *args,
                                                          int32_t input_dtype, void *stream);

/* The backward on device memory, for a module built with --backward and a cuda target
 * (metadata cuda_backward): every pointer in args a CUdeviceptr of GPU 0's primary
 * context, float32; state_in[i] and d_state_out[i] may be NULL (zeros); d_state_in[i] may
 * be d_state_out[i] or state_in[i]. Enqueued on stream (NULL: the default stream); the
 * call returns without waiting. The checkpoints and segments of every pair, per carried
 * state tensor B * H * ceil((T + chunk - 1) / S) states and B * H * S slots (a state and
 * at least 16 floats more), live in a device buffer the library keeps
 * (grown on demand, freed at close), so, as for the forward, the calls of one library
 * must not overlap on different streams. Only null pointers, B, T, H > 0 and the
 * presence of the kernel are checked.
 * Errors: MIRAS_ERR_NULL_POINTER, MIRAS_ERR_SHAPE, MIRAS_ERR_UNSUPPORTED (no backward),
 * MIRAS_ERR_DEVICE (no cuda backward kernel in the library, or no usable GPU). */
MIRAS_RUNTIME_API miras_status miras_library_backward_cuda(miras_library *lib,
                                                           const miras_backward_args *args,
                                                           void *stream);

#ifdef __cplusplus
}
#endif

#endif /* MIRAS_RUNTIME_H */
