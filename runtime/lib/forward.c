/* forward.c: running a module over named, validated tensors (miras_library_forward) or
 * over caller-built arguments (miras_library_forward_args). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * The named interface maps each tensor name to a "slot", the position of its pointer in
 * miras_forward_args. Inputs: q, k, v, gates..., initial states...; outputs: o, final
 * states.... Slots keep the metadata order, so the gate and state pointer arrays of
 * miras_forward_args are contiguous ranges of the slot array.
 */
enum { NUM_FIXED_INPUTS = 3 };

static int32_t slot_count(const miras_module_metadata *m, int is_output) {
  return is_output ? 1 + m->num_states : NUM_FIXED_INPUTS + m->num_gates + m->num_states;
}

static const char *slot_name(const miras_module_metadata *m, int is_output, int32_t i) {
  static const char *const fixed[NUM_FIXED_INPUTS] = {"q", "k", "v"};
  if (is_output)
    return i == 0 ? "o" : m->states[i - 1].name;
  if (i < NUM_FIXED_INPUTS)
    return fixed[i];
  i -= NUM_FIXED_INPUTS;
  return i < m->num_gates ? m->gates[i].name : m->states[i - m->num_gates].name;
}

/* Whether slot i holds a state (an initial one in the input list, a final one in the
 * output list). */
static int slot_is_state(const miras_module_metadata *m, int is_output, int32_t i) {
  return is_output ? i >= 1 : i >= NUM_FIXED_INPUTS + m->num_gates;
}

static int32_t find_slot(const miras_module_metadata *m, int is_output, const char *name) {
  for (int32_t i = 0; i < slot_count(m, is_output); ++i)
    if (strcmp(slot_name(m, is_output, i), name) == 0)
      return i;
  return -1;
}

/* "q, k, v, alpha, W": the accepted names, for error messages. */
static void list_names(char *buf, size_t size, const miras_module_metadata *m, int is_output) {
  size_t used = 0;
  buf[0] = '\0';
  for (int32_t i = 0; i < slot_count(m, is_output); ++i) {
    int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", slot_name(m, is_output, i));
    if (n < 0 || (size_t)n >= size - used)
      break;
    used += (size_t)n;
  }
}

/* Checks everything about one tensor that does not depend on the module or the device;
 * which tensor may be bfloat16 is bind_tensors' business. */
