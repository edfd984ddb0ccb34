/* library.c: loading a compiled module, validating its metadata, shape queries. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Names the named-tensor interface uses for the fixed tensors; gate and state names
 * must differ from them and from each other, or miras_library_forward would be
 * ambiguous. */
static const char *const fixed_names[] = {"q", "k", "v", "o"};

static miras_status bad_metadata(const char *path, const char *what) {
  return miras_fail(MIRAS_ERR_LOAD, "'%s': malformed module metadata: %s", path, what);
}

/* A string of the module: inside its image, terminated there, not empty. */
static int is_name(const miras_image *im, const char *s) {
  return s != NULL && miras_image_holds_string(im, s) && s[0] != '\0';
}

/* Far above any real module; bounds what damaged metadata could make the runtime
 * allocate or loop over. */
enum {
  kMaxWidth = 1 << 16,        /* dk, dv */
  kMaxChunk = 1 << 20,        /* chunk, steps */
  kMaxCount = 4096,           /* params, gates, states */
};
static const int64_t kMaxStateElements = (int64_t)1 << 32; /* per (batch, head) pair */

/* Counts are int32_t in the ABI; a negative count or an array outside the library behind
 * a positive count would make every later loop read garbage. */
#define VALID_ARRAY(im, count, array)                                                       \
  ((count) >= 0 && (count) <= kMaxCount && MIRAS_IMAGE_HOLDS(im, array, count))

static miras_status check_gate(const char *path, const miras_image *im,
                               const miras_module_metadata *m, const miras_gate_info *g) {
  char msg[256];
  if (!is_name(im, g->name))
    return bad_metadata(path, "a gate has no name");
  if (g->per_step && (g->kind != MIRAS_GATE_SCALAR || m->steps <= 1)) {
    snprintf(msg, sizeof msg, "gate '%s': only scalar gates of a multistep module are per step",
             g->name);
    return bad_metadata(path, msg);
  }
  if (g->has_range != 0 && g->has_range != 1) {
    snprintf(msg, sizeof msg, "gate '%s': has_range must be 0 or 1", g->name);
    return bad_metadata(path, msg);
  }
  if (g->has_range) {
    const double lo = g->range_lo, hi = g->range_hi;
    int closed_infinite = (isinf(lo) && g->range_lo_closed) || (isinf(hi) && g->range_hi_closed);
    int empty = lo == hi && !(g->range_lo_closed && g->range_hi_closed);
    if (isnan(lo) || isnan(hi) || lo > hi || closed_infinite || empty) {
      snprintf(msg, sizeof msg,
               "gate '%s': range %c%g, %g%c is empty or malformed (lo <= hi, infinite ends "
               "open)",
               g->name, g->range_lo_closed ? '[' : '(', lo, hi, g->range_hi_closed ? ']' : ')');
      return bad_metadata(path, msg);
    }
  }
  if (g->kind == MIRAS_GATE_SCALAR) {
    if (g->axis != MIRAS_AXIS_NONE || g->dim != 1) {
      snprintf(msg, sizeof msg, "scalar gate '%s' must have axis none and dim 1", g->name);
      return bad_metadata(path, msg);
    }
    return MIRAS_OK;
  }
  if (g->kind != MIRAS_GATE_CHANNEL) {
    snprintf(msg, sizeof msg, "gate '%s' has unknown kind %d", g->name, (int)g->kind);
    return bad_metadata(path, msg);
  }
  int64_t want = g->axis == MIRAS_AXIS_KEY ? m->dk : g->axis == MIRAS_AXIS_VALUE ? m->dv : -1;
  if (want < 0 || g->dim != want) {
    snprintf(msg, sizeof msg,
             "channel gate '%s' must run along dk or dv with the matching dim (axis %d, dim %lld)",
             g->name, (int)g->axis, (long long)g->dim);
    return bad_metadata(path, msg);
  }
  return MIRAS_OK;
}

/* Role and init of state `index` (ABI 8): an anchor names a carried state before it
 * and has its shape; a chunk position is one float; init is a known kind. */
