/* internal.h: helpers shared by the C sources of the runtime (not installed). */
#ifndef MIRAS_RUNTIME_INTERNAL_H
#define MIRAS_RUNTIME_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "miras/runtime.h"

#if defined(__GNUC__)
#define MIRAS_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define MIRAS_PRINTF(fmt, args)
#endif

/* Stores a printf-style message as this thread's last error and returns `status`, so
 * that error paths read `return miras_fail(MIRAS_ERR_SHAPE, "...", ...);`. */
miras_status miras_fail(miras_status status, const char *fmt, ...) MIRAS_PRINTF(2, 3);

/* a * b, or -1 when either is negative or the product overflows int64_t. */
int64_t miras_mul_checked(int64_t a, int64_t b);

/* Formats shape[0..rank) as "[2, 3, 4]" into buf (truncated to size). */
void miras_format_shape(char *buf, size_t size, const int64_t *shape, int32_t rank);

/* Persistent worker threads (pool.c). miras_pool_run runs task(context, i) for every
 * i in [0, count) on the workers and the calling thread, and returns when all are done. */
typedef struct miras_pool miras_pool;
miras_pool *miras_pool_create(int32_t num_workers);
void miras_pool_destroy(miras_pool *pool);
void miras_pool_run(miras_pool *pool, int32_t count, void (*task)(void *, int32_t),
                    void *context);

/* 1 when the comma-separated target list (metadata->targets, e.g. "cpu, cuda") names
 * `target`; spaces around items are ignored. */
int miras_targets_contain(const char *targets, const char *target);

/* image.c: a module file is checked before dlopen (an ELF shared library for this
 * machine, every header and segment inside the file: a truncated file would be a SIGBUS
 * in the loader), and every pointer of its metadata is checked against the memory of the
 * loaded object before it is followed (damaged metadata is an error, not a crash). */
miras_status miras_check_module_file(const char *path);

#define MIRAS_IMAGE_MAX_SEGMENTS 16
typedef struct miras_image_segment {
  uintptr_t begin, end; /* [begin, end): a readable PT_LOAD segment, as mapped */
  int executable;
} miras_image_segment;
typedef struct miras_image {
  uintptr_t base; /* load address (dladdr's dli_fbase for its symbols) */
  int count;
  miras_image_segment segments[MIRAS_IMAGE_MAX_SEGMENTS];
} miras_image;

/* The segments of the object dlopen returned `handle` for. */
miras_status miras_image_of(void *handle, const char *path, miras_image *out);
/* 1 when [p, p + bytes) lies in one readable segment of the image and p is aligned to
 * `align` (a damaged pointer may be off by a few bytes: reading through it is undefined). */
int miras_image_holds(const miras_image *im, const void *p, size_t bytes, size_t align);
/* The same for count items of `item` bytes (count 0: any pointer; negative: 0). */
int miras_image_holds_array(const miras_image *im, const void *p, int64_t count, size_t item,
                            size_t align);
/* *ptr (count items of its type) inside the image, aligned for its type. */
#define MIRAS_IMAGE_HOLDS(im, ptr, count)                                                   \
  miras_image_holds_array((im), (ptr), (count), sizeof *(ptr), _Alignof(__typeof__(*(ptr))))
/* 1 when fn is the start of an exported function of the image (an entry point). */
int miras_image_holds_function(const miras_image *im, const void *fn);
/* 1 when s lies in a readable segment and is NUL-terminated before its end. */
int miras_image_holds_string(const miras_image *im, const char *s);

/* The GPU side of a library (cuda.c): its loaded kernels and cached workspace. */
struct miras_library_cuda;

struct miras_library {
  void *handle; /* from dlopen */
  char *path;   /* as given to miras_library_open, for messages */
  const miras_module_entry *entry;
  const miras_module_metadata *meta;
  int32_t has_cpu;     /* targets names "cpu": entry->forward(_range) are set */
  int32_t num_threads; /* >= 1 */
  int32_t check_finite; /* 1: the named calls scan their tensors for NaN and infinity */
  miras_pool *pool;    /* num_threads - 1 workers, started by the first parallel forward */
  pthread_mutex_t pool_lock; /* guards lazy creation of pool */
  /* NULL until the first GPU forward loads the kernels; loading, launches (they share
   * the workspace) and unloading hold cuda_lock. */
  struct miras_library_cuda *cuda;
  pthread_mutex_t cuda_lock;
};

/* Checks the pointers and B, T, H of caller-built arguments (the one check of
 * miras_library_forward_args and miras_library_forward_cuda); `who` prefixes messages. */
miras_status miras_check_forward_args(const miras_library *lib, const miras_forward_args *args,
                                      const char *who);

/* The index of the carried state whose checkpoints `name` ("W.checkpoints",
 * MIRAS_CHECKPOINTS_SUFFIX) names; -1 when it names none, -2 when it would but the
 * library has no backward. */
int32_t miras_checkpoints_state(const miras_module_metadata *m, const char *name);

/* A given chunk position (host memory) must hold integers 0 <= p < chunk for all B * H
 * pairs (miras_abi.h miras_state_role): the named message before a module runs. On the
 * device (miras_library_forward_cuda) it is not read back; the kernels take it mod C. */
miras_status miras_check_chunk_position(const miras_library *lib, const float *const *state_in,
                                        int64_t batch, int64_t heads);

/* The same for miras_backward_args (miras_library_backward_cuda): also
 * MIRAS_ERR_UNSUPPORTED for a library without a backward. */
miras_status miras_check_backward_args(const miras_library *lib, const miras_backward_args *args,
                                       const char *who);

/* init.c: the named calls (miras_library_forward, _forward_on, _backward) give every
 * state the caller left out (NULL in state_slots, num_states entries) whose declared
 * init is not zeros, carried states only, a buffer holding that init (runtime.h:
 * miras_library_initial_state). *owned (NULL when nothing was filled) keeps those
 * buffers; miras_free_absent_states frees it, also after a failure. */
miras_status miras_fill_absent_states(const miras_library *lib, int64_t batch, int64_t heads,
                                      void **state_slots, float ***owned);
void miras_free_absent_states(const miras_library *lib, float **owned);

/* The CUDA half of miras_library_forward_on (cuda.c): args hold validated host pointers
 * (inputs of input_dtype); copies them to the GPU, runs, copies o and the states back.
 * On failure nothing behind args is written. */
miras_status miras_cuda_forward_host(miras_library *lib, const miras_forward_args *args,
                                     int32_t input_dtype);

/* Unloads the library's kernels and frees its workspace (no-op when the GPU was never
 * used by this library). */
void miras_cuda_close_library(miras_library *lib);

#endif /* MIRAS_RUNTIME_INTERNAL_H */