static miras_status check_tensor_fields(const miras_tensor *t, const char *role, int32_t index) {
  if (t->name == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s tensor #%d has a NULL name", role, (int)index);
  if (t->rank < 0 || t->rank > MIRAS_TENSOR_MAX_RANK)
    return miras_fail(MIRAS_ERR_SHAPE, "%s tensor '%s' has rank %d (allowed 0..%d)", role,
                      t->name, (int)t->rank, MIRAS_TENSOR_MAX_RANK);
  /* An empty tensor (T = 0) may come without a buffer; its shape is the error then. */
  int empty = 0;
  for (int32_t i = 0; i < t->rank; ++i)
    empty |= t->shape[i] == 0;
  if (t->data == NULL && !empty)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s tensor '%s' has NULL data", role, t->name);
  if (t->dtype != MIRAS_DTYPE_F32 && t->dtype != MIRAS_DTYPE_BF16)
    return miras_fail(MIRAS_ERR_DTYPE,
                      "%s tensor '%s' has dtype %d; supported are float32 (%d) and, for cuda "
                      "inputs, bfloat16 (%d)",
                      role, t->name, (int)t->dtype, (int)MIRAS_DTYPE_F32,
                      (int)MIRAS_DTYPE_BF16);
  return MIRAS_OK;
}

static miras_status check_shape(const miras_library *lib, const miras_tensor *t,
                                const char *role, const int64_t bth[3]) {
  int32_t rank;
  int64_t want[MIRAS_TENSOR_MAX_RANK];
  miras_status st = miras_library_tensor_shape(lib, t->name, bth[0], bth[1], bth[2], &rank, want);
  if (st != MIRAS_OK)
    return st;
  int same = rank == t->rank;
  for (int32_t i = 0; same && i < rank; ++i)
    same = want[i] == t->shape[i];
  if (same)
    return MIRAS_OK;
  char want_s[128], got_s[128];
  miras_format_shape(want_s, sizeof want_s, want, rank);
  miras_format_shape(got_s, sizeof got_s, t->shape, t->rank);
  return miras_fail(MIRAS_ERR_SHAPE, "%s tensor '%s': expected shape %s, got %s", role, t->name,
                    want_s, got_s);
}

/* B, T, H come from q, the one tensor every module has; q's own last dimension is
 * checked later like any other tensor. */
static miras_status batch_dims(const miras_tensor *inputs, int32_t n, int64_t bth[3]) {
  for (int32_t i = 0; i < n; ++i) {
    const miras_tensor *t = &inputs[i];
    if (strcmp(t->name, "q") != 0)
      continue;
    char got[128];
    miras_format_shape(got, sizeof got, t->shape, t->rank);
    if (t->rank == 4 && t->shape[0] > 0 && t->shape[1] == 0 && t->shape[2] > 0)
      return miras_fail(MIRAS_ERR_SHAPE,
                        "input tensor 'q' has T = 0 (shape %s): an empty sequence is not a "
                        "call (a call runs at least one token; with none the state stays as "
                        "it is)",
                        got);
    if (t->rank != 4 || t->shape[0] <= 0 || t->shape[1] <= 0 || t->shape[2] <= 0) {
      return miras_fail(MIRAS_ERR_SHAPE,
                        "input tensor 'q': expected shape [B, T, H, Dk] with B, T, H > 0, got %s",
                        got);
    }
    memcpy(bth, t->shape, 3 * sizeof *bth);
    return MIRAS_OK;
  }
  return miras_fail(MIRAS_ERR_INVALID_ARGUMENT, "missing input tensor 'q'");
}

static const char *dtype_name(int32_t dtype) {
  return dtype == MIRAS_DTYPE_BF16 ? "bfloat16" : "float32";
}

/* The dtype rules: states and o are float32 everywhere; q, k, v and the gates are
 * float32 on the CPU and, on CUDA, all float32 or all bfloat16 (*input_dtype records the
 * first one seen, -1 before). */
static miras_status check_dtype(const miras_module_metadata *m, const miras_tensor *t,
                                int is_output, int32_t slot, int32_t device,
                                int32_t *input_dtype, const char **first_input) {
  const char *role = is_output ? "output" : "input";
  if (t->dtype == MIRAS_DTYPE_F32 && (is_output || slot >= NUM_FIXED_INPUTS + m->num_gates))
    return MIRAS_OK;
  if (is_output || slot >= NUM_FIXED_INPUTS + m->num_gates)
    return miras_fail(MIRAS_ERR_DTYPE,
                      "%s tensor '%s' is %s; states and o are always float32", role, t->name,
                      dtype_name(t->dtype));
  if (device != MIRAS_DEVICE_CUDA && t->dtype != MIRAS_DTYPE_F32)
    return miras_fail(MIRAS_ERR_DTYPE,
                      "input tensor '%s' is %s; the cpu forward takes float32 only (bfloat16 "
                      "inputs run on cuda)",
                      t->name, dtype_name(t->dtype));
  if (*input_dtype < 0) {
    *input_dtype = t->dtype;
    *first_input = t->name;
  } else if (*input_dtype != t->dtype) {
    return miras_fail(MIRAS_ERR_DTYPE,
                      "input tensor '%s' is %s but '%s' is %s; q, k, v and the gates must "
                      "share one dtype",
                      t->name, dtype_name(t->dtype), *first_input, dtype_name(*input_dtype));
  }
  return MIRAS_OK;
}

/* Validates one list (inputs or outputs) and stores each data pointer in its slot. */
/* The lists of the slots: the forward's inputs (q, k, v, gates, states) or its outputs
 * (o, states), under the caller's role name; with optional_states a state may be absent
 * (zeros). */
/* With checkpoints, the list may also hold checkpoints (bind_checkpoints' business). */
static miras_status bind_tensors(const miras_library *lib, const miras_tensor *ts, int32_t n,
                                 int is_output, const char *role, int optional_states,
                                 int checkpoints, const int64_t bth[3], int32_t device,
                                 int32_t *input_dtype, void **slots) {
  const miras_module_metadata *m = lib->meta;
  const char *first_input = NULL;
  for (int32_t i = 0; i < n; ++i) {
    const miras_tensor *t = &ts[i];
    if (checkpoints && miras_checkpoints_state(m, t->name) != -1)
      continue;
    int32_t slot = find_slot(m, is_output, t->name);
    if (slot < 0) {
      char names[512];
      list_names(names, sizeof names, m, is_output);
      return miras_fail(MIRAS_ERR_INVALID_ARGUMENT,
                        "unknown %s tensor '%s' (module '%s' takes %s)", role, t->name, m->name,
                        names);
    }
    if (slots[slot] != NULL)
      return miras_fail(MIRAS_ERR_INVALID_ARGUMENT, "%s tensor '%s' is given twice", role,
                        t->name);
    miras_status st = check_dtype(m, t, is_output, slot, device, input_dtype, &first_input);
    if (st == MIRAS_OK)
      st = check_shape(lib, t, role, bth);
    if (st != MIRAS_OK)
      return st;
    slots[slot] = t->data;
  }
  for (int32_t i = 0; i < slot_count(m, is_output); ++i)
    if (slots[i] == NULL && !(optional_states && slot_is_state(m, is_output, i)))
      return miras_fail(MIRAS_ERR_INVALID_ARGUMENT, "missing %s tensor '%s'", role,
                        slot_name(m, is_output, i));
  return MIRAS_OK;
}

/* The checkpoints in a list ("W.checkpoints", runtime.h MIRAS_CHECKPOINTS_SUFFIX), each
 * checked like any tensor, into ckpts[state index]: every carried state's or none
 * (*given then 0). */
static miras_status bind_checkpoints(const miras_library *lib, const miras_tensor *ts,
                                     int32_t n, const char *role, const int64_t bth[3],
                                     void **ckpts, int *given) {
  const miras_module_metadata *m = lib->meta;
  int32_t count = 0, carried = 0;
  for (int32_t i = 0; i < m->num_states; ++i)
    carried += m->states[i].role == MIRAS_STATE_CARRIED;
  for (int32_t i = 0; i < n; ++i) {
    const miras_tensor *t = &ts[i];
    int32_t state = miras_checkpoints_state(m, t->name);
    if (state == -1)
      continue;
    if (state == -2)
      return miras_fail(MIRAS_ERR_UNSUPPORTED,
                        "%s tensor '%s': '%s' has no backward pass to save checkpoints for "
                        "(rebuild module '%s' with mirasc --backward)",
                        role, t->name, lib->path, m->name);
    if (ckpts[state] != NULL)
      return miras_fail(MIRAS_ERR_INVALID_ARGUMENT, "%s tensor '%s' is given twice", role,
                        t->name);
    if (t->dtype != MIRAS_DTYPE_F32)
      return miras_fail(MIRAS_ERR_DTYPE, "%s tensor '%s' is %s; checkpoints are float32", role,
                        t->name, dtype_name(t->dtype));
    miras_status st = check_shape(lib, t, role, bth);
    if (st != MIRAS_OK)
      return st;
    ckpts[state] = t->data;
    ++count;
  }
  *given = count > 0;
  for (int32_t i = 0; count > 0 && i < m->num_states; ++i)
    if (m->states[i].role == MIRAS_STATE_CARRIED && ckpts[i] == NULL)
      return miras_fail(MIRAS_ERR_INVALID_ARGUMENT,
                        "%s tensor '%s%s' is missing: checkpoints come for every carried state "
                        "(%d of %d given) or none",
                        role, m->states[i].name, MIRAS_CHECKPOINTS_SUFFIX, (int)count,
                        (int)carried);
  return MIRAS_OK;
}

static miras_status check_list(const miras_tensor *ts, int32_t n, const char *role) {
  if (n < 0)
    return miras_fail(MIRAS_ERR_INVALID_ARGUMENT, "negative number of %s tensors (%d)", role,
                      (int)n);
  if (n > 0 && ts == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s tensor array is NULL", role);
  for (int32_t i = 0; i < n; ++i) {
    miras_status st = check_tensor_fields(&ts[i], role, i);
    if (st != MIRAS_OK)
      return st;
  }
  return MIRAS_OK;
}

/* One contiguous block of (batch, head) pairs per task, of the forward (args) or the
 * backward (backward_args). */
typedef struct range_job {
  const miras_module_entry *entry;
  const miras_forward_args *args;
  const miras_backward_args *backward_args;
  int64_t pairs;
  int32_t parts;
  int32_t *status; /* one per part */
} range_job;

static void run_range(void *context, int32_t part) {
  const range_job *job = context;
  int64_t begin = job->pairs * part / job->parts;
  int64_t end = job->pairs * (part + 1) / job->parts;
  job->status[part] = job->backward_args
                          ? job->entry->backward_range(job->backward_args, begin, end)
                          : job->entry->forward_range(job->args, begin, end);
}

static int32_t run_whole(const miras_library *lib, const miras_forward_args *args,
                         const miras_backward_args *backward_args) {
  return backward_args ? lib->entry->backward(backward_args) : lib->entry->forward(args);
}

/* Splits the B * H pairs over the library's threads: the forward of args, or the
 * backward of backward_args when it is not NULL. */
static int32_t run_parallel(miras_library *lib, const miras_forward_args *args,
                            const miras_backward_args *backward_args) {
  int64_t pairs = backward_args ? miras_mul_checked(backward_args->batch, backward_args->heads)
                                : miras_mul_checked(args->batch, args->heads); /* -1: overflow */
  if (lib->num_threads <= 1 || pairs <= 1)
    return run_whole(lib, args, backward_args); /* which reports an overflow itself */
  int32_t parts = pairs < lib->num_threads ? (int32_t)pairs : lib->num_threads;
  pthread_mutex_lock(&lib->pool_lock);
  if (lib->pool == NULL)
    lib->pool = miras_pool_create(lib->num_threads - 1);
  miras_pool *pool = lib->pool;
  pthread_mutex_unlock(&lib->pool_lock);
  int32_t *status = calloc((size_t)parts, sizeof *status);
  if (pool == NULL || status == NULL) {
    free(status);
    return run_whole(lib, args, backward_args); /* out of memory for threads: this one */
  }
  range_job job = {lib->entry, args, backward_args, pairs, parts, status};
  miras_pool_run(pool, parts, run_range, &job);
  int32_t rc = MIRAS_OK;
  for (int32_t i = 0; i < parts && rc == MIRAS_OK; ++i)
    rc = status[i];
  free(status);
  return rc;
}

/* Calls the module; a failing module cannot set our message, so we do. */
miras_status miras_check_chunk_position(const miras_library *lib, const float *const *state_in,
                                        int64_t batch, int64_t heads) {
  const miras_module_metadata *m = lib->meta;
  for (int32_t i = 0; i < m->num_states && state_in != NULL; ++i) {
    if (m->states[i].role != MIRAS_STATE_CHUNK_POSITION || state_in[i] == NULL)
      continue;
    for (int64_t pair = 0; pair < batch * heads; ++pair) {
      float p = state_in[i][pair];
      if (p >= 0.0f && p < (float)m->chunk && p == (float)(int64_t)p)
        continue;
      return miras_fail(MIRAS_ERR_INVALID_ARGUMENT,
                        "input tensor '%s' holds %g at [%lld, %lld, 0]: a chunk position is "
                        "the number of tokens of the current chunk already consumed, an "
                        "integer 0 <= p < %lld (chunk); pass the '%s' a previous call "
                        "returned, or none to start a sequence",
                        m->states[i].name, (double)p, (long long)(pair / heads),
                        (long long)(pair % heads), (long long)m->chunk, m->states[i].name);
    }
  }
  return MIRAS_OK;
}

static miras_status call_module_pass(miras_library *lib, const miras_forward_args *args,
                                     const miras_backward_args *backward_args) {
  miras_status checked =
      backward_args ? miras_check_chunk_position(lib, backward_args->state_in,
                                                 backward_args->batch, backward_args->heads)
                    : miras_check_chunk_position(lib, args->state_in, args->batch, args->heads);
  if (checked != MIRAS_OK)
    return checked;
  int32_t rc = run_parallel(lib, args, backward_args);
  if (rc == MIRAS_OK)
    return MIRAS_OK;
  miras_status st = rc >= MIRAS_ERR_NULL_POINTER && rc <= MIRAS_ERR_ALLOC
                        ? (miras_status)rc
                        : MIRAS_ERR_INVALID_ARGUMENT;
  return miras_fail(st, "module '%s' %s failed with status %d (%s)", lib->meta->name,
                    backward_args ? "backward" : "forward", (int)rc,
                    miras_status_string((miras_status)rc));
}

static miras_status call_module(miras_library *lib, const miras_forward_args *args) {
  return call_module_pass(lib, args, NULL);
}

/* A module built with --target=cuda alone has no CPU entry points. */
static miras_status require_cpu(const miras_library *lib) {
  if (lib->has_cpu)
    return MIRAS_OK;
  return miras_fail(MIRAS_ERR_DEVICE,
                    "'%s' was built for %s only (no cpu kernel); use miras_library_forward_on "
                    "with MIRAS_DEVICE_CUDA or rebuild with --target=cpu,cuda",
                    lib->path, lib->meta->targets);
}

static miras_status require_cuda(const miras_library *lib) {
  if (lib->meta->cuda != NULL)
    return MIRAS_OK;
  return miras_fail(MIRAS_ERR_DEVICE,
                    "'%s' has no cuda kernels (built with --target=%s); rebuild with "
                    "--target=cpu,cuda",
                    lib->path, lib->meta->targets);
}

/*
 * The one validation path of the named interface (miras_library_forward and
 * miras_library_forward_on): checks both lists for `device` and fills *args with the
 * callers' data pointers. *slots (freed by the caller, also on failure) backs the gate
 * and state pointer arrays of *args.
 */
static miras_status bind_forward(const miras_library *lib, int32_t device,
                                 const miras_tensor *inputs, int32_t num_inputs,
                                 const miras_tensor *outputs, int32_t num_outputs,
                                 miras_forward_args *args, int32_t *input_dtype, void ***slots) {
  *slots = NULL;
  *input_dtype = -1;
  miras_status st = check_list(inputs, num_inputs, "input");
  if (st == MIRAS_OK)
    st = check_list(outputs, num_outputs, "output");
  int64_t bth[3];
  if (st == MIRAS_OK)
    st = batch_dims(inputs, num_inputs, bth);
  if (st != MIRAS_OK)
    return st;

  const miras_module_metadata *m = lib->meta;
  int32_t n_in = slot_count(m, 0), n_out = slot_count(m, 1);
  /* After the inputs and outputs, the checkpoints' slots (one per state). */
  void **all = calloc((size_t)(n_in + n_out + m->num_states), sizeof *all);
  if (all == NULL)
    return miras_fail(MIRAS_ERR_ALLOC, "forward: out of memory");
  *slots = all;
  void **in = all, **out = all + n_in, **ckpts = all + n_in + n_out;
  int given = 0;
  st = bind_tensors(lib, inputs, num_inputs, 0, "input", 1, 0, bth, device, input_dtype, in);
  if (st == MIRAS_OK)
    st = bind_tensors(lib, outputs, num_outputs, 1, "output", 0, 1, bth, device, input_dtype,
                      out);
  if (st == MIRAS_OK)
    st = bind_checkpoints(lib, outputs, num_outputs, "output", bth, ckpts, &given);
  if (st == MIRAS_OK && given && device != MIRAS_DEVICE_CPU)
    st = miras_fail(MIRAS_ERR_UNSUPPORTED,
                    "checkpoints are saved by the cpu forward only; the cuda backward "
                    "computes its own");
  if (st != MIRAS_OK)
    return st;
  /* The slots hold void * so that bfloat16 inputs pass through; miras_forward_args types
   * them as float, the kernel reads them as input_dtype. */
  *args = (miras_forward_args){
      .batch = bth[0], .length = bth[1], .heads = bth[2],
      .q = in[0], .k = in[1], .v = in[2],
      .gates = (const float *const *)(in + NUM_FIXED_INPUTS),
      .state_in = (const float *const *)(in + NUM_FIXED_INPUTS + m->num_gates),
      .state_out = (float *const *)(out + 1),
      .o = out[0],
      .checkpoints = given ? (float *const *)ckpts : NULL,
  };
  return MIRAS_OK;
}

/* The first NaN or infinity of a list of validated tensors, as MIRAS_ERR_NON_FINITE
 * naming the tensor and the index (miras_library_set_check_finite). `after` says where
 * the values come from, for the message. */
static miras_status check_finite(const miras_tensor *ts, int32_t n, const char *role,
                                 const char *after) {
  for (int32_t i = 0; i < n; ++i) {
    const miras_tensor *t = &ts[i];
    int64_t count = 1;
    for (int32_t d = 0; d < t->rank; ++d)
      count *= t->shape[d];
    for (int64_t j = 0; j < count; ++j) {
      float x;
      if (t->dtype == MIRAS_DTYPE_BF16) {
        uint32_t bits = (uint32_t)((const uint16_t *)t->data)[j] << 16;
        memcpy(&x, &bits, sizeof x);
      } else {
        x = ((const float *)t->data)[j];
      }
      if (isfinite(x))
        continue;
      int64_t index[MIRAS_TENSOR_MAX_RANK], flat = j; /* C order: the last axis fastest */
      for (int32_t d = t->rank - 1; d >= 0; --d) {
        index[d] = flat % t->shape[d];
        flat /= t->shape[d];
      }
      char where[128];
      miras_format_shape(where, sizeof where, index, t->rank);
      return miras_fail(MIRAS_ERR_NON_FINITE, "%s tensor '%s' holds %s at %s%s", role, t->name,
                        isnan(x) ? "nan" : x > 0 ? "inf" : "-inf", where, after);
    }
  }
  return MIRAS_OK;
}

/* Binds the named tensors (one validation for both devices), then runs the module on
 * `device` (checked by the caller). */
static miras_status bind_and_run(miras_library *lib, int32_t device,
                                 const miras_tensor *inputs, int32_t num_inputs,
                                 const miras_tensor *outputs, int32_t num_outputs) {
  miras_forward_args args;
  int32_t input_dtype;
  void **slots;
  miras_status st = bind_forward(lib, device, inputs, num_inputs, outputs, num_outputs,
                                 &args, &input_dtype, &slots);
  if (st == MIRAS_OK && lib->check_finite)
    st = check_finite(inputs, num_inputs, "input", "");
  /* An absent state starts from its declared init (the module itself reads NULL as
   * zeros); args.state_in points into slots, so the filled buffers reach it. */
  float **initial = NULL;
  if (st == MIRAS_OK)
    st = miras_fill_absent_states(lib, args.batch, args.heads,
                                  slots + NUM_FIXED_INPUTS + lib->meta->num_gates, &initial);
  if (st == MIRAS_OK)
    st = device == MIRAS_DEVICE_CPU ? call_module(lib, &args)
                                    : miras_cuda_forward_host(lib, &args, input_dtype);
  if (st == MIRAS_OK && lib->check_finite)
    st = check_finite(outputs, num_outputs, "output", " after the forward (its inputs are finite)");
  miras_free_absent_states(lib, initial);
  free(slots);
  return st;
}

miras_status miras_library_forward(miras_library *lib, const miras_tensor *inputs,
                                   int32_t num_inputs, const miras_tensor *outputs,
                                   int32_t num_outputs) {
  if (lib == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_forward: library is NULL");
  miras_status st = require_cpu(lib);
  if (st != MIRAS_OK)
    return st;
  return bind_and_run(lib, MIRAS_DEVICE_CPU, inputs, num_inputs, outputs, num_outputs);
}

miras_status miras_library_forward_on(miras_library *lib, int32_t device,
                                      const miras_tensor *inputs, int32_t num_inputs,
                                      const miras_tensor *outputs, int32_t num_outputs) {
  if (lib == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_forward_on: library is NULL");
  if (device == MIRAS_DEVICE_CPU)
    return miras_library_forward(lib, inputs, num_inputs, outputs, num_outputs);
  if (device != MIRAS_DEVICE_CUDA)
    return miras_fail(MIRAS_ERR_INVALID_ARGUMENT,
                      "unknown device %d (MIRAS_DEVICE_CPU = %d, MIRAS_DEVICE_CUDA = %d)",
                      (int)device, (int)MIRAS_DEVICE_CPU, (int)MIRAS_DEVICE_CUDA);
  miras_status st = require_cuda(lib);
  if (st != MIRAS_OK)
    return st;
  return bind_and_run(lib, MIRAS_DEVICE_CUDA, inputs, num_inputs, outputs, num_outputs);
}

static int all_set(const void *const *ptrs, int32_t n) {
  for (int32_t i = 0; i < n; ++i)
    if (ptrs[i] == NULL)
      return 0;
  return 1;
}

miras_status miras_check_forward_args(const miras_library *lib, const miras_forward_args *args,
                                      const char *who) {
  if (lib == NULL || args == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s: %s is NULL", who,
                      lib == NULL ? "library" : "args");
  const miras_module_metadata *m = lib->meta;
  if (!args->q || !args->k || !args->v || !args->o)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s: q, k, v and o must not be NULL", who);
  if (m->num_gates > 0 &&
      (!args->gates || !all_set((const void *const *)args->gates, m->num_gates)))
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s: module '%s' needs %d gate pointers", who,
                      m->name, (int)m->num_gates);
  /* state_in entries may be NULL (zero state), the array itself may not. */
  if (m->num_states > 0 &&
      (!args->state_in || !args->state_out ||
       !all_set((const void *const *)args->state_out, m->num_states)))
    return miras_fail(MIRAS_ERR_NULL_POINTER,
                      "%s: module '%s' needs state_in and %d state_out pointers", who, m->name,
                      (int)m->num_states);
  if (args->batch <= 0 || args->length <= 0 || args->heads <= 0)
    return miras_fail(MIRAS_ERR_SHAPE, "%s: B, T and H must be positive (got %lld, %lld, %lld)",
                      who, (long long)args->batch, (long long)args->length,
                      (long long)args->heads);
  return MIRAS_OK;
}

miras_status miras_check_backward_args(const miras_library *lib, const miras_backward_args *args,
                                       const char *who) {
  if (lib == NULL || args == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s: %s is NULL", who,
                      lib == NULL ? "library" : "args");
  const miras_module_metadata *m = lib->meta;
  if (m->backward_segment <= 0)
    return miras_fail(MIRAS_ERR_UNSUPPORTED,
                      "'%s' has no backward pass: rebuild module '%s' with mirasc --backward",
                      lib->path, m->name);
  if (!args->q || !args->k || !args->v || !args->d_o || !args->d_q || !args->d_k || !args->d_v)
    return miras_fail(MIRAS_ERR_NULL_POINTER,
                      "%s: q, k, v, d_o, d_q, d_k and d_v must not be NULL", who);
  if (m->num_gates > 0 &&
      (!args->gates || !args->d_gates || !all_set((const void *const *)args->gates, m->num_gates) ||
       !all_set((const void *const *)args->d_gates, m->num_gates)))
    return miras_fail(MIRAS_ERR_NULL_POINTER, "%s: module '%s' needs %d gate and gate adjoint pointers",
                      who, m->name, (int)m->num_gates);
  /* state_in and d_state_out entries may be NULL (zeros), the arrays may not. */
  if (m->num_states > 0 &&
      (!args->state_in || !args->d_state_out || !args->d_state_in ||
       !all_set((const void *const *)args->d_state_in, m->num_states)))
    return miras_fail(MIRAS_ERR_NULL_POINTER,
                      "%s: module '%s' needs state_in, d_state_out and %d d_state_in pointers",
                      who, m->name, (int)m->num_states);
  if (args->batch <= 0 || args->length <= 0 || args->heads <= 0)
    return miras_fail(MIRAS_ERR_SHAPE, "%s: B, T and H must be positive (got %lld, %lld, %lld)",
                      who, (long long)args->batch, (long long)args->length,
                      (long long)args->heads);
  return MIRAS_OK;
}

miras_status miras_library_forward_args(miras_library *lib, const miras_forward_args *args) {
  miras_status st = miras_check_forward_args(lib, args, "miras_library_forward_args");
  if (st == MIRAS_OK)
    st = require_cpu(lib);
  if (st == MIRAS_OK)
    st = call_module(lib, args);
  return st;
}

miras_status miras_library_backward(miras_library *lib, const miras_tensor *inputs,
                                    int32_t num_inputs, const miras_tensor *adjoints,
                                    int32_t num_adjoints, const miras_tensor *outputs,
                                    int32_t num_outputs) {
  if (lib == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_backward: library is NULL");
  miras_status st = require_cpu(lib);
  if (st != MIRAS_OK)
    return st;
  const miras_module_metadata *m = lib->meta;
  if (m->backward_segment <= 0 || lib->entry->backward == NULL)
    return miras_fail(MIRAS_ERR_UNSUPPORTED,
                      "'%s' has no backward pass: rebuild module '%s' with mirasc --backward",
                      lib->path, m->name);
  st = check_list(inputs, num_inputs, "input");
  if (st == MIRAS_OK)
    st = check_list(adjoints, num_adjoints, "adjoint");
  if (st == MIRAS_OK)
    st = check_list(outputs, num_outputs, "output");
  int64_t bth[3];
  if (st == MIRAS_OK)
    st = batch_dims(inputs, num_inputs, bth);
  if (st != MIRAS_OK)
    return st;
  /* Inputs and outputs use the forward's input slots (q, k, v, gates, states), the
   * adjoints its output slots (o, states). */
  int32_t n_in = slot_count(m, 0), n_adj = slot_count(m, 1);
  void **all = calloc((size_t)(2 * n_in + n_adj + m->num_states), sizeof *all);
  if (all == NULL)
    return miras_fail(MIRAS_ERR_ALLOC, "backward: out of memory");
  void **in = all, **adj = all + n_in, **out = all + n_in + n_adj;
  void **ckpts = all + 2 * n_in + n_adj;
  int given = 0;
  int32_t input_dtype = -1;
  st = bind_tensors(lib, inputs, num_inputs, 0, "input", 1, 1, bth, MIRAS_DEVICE_CPU,
                    &input_dtype, in);
  if (st == MIRAS_OK)
    st = bind_checkpoints(lib, inputs, num_inputs, "input", bth, ckpts, &given);
  if (st == MIRAS_OK)
    st = bind_tensors(lib, adjoints, num_adjoints, 1, "adjoint", 1, 0, bth, MIRAS_DEVICE_CPU,
                      &input_dtype, adj);
  if (st == MIRAS_OK)
    st = bind_tensors(lib, outputs, num_outputs, 0, "output", 0, 0, bth, MIRAS_DEVICE_CPU,
                      &input_dtype, out);
  if (st == MIRAS_OK) {
    miras_backward_args args = {
        .batch = bth[0], .length = bth[1], .heads = bth[2],
        .q = in[0], .k = in[1], .v = in[2],
        .gates = (const float *const *)(in + NUM_FIXED_INPUTS),
        .state_in = (const float *const *)(in + NUM_FIXED_INPUTS + m->num_gates),
        .d_o = adj[0],
        .d_state_out = (const float *const *)(adj + 1),
        .d_q = out[0], .d_k = out[1], .d_v = out[2],
        .d_gates = (float *const *)(out + NUM_FIXED_INPUTS),
        .d_state_in = (float *const *)(out + NUM_FIXED_INPUTS + m->num_gates),
        .checkpoints = given ? (const float *const *)ckpts : NULL,
    };
    if (lib->check_finite) {
      st = check_finite(inputs, num_inputs, "input", "");
      if (st == MIRAS_OK)
        st = check_finite(adjoints, num_adjoints, "adjoint", "");
    }
    /* The forward being differentiated started from the declared init too. */
    float **initial = NULL;
    if (st == MIRAS_OK)
      st = miras_fill_absent_states(lib, bth[0], bth[2], in + NUM_FIXED_INPUTS + m->num_gates,
                                    &initial);
    if (st == MIRAS_OK)
      st = call_module_pass(lib, NULL, &args);
    if (st == MIRAS_OK && lib->check_finite)
      st = check_finite(outputs, num_outputs, "output",
                        " after the backward (its inputs and adjoints are finite)");
    miras_free_absent_states(lib, initial);
  }
  free(all);
  return st;
}