static miras_status check_state_role(const char *path, const miras_module_metadata *m,
                                     int32_t index) {
  const miras_state_info *s = &m->states[index];
  char msg[256];
  if (s->role == MIRAS_STATE_CARRIED || s->role == MIRAS_STATE_CHUNK_POSITION) {
    if (s->anchor_of != -1) {
      snprintf(msg, sizeof msg, "state '%s' is not an anchor but has anchor_of %d", s->name,
               (int)s->anchor_of);
      return bad_metadata(path, msg);
    }
    if (s->role == MIRAS_STATE_CHUNK_POSITION && (s->rank != 1 || s->shape[0] != 1 ||
                                                  m->chunk <= 1)) {
      snprintf(msg, sizeof msg, "state '%s' is a chunk position but not one float of a "
               "chunked module", s->name);
      return bad_metadata(path, msg);
    }
  } else if (s->role == MIRAS_STATE_ANCHOR) {
    const miras_state_info *w = s->anchor_of >= 0 && s->anchor_of < index
                                    ? &m->states[s->anchor_of] : NULL;
    int same = w != NULL && w->role == MIRAS_STATE_CARRIED && w->rank == s->rank;
    for (int32_t i = 0; same && i < s->rank; ++i) same = w->shape[i] == s->shape[i];
    if (!same || m->chunk <= 1) {
      snprintf(msg, sizeof msg, "state '%s' is an anchor (of state %d) but not shaped like a "
               "carried state before it of a chunked module", s->name, (int)s->anchor_of);
      return bad_metadata(path, msg);
    }
  } else {
    snprintf(msg, sizeof msg, "state '%s' has an unknown role %d", s->name, (int)s->role);
    return bad_metadata(path, msg);
  }
  if (s->init < MIRAS_INIT_ZEROS || s->init > MIRAS_INIT_NORMAL) {
    snprintf(msg, sizeof msg, "state '%s' has an unknown init %d", s->name, (int)s->init);
    return bad_metadata(path, msg);
  }
  /* A finite scale (a positive one for a deviation); anchors and the chunk position
   * start every sequence from zeros (position 0: the anchors are not read). */
  if (!isfinite(s->init_scale) || (s->init == MIRAS_INIT_NORMAL && !(s->init_scale > 0.0)) ||
      (s->role != MIRAS_STATE_CARRIED && s->init != MIRAS_INIT_ZEROS)) {
    snprintf(msg, sizeof msg, "state '%s' has an init (%d) with scale %g that it cannot take",
             s->name, (int)s->init, s->init_scale);
    return bad_metadata(path, msg);
  }
  return MIRAS_OK;
}

static miras_status check_state(const char *path, const miras_image *im,
                                const miras_state_info *s) {
  char msg[256];
  if (!is_name(im, s->name))
    return bad_metadata(path, "a state has no name");
  if (s->rank < 0 || s->rank > MIRAS_MAX_STATE_RANK) {
    snprintf(msg, sizeof msg, "state '%s' has rank %d (allowed 0..%d)", s->name, (int)s->rank,
             MIRAS_MAX_STATE_RANK);
    return bad_metadata(path, msg);
  }
  int64_t elements = 1;
  for (int32_t i = 0; i < s->rank; ++i) {
    if (s->shape[i] <= 0) {
      snprintf(msg, sizeof msg, "state '%s' has non-positive dimension %lld", s->name,
               (long long)s->shape[i]);
      return bad_metadata(path, msg);
    }
    elements = miras_mul_checked(elements, s->shape[i]);
    if (elements < 0 || elements > kMaxStateElements) {
      snprintf(msg, sizeof msg, "state '%s' has more than 2^32 elements per (batch, head)",
               s->name);
      return bad_metadata(path, msg);
    }
  }
  return MIRAS_OK;
}

