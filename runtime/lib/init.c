/* init.c: the declared initial states (the DSL's `init`, miras_state_init of the ABI):
 * miras_library_initial_state and the fill of absent states in the named calls. The
 * normal generator is specified in runtime.h, so any implementation can reproduce it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Entry `element` of head `head`'s state under a normal init (runtime.h). */
static float normal_entry(uint64_t seed, double scale, uint64_t head, uint64_t element) {
  const uint64_t key = splitmix64(splitmix64(seed) + head);
  const uint64_t r1 = splitmix64(key + 2 * element), r2 = splitmix64(key + 2 * element + 1);
  const double u1 = (double)((r1 >> 11) + 1) * 0x1.0p-53; /* (0, 1]: log(u1) is finite */
  const double u2 = (double)(r2 >> 11) * 0x1.0p-53;       /* [0, 1) */
  const double two_pi = 6.283185307179586;
  return (float)(scale * sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
}

/* One (batch, head) pair's state of `n` entries, for head `head`. */
static void fill_pair(const miras_state_info *s, int64_t head, int64_t n, float *out) {
  const float scale = (float)s->init_scale;
  switch (s->init) {
  case MIRAS_INIT_IDENTITY: {
    /* The diagonal of the last two axes; a vector or scalar state is its own diagonal. */
    if (s->rank < 2) {
      for (int64_t e = 0; e < n; ++e) out[e] = scale;
      break;
    }
    const int64_t rows = s->shape[s->rank - 2], cols = s->shape[s->rank - 1];
    for (int64_t e = 0; e < n; ++e)
      out[e] = (e / cols) % rows == e % cols ? scale : 0.0f;
    break;
  }
  case MIRAS_INIT_UNIFORM:
    for (int64_t e = 0; e < n; ++e) out[e] = scale;
    break;
  case MIRAS_INIT_NORMAL:
    for (int64_t e = 0; e < n; ++e)
      out[e] = normal_entry(s->init_seed, s->init_scale, (uint64_t)head, (uint64_t)e);
    break;
  default: /* MIRAS_INIT_ZEROS; the metadata check at open admits nothing else */
    memset(out, 0, (size_t)n * sizeof *out);
    break;
  }
}

/* Writes the init of state `index` for B x H pairs (arguments already checked). The
 * values depend on the head and the element, not on the batch index: batch 0 is
 * computed and copied to the others. */
static void fill_state(const miras_module_metadata *m, int32_t index, int64_t batch,
                       int64_t heads, float *out) {
  const miras_state_info *s = &m->states[index];
  const int64_t n = miras_state_numel(m, index, 1, 1);
  for (int64_t h = 0; h < heads; ++h)
    fill_pair(s, h, n, out + h * n);
  for (int64_t b = 1; b < batch; ++b)
    memcpy(out + b * heads * n, out, (size_t)(heads * n) * sizeof *out);
}

miras_status miras_library_initial_state(const miras_library *lib, int32_t state_index,
                                         int64_t batch, int64_t heads, float *out) {
  if (lib == NULL || out == NULL)
    return miras_fail(MIRAS_ERR_NULL_POINTER, "miras_library_initial_state: %s is NULL",
                      lib == NULL ? "library" : "out");
  const miras_module_metadata *m = lib->meta;
  if (state_index < 0 || state_index >= m->num_states)
    return miras_fail(MIRAS_ERR_INVALID_ARGUMENT,
                      "miras_library_initial_state: module '%s' has %d state(s), no state %d",
                      m->name, (int)m->num_states, (int)state_index);
  if (batch <= 0 || heads <= 0)
    return miras_fail(MIRAS_ERR_SHAPE,
                      "miras_library_initial_state: B and H must be positive (got %lld, %lld)",
                      (long long)batch, (long long)heads);
  if (miras_state_numel(m, state_index, batch, heads) < 0)
    return miras_fail(MIRAS_ERR_SHAPE,
                      "miras_library_initial_state: state '%s' of B = %lld, H = %lld has more "
                      "elements than an int64_t counts",
                      m->states[state_index].name, (long long)batch, (long long)heads);
  fill_state(m, state_index, batch, heads, out);
  return MIRAS_OK;
}

/* Only carried states are filled: an anchor or the chunk position left NULL means "a
 * sequence starts here" (miras_abi.h), which is not a value to fill in. */
static int needs_fill(const miras_state_info *s) {
  return s->role == MIRAS_STATE_CARRIED && s->init != MIRAS_INIT_ZEROS;
}

miras_status miras_fill_absent_states(const miras_library *lib, int64_t batch, int64_t heads,
                                      void **state_slots, float ***owned) {
  const miras_module_metadata *m = lib->meta;
  *owned = NULL;
  int any = 0;
  for (int32_t i = 0; i < m->num_states; ++i)
    any |= state_slots[i] == NULL && needs_fill(&m->states[i]);
  if (!any)
    return MIRAS_OK;
  float **buffers = calloc((size_t)m->num_states, sizeof *buffers);
  if (buffers == NULL)
    return miras_fail(MIRAS_ERR_ALLOC, "initial states: out of memory");
  *owned = buffers;
  for (int32_t i = 0; i < m->num_states; ++i) {
    if (state_slots[i] != NULL || !needs_fill(&m->states[i]))
      continue;
    const int64_t n = miras_state_numel(m, i, batch, heads); /* shapes already checked */
    if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float) ||
        (buffers[i] = malloc((size_t)n * sizeof(float))) == NULL)
      return miras_fail(MIRAS_ERR_ALLOC,
                        "initial state '%s' of shape [%lld, %lld, ...] (its declared init): "
                        "cannot allocate %lld floats",
                        m->states[i].name, (long long)batch, (long long)heads, (long long)n);
    fill_state(m, i, batch, heads, buffers[i]);
    state_slots[i] = buffers[i];
  }
  return MIRAS_OK;
}

void miras_free_absent_states(const miras_library *lib, float **owned) {
  if (owned == NULL)
    return;
  for (int32_t i = 0; i < lib->meta->num_states; ++i)
    free(owned[i]);
  free(owned);
}