/* Collects fixed, gate and state names and rejects any repeated one. */
static miras_status check_unique_names(const char *path, const miras_module_metadata *m) {
  int32_t n = 4 + m->num_gates + m->num_states;
  const char **names = malloc((size_t)n * sizeof *names);
  if (names == NULL)
    return miras_fail(MIRAS_ERR_LOAD, "'%s': out of memory", path);
  int32_t k = 0;
  for (int32_t i = 0; i < 4; ++i) names[k++] = fixed_names[i];
  for (int32_t i = 0; i < m->num_gates; ++i) names[k++] = m->gates[i].name;
  for (int32_t i = 0; i < m->num_states; ++i) names[k++] = m->states[i].name;
  miras_status st = MIRAS_OK;
  for (int32_t i = 0; i < n && st == MIRAS_OK; ++i) {
    for (int32_t j = 0; j < i; ++j) {
      if (strcmp(names[i], names[j]) == 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "tensor name '%s' is used twice (gates, states, q/k/v/o)",
                 names[i]);
        st = bad_metadata(path, msg);
        break;
      }
    }
  }
  free(names);
  return st;
}

int miras_targets_contain(const char *targets, const char *target) {
  size_t want = strlen(target);
  for (const char *p = targets; p != NULL && *p != '\0';) {
    while (*p == ' ' || *p == ',')
      ++p;
    const char *end = p;
    while (*end != '\0' && *end != ',')
      ++end;
    const char *last = end;
    while (last > p && last[-1] == ' ')
      --last;
    if ((size_t)(last - p) == want && strncmp(p, target, want) == 0)
      return 1;
    p = end;
  }
  return 0;
}

/* One miras_cuda_binary (`what`: "cuda table", "cuda_backward table") complete: the
 * loader hands these fields to the driver without further checks. The backward's table
 * has one kernel (float32), so its kernel_bf16 is NULL. */
static miras_status check_cuda_binary(const char *path, const miras_image *im,
                                      const miras_cuda_binary *c, const char *what,
                                      int with_bf16) {
  char msg[160];
  if (!MIRAS_IMAGE_HOLDS(im, c, 1)) {
    snprintf(msg, sizeof msg, "%s: points outside the library", what);
    return bad_metadata(path, msg);
  }
  if (!is_name(im, c->arch) || !is_name(im, c->ptx)) {
    snprintf(msg, sizeof msg, "%s: arch and ptx must be non-empty", what);
    return bad_metadata(path, msg);
  }
  if (!is_name(im, c->kernel_f32) ||
      (with_bf16 ? !is_name(im, c->kernel_bf16) : c->kernel_bf16 != NULL)) {
    snprintf(msg, sizeof msg, with_bf16 ? "%s: kernel_f32 and kernel_bf16 must be non-empty"
                                        : "%s: kernel_f32 must be non-empty and kernel_bf16 NULL",
             what);
    return bad_metadata(path, msg);
  }
  if (c->block_threads < 1 || c->block_threads > 1024) {
    snprintf(msg, sizeof msg, "%s: block_threads %u is outside 1..1024", what,
             (unsigned)c->block_threads);
    return bad_metadata(path, msg);
  }
  if ((c->cubin != NULL) != (c->cubin_size > 0)) {
    snprintf(msg, sizeof msg, "%s: cubin_size must be > 0 exactly when cubin is set", what);
    return bad_metadata(path, msg);
  }
  if (c->cubin != NULL && !miras_image_holds(im, c->cubin, c->cubin_size, 1)) {
    snprintf(msg, sizeof msg, "%s: the cubin's %llu bytes run outside the library", what,
             (unsigned long long)c->cubin_size);
    return bad_metadata(path, msg);
  }
  return MIRAS_OK;
}

/* The CUDA table is present exactly when targets names cuda, the backward's exactly
 * when it does and the module has a backward (ABI 7). */
static miras_status check_cuda(const char *path, const miras_image *im,
                               const miras_module_metadata *m) {
  const miras_cuda_binary *c = m->cuda;
  int wants_cuda = miras_targets_contain(m->targets, "cuda");
  if (!wants_cuda && !miras_targets_contain(m->targets, "cpu"))
    return bad_metadata(path, "targets names neither cpu nor cuda");
  int wants_backward = wants_cuda && m->backward_segment > 0;
  if ((m->cuda_backward != NULL) != wants_backward)
    return bad_metadata(path, wants_backward
                                  ? "a backward for cuda but the cuda_backward table is NULL"
                                  : "a cuda_backward table, but no backward or no cuda target");
  if (!wants_cuda)
    return c == NULL ? MIRAS_OK : bad_metadata(path, "a cuda table, but targets lacks cuda");
  if (c == NULL)
    return bad_metadata(path, "targets names cuda but the cuda table is NULL");
  miras_status st = check_cuda_binary(path, im, c, "cuda table", 1);
  if (st == MIRAS_OK && wants_backward)
    st = check_cuda_binary(path, im, m->cuda_backward, "cuda_backward table", 0);
  return st;
}

static miras_status check_metadata(const char *path, const miras_image *im,
                                   const miras_module_metadata *m) {
  if (m->abi_version != MIRAS_ABI_VERSION)
    return miras_fail(MIRAS_ERR_ABI_VERSION,
                      "'%s': module metadata has ABI version %u, runtime expects %u", path,
                      (unsigned)m->abi_version, (unsigned)MIRAS_ABI_VERSION);
  if (!is_name(im, m->name))
    return bad_metadata(path, "module has no name");
  const char *const texts[] = {m->source, m->compiler, m->targets, m->rule, m->algorithm};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; ++i)
    if (texts[i] == NULL || !miras_image_holds_string(im, texts[i]))
      return bad_metadata(path, "source, compiler, targets, rule and algorithm must be "
                                "strings in the library");
  if (!(m->flops_per_token >= 0))
    return bad_metadata(path, "flops_per_token must be a non-negative number");
  if (!(m->backward_flops_per_token >= 0) ||
      (m->backward_segment == 0 && m->backward_flops_per_token != 0))
    return bad_metadata(path, "backward_flops_per_token must be a non-negative number, "
                              "0 without a backward (backward_segment 0)");
  if (m->dk <= 0 || m->dv <= 0 || m->chunk <= 0 || m->steps <= 0)
    return bad_metadata(path, "dk, dv, chunk and steps must be positive");
  if (m->dk > kMaxWidth || m->dv > kMaxWidth || m->chunk > kMaxChunk || m->steps > kMaxChunk)
    return bad_metadata(path, "dk, dv (at most 65536), chunk or steps (at most 2^20) too large");
  if (m->read_after_write != 0 && m->read_after_write != 1)
    return bad_metadata(path, "read_after_write must be 0 or 1");
  if (!VALID_ARRAY(im, m->num_params, m->params) || !VALID_ARRAY(im, m->num_gates, m->gates) ||
      !VALID_ARRAY(im, m->num_states, m->states))
    return bad_metadata(path, "a params/gates/states array is NULL, outside the library, or "
                              "its count is negative or above 4096");
  for (int32_t i = 0; i < m->num_params; ++i)
    if (!is_name(im, m->params[i].name))
      return bad_metadata(path, "a parameter has no name");
  for (int32_t i = 0; i < m->num_gates; ++i) {
    miras_status st = check_gate(path, im, m, &m->gates[i]);
    if (st != MIRAS_OK) return st;
  }
  for (int32_t i = 0; i < m->num_states; ++i) {
    miras_status st = check_state(path, im, &m->states[i]);
    if (st == MIRAS_OK) st = check_state_role(path, m, i);
    if (st != MIRAS_OK) return st;
  }
  miras_status st = check_cuda(path, im, m);
  if (st != MIRAS_OK)
    return st;
  return check_unique_names(path, m);
}

/* Checks the entry table before calling into it: with another ABI version even the
 * layout of the metadata struct may differ, so nothing else may be touched. */
static miras_status check_entry(const char *path, const miras_image *im,
                                const miras_module_entry *e,
                                const miras_module_metadata **meta) {
  if (!miras_image_holds(im, e, sizeof e->abi_version, _Alignof(miras_module_entry)))
    return miras_fail(MIRAS_ERR_LOAD, "'%s': its '%s' lies outside the library", path,
                      MIRAS_MODULE_ENTRY_SYMBOL);
  if (e->abi_version != MIRAS_ABI_VERSION)
    return miras_fail(MIRAS_ERR_ABI_VERSION,
                      "'%s' was built for miras ABI version %u, runtime expects %u "
                      "(recompile the module with a mirasc of this release)", path,
                      (unsigned)e->abi_version, (unsigned)MIRAS_ABI_VERSION);
  if (!MIRAS_IMAGE_HOLDS(im, e, 1))
    return miras_fail(MIRAS_ERR_LOAD, "'%s': its entry table runs outside the library", path);
  if (e->metadata == NULL)
    return miras_fail(MIRAS_ERR_LOAD, "'%s': entry table has a NULL metadata", path);
  /* Entry points are called: each must be one of the library's exported functions. */
  const void *const functions[] = {(const void *)e->metadata, (const void *)e->forward,
                                   (const void *)e->forward_range, (const void *)e->backward,
                                   (const void *)e->backward_range};
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; ++i)
    if (functions[i] != NULL && !miras_image_holds_function(im, functions[i]))
      return miras_fail(MIRAS_ERR_LOAD,
                        "'%s': malformed entry table: an entry point is not one of the "
                        "library's exported functions", path);
  *meta = e->metadata();
  if (*meta == NULL)
    return miras_fail(MIRAS_ERR_LOAD, "'%s': metadata() returned NULL", path);
  if (!MIRAS_IMAGE_HOLDS(im, *meta, 1))
    return miras_fail(MIRAS_ERR_LOAD, "'%s': metadata() points outside the library", path);
  miras_status st = check_metadata(path, im, *meta);
  if (st != MIRAS_OK)
    return st;
  /* A cuda-only module has no CPU entry points; the others must have both. */
  if (miras_targets_contain((*meta)->targets, "cpu") &&
      (e->forward == NULL || e->forward_range == NULL))
    return miras_fail(MIRAS_ERR_LOAD,
                      "'%s': targets names cpu but the entry table has a NULL forward or "
                      "forward_range",
                      path);
  /* The backward entry points exist exactly when the metadata gives a segment. */
  if ((*meta)->backward_segment < 0 ||
      ((*meta)->backward_segment > 0) != (e->backward != NULL && e->backward_range != NULL) ||
      (e->backward == NULL) != (e->backward_range == NULL))
    return miras_fail(MIRAS_ERR_LOAD,
                      "'%s': malformed module metadata: backward_segment %lld does not match "
                      "the entry table's backward entry points",
                      path, (long long)(*meta)->backward_segment);
  return MIRAS_OK;
}

static int32_t online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 1024 ? 1024 : (int32_t)n;
}

/* 1 when the environment variable is set to anything but "" or "0". */
static int32_t env_flag(const char *name) {
  const char *text = getenv(name);
  return text != NULL && *text != '\0' && strcmp(text, "0") != 0;
}

/* MIRAS_NUM_THREADS when it is a positive integer ("0": one per CPU), else 1. */
static int32_t default_num_threads(void) {
  const char *text = getenv("MIRAS_NUM_THREADS");
  if (text == NULL || *text == '\0')
    return 1;
  char *end;
  long n = strtol(text, &end, 10);
  if (*end != '\0' || n < 0 || n > 1024)
    return 1;
  return n == 0 ? online_cpus() : (int32_t)n;
}

/* dlopen searches the library path for a bare file name; a module path on the command
 * line means a file, so make it explicit. */
static void *open_handle(const char *path) {
  if (strchr(path, '/') != NULL)
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
  size_t n = strlen(path) + 3;
  char *local = malloc(n);
  if (local == NULL)
    return NULL;
  snprintf(local, n, "./%s", path);
  void *handle = dlopen(local, RTLD_NOW | RTLD_LOCAL);
  free(local);
  return handle;
}

miras_status miras_library_open(const char *path, miras_library **out) {
  if (out == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_open: out is NULL");
  *out = NULL;
  if (path == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_open: path is NULL");
  miras_status st = miras_check_module_file(path);
  if (st != MIRAS_OK)
    return st;
  dlerror(); /* clear any stale message */
  void *handle = open_handle(path);
  if (handle == NULL) {
    const char *why = dlerror();
    return miras_fail(MIRAS_ERR_LOAD, "cannot load '%s': %s", path, why ? why : "unknown error");
  }
  const miras_module_entry *entry = dlsym(handle, MIRAS_MODULE_ENTRY_SYMBOL);
  const miras_module_metadata *meta = NULL;
  miras_image image;
  st = entry == NULL ? miras_fail(MIRAS_ERR_LOAD, "'%s' is not a miras module (no symbol '%s')",
                                  path, MIRAS_MODULE_ENTRY_SYMBOL)
                     : miras_image_of(handle, path, &image);
  if (st == MIRAS_OK)
    st = check_entry(path, &image, entry, &meta);
  miras_library *lib = NULL;
  if (st == MIRAS_OK && ((lib = calloc(1, sizeof *lib)) == NULL ||
                         (lib->path = strdup(path)) == NULL))
    st = miras_fail(MIRAS_ERR_LOAD, "'%s': out of memory", path);
  if (st != MIRAS_OK) {
    free(lib);
    dlclose(handle);
    return st;
  }
  lib->handle = handle;
  lib->entry = entry;
  lib->meta = meta;
  lib->has_cpu = miras_targets_contain(meta->targets, "cpu");
  lib->num_threads = default_num_threads();
  lib->check_finite = env_flag("MIRAS_CHECK_FINITE");
  lib->pool = NULL;
  pthread_mutex_init(&lib->pool_lock, NULL);
  lib->cuda = NULL;
  pthread_mutex_init(&lib->cuda_lock, NULL);
  *out = lib;
  return MIRAS_OK;
}

void miras_library_close(miras_library *lib) {
  if (lib == NULL)
    return;
  miras_cuda_close_library(lib); /* before dlclose: the kernels' images live in the module */
  pthread_mutex_destroy(&lib->cuda_lock);
  miras_pool_destroy(lib->pool);
  pthread_mutex_destroy(&lib->pool_lock);
  dlclose(lib->handle);
  free(lib->path);
  free(lib);
}

miras_status miras_library_set_num_threads(miras_library *lib, int32_t num_threads) {
  if (lib == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_set_num_threads: library is NULL");
  if (num_threads < 0)
    return miras_fail(MIRAS_ERR_INVALID_ARGUMENT,
                      "thread count must be >= 0 (0: one per CPU), got %d", (int)num_threads);
  int32_t n = num_threads == 0 ? online_cpus() : num_threads;
  pthread_mutex_lock(&lib->pool_lock);
  if (n != lib->num_threads) {
    miras_pool_destroy(lib->pool); /* restarted with the new size when next needed */
    lib->pool = NULL;
    lib->num_threads = n;
  }
  pthread_mutex_unlock(&lib->pool_lock);
  return MIRAS_OK;
}

miras_status miras_library_set_check_finite(miras_library *lib, int32_t enabled) {
  if (lib == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_set_check_finite: library is NULL");
  lib->check_finite = enabled != 0;
  return MIRAS_OK;
}

int32_t miras_library_check_finite(const miras_library *lib) {
  return lib != NULL && lib->check_finite;
}

int32_t miras_library_num_threads(const miras_library *lib) {
  return lib ? lib->num_threads : 0;
}

const miras_module_metadata *miras_library_metadata(const miras_library *lib) {
  return lib ? lib->meta : NULL;
}

int64_t miras_state_numel(const miras_module_metadata *meta, int32_t state_index,
                          int64_t batch, int64_t heads) {
  if (meta == NULL || state_index < 0 || state_index >= meta->num_states || batch <= 0 ||
      heads <= 0)
    return -1;
  const miras_state_info *s = &meta->states[state_index];
  int64_t n = miras_mul_checked(batch, heads);
  for (int32_t i = 0; i < s->rank && n >= 0; ++i)
    n = miras_mul_checked(n, s->shape[i]);
  return n;
}

int64_t miras_gate_numel(const miras_module_metadata *meta, int32_t gate_index, int64_t batch,
                         int64_t length, int64_t heads) {
  if (meta == NULL || gate_index < 0 || gate_index >= meta->num_gates || batch <= 0 ||
      length <= 0 || heads <= 0)
    return -1;
  const miras_gate_info *g = &meta->gates[gate_index];
  int64_t n = miras_mul_checked(miras_mul_checked(batch, length), heads);
  /* A per-step gate is [B, T, H, steps] (its dim is 1). */
  return n < 0 ? -1 : miras_mul_checked(n, g->per_step ? meta->steps : g->dim);
}

static void set_shape(int32_t *rank, int64_t *shape, int32_t n, const int64_t *dims) {
  *rank = n;
  memcpy(shape, dims, (size_t)n * sizeof *dims);
}

int32_t miras_checkpoints_state(const miras_module_metadata *m, const char *name) {
  static const char suffix[] = MIRAS_CHECKPOINTS_SUFFIX;
  size_t len = strlen(name), n = sizeof suffix - 1;
  if (len <= n || strcmp(name + len - n, suffix) != 0)
    return -1;
  for (int32_t i = 0; i < m->num_states; ++i)
    if (m->states[i].role == MIRAS_STATE_CARRIED && strlen(m->states[i].name) == len - n &&
        strncmp(m->states[i].name, name, len - n) == 0)
      return m->backward_segment > 0 ? i : -2;
  return -1;
}

miras_status miras_library_tensor_shape(const miras_library *lib, const char *name,
                                        int64_t batch, int64_t length, int64_t heads,
                                        int32_t *rank, int64_t shape[MIRAS_TENSOR_MAX_RANK]) {
  if (lib == NULL || name == NULL || rank == NULL || shape == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_tensor_shape: NULL argument");
  if (batch <= 0 || length <= 0 || heads <= 0)
    return miras_fail(MIRAS_ERR_SHAPE, "B, T and H must be positive (got %lld, %lld, %lld)",
                      (long long)batch, (long long)length, (long long)heads);
  const miras_module_metadata *m = lib->meta;
  if (strcmp(name, "q") == 0 || strcmp(name, "o") == 0) {
    int64_t width = name[0] == 'q' ? m->dk : m->dv;
    set_shape(rank, shape, 4, (const int64_t[]){batch, length, heads, width});
    return MIRAS_OK;
  }
  if (strcmp(name, "k") == 0 || strcmp(name, "v") == 0) {
    // A multistep module takes one (k, v) pair per step.
    int64_t width = name[0] == 'k' ? m->dk : m->dv;
    if (m->steps > 1)
      set_shape(rank, shape, 5, (const int64_t[]){batch, length, heads, m->steps, width});
    else
      set_shape(rank, shape, 4, (const int64_t[]){batch, length, heads, width});
    return MIRAS_OK;
  }
  for (int32_t i = 0; i < m->num_gates; ++i) {
    const miras_gate_info *g = &m->gates[i];
    if (strcmp(name, g->name) != 0)
      continue;
    if (g->per_step)
      set_shape(rank, shape, 4, (const int64_t[]){batch, length, heads, m->steps});
    else
      set_shape(rank, shape, g->kind == MIRAS_GATE_SCALAR ? 3 : 4,
                (const int64_t[]){batch, length, heads, g->dim});
    return MIRAS_OK;
  }
  int32_t checkpoints = miras_checkpoints_state(m, name);
  if (checkpoints == -2)
    return miras_fail(MIRAS_ERR_INVALID_ARGUMENT,
                      "module '%s' has no tensor named '%s': only a library built with "
                      "--backward saves checkpoints",
                      m->name, name);
  for (int32_t i = 0; i < m->num_states; ++i) {
    const miras_state_info *s = &m->states[i];
    if (i != checkpoints && strcmp(name, s->name) != 0)
      continue;
    set_shape(rank, shape, 2, (const int64_t[]){batch, heads});
    *rank = 2;
    if (i == checkpoints) /* [B, H, N, shape] */
      shape[(*rank)++] = MIRAS_CHECKPOINTS(length, m->chunk, m->backward_segment);
    memcpy(shape + *rank, s->shape, (size_t)s->rank * sizeof *shape);
    *rank += s->rank;
    return MIRAS_OK;
  }
  return miras_fail(MIRAS_ERR_INVALID_ARGUMENT, "module '%s' has no tensor named '%s'",
                    m->name, name);
}
