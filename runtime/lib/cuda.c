/* cuda.c: the GPU side of the runtime, through the CUDA driver API resolved at run time.
 *
 * Nothing here runs until a caller asks for the GPU: the first such call dlopens
 * libcuda.so.1 (or takes the table a test installed), calls cuInit and counts devices;
 * the outcome is kept for the process, so a machine without a driver pays one failed
 * dlopen and the CPU path never touches any of this. Each library loads its kernels into
 * the primary context of GPU 0 on its first GPU forward (the context PyTorch and the CUDA
 * runtime share, so device pointers from them are valid here) and unloads them at close.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "internal.h"

/* ---- the process-wide driver ------------------------------------------------------ */

static pthread_mutex_t driver_lock = PTHREAD_MUTEX_INITIALIZER;
/* Everything below is guarded by driver_lock. */
static int driver_resolved;            /* resolve_driver ran for the current source */
static miras_status driver_status;     /* and its outcome */
static char driver_error[512];         /* its message when it failed */
static const miras_cuda_driver *driver; /* the table in use after a successful resolve */
static miras_cuda_driver real_driver;   /* filled from libcuda.so.1 */
static void *real_handle;               /* never closed: the driver stays for the process */
static const miras_cuda_driver *test_driver;
static int test_load_fails;
static char test_load_error[256];

/* The driver's exported names; cuda.h maps the unversioned API names onto the _v2 ones
 * with macros, which dlsym does not see. */
static const struct {
  const char *name;
  size_t offset;
} driver_symbols[] = {
#define MIRAS_SYMBOL(field, name) {name, offsetof(miras_cuda_driver, field)}
    MIRAS_SYMBOL(cuInit, "cuInit"),
    MIRAS_SYMBOL(cuDeviceGetCount, "cuDeviceGetCount"),
    MIRAS_SYMBOL(cuDeviceGet, "cuDeviceGet"),
    MIRAS_SYMBOL(cuDeviceGetAttribute, "cuDeviceGetAttribute"),
    MIRAS_SYMBOL(cuDeviceGetName, "cuDeviceGetName"),
    MIRAS_SYMBOL(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
    MIRAS_SYMBOL(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
    MIRAS_SYMBOL(cuCtxPushCurrent, "cuCtxPushCurrent_v2"),
    MIRAS_SYMBOL(cuCtxPopCurrent, "cuCtxPopCurrent_v2"),
    MIRAS_SYMBOL(cuModuleLoadDataEx, "cuModuleLoadDataEx"),
    MIRAS_SYMBOL(cuModuleUnload, "cuModuleUnload"),
    MIRAS_SYMBOL(cuModuleGetFunction, "cuModuleGetFunction"),
    MIRAS_SYMBOL(cuFuncSetAttribute, "cuFuncSetAttribute"),
    MIRAS_SYMBOL(cuLaunchKernel, "cuLaunchKernel"),
    MIRAS_SYMBOL(cuMemAlloc, "cuMemAlloc_v2"),
    MIRAS_SYMBOL(cuMemFree, "cuMemFree_v2"),
    MIRAS_SYMBOL(cuMemcpyHtoD, "cuMemcpyHtoD_v2"),
    MIRAS_SYMBOL(cuMemcpyDtoH, "cuMemcpyDtoH_v2"),
    MIRAS_SYMBOL(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"),
    MIRAS_SYMBOL(cuMemsetD32Async, "cuMemsetD32Async"),
    MIRAS_SYMBOL(cuStreamSynchronize, "cuStreamSynchronize"),
    MIRAS_SYMBOL(cuGetErrorName, "cuGetErrorName"),
    MIRAS_SYMBOL(cuGetErrorString, "cuGetErrorString"),
#undef MIRAS_SYMBOL
};

miras_status miras_cuda_fail(const miras_cuda_driver *drv, const char *call, miras_cu_result rc) {
  const char *name = NULL, *text = NULL;
  if (drv != NULL && drv->cuGetErrorName != NULL &&
      drv->cuGetErrorName(rc, &name) != MIRAS_CU_SUCCESS)
    name = NULL;
  if (drv != NULL && drv->cuGetErrorString != NULL &&
      drv->cuGetErrorString(rc, &text) != MIRAS_CU_SUCCESS)
    text = NULL;
  if (name == NULL)
    return miras_fail(MIRAS_ERR_DEVICE, "%s failed: CUDA error %d", call, (int)rc);
  return miras_fail(MIRAS_ERR_DEVICE, "%s failed: %s (%s)", call, name,
                    text ? text : "no description");
}

static miras_status open_real_driver(void) {
  if (real_handle == NULL) {
    dlerror();
    real_handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (real_handle == NULL) {
      const char *why = dlerror();
      return miras_fail(MIRAS_ERR_DEVICE, "no CUDA driver: %s",
                        why ? why : "libcuda.so.1 cannot be loaded");
    }
  }
  for (size_t i = 0; i < sizeof driver_symbols / sizeof driver_symbols[0]; ++i) {
    void *fn = dlsym(real_handle, driver_symbols[i].name);
    if (fn == NULL)
      return miras_fail(MIRAS_ERR_DEVICE,
                        "CUDA driver libcuda.so.1 has no '%s' (driver too old?)",
                        driver_symbols[i].name);
    /* POSIX guarantees that a data pointer from dlsym converts to a function pointer. */
    memcpy((char *)&real_driver + driver_symbols[i].offset, &fn, sizeof fn);
  }
  driver = &real_driver;
  return MIRAS_OK;
}

/* Picks the table, initialises the driver and checks that a device exists; called once
 * per driver source with driver_lock held. */
static miras_status resolve_driver(void) {
  driver = NULL;
  miras_status st;
  if (test_driver != NULL) {
    driver = test_driver;
    st = MIRAS_OK;
  } else if (test_load_fails) {
    st = miras_fail(MIRAS_ERR_DEVICE, "no CUDA driver: %s", test_load_error);
  } else {
    st = open_real_driver();
  }
  if (st != MIRAS_OK)
    return st;
  miras_cu_result rc = driver->cuInit(0);
  if (rc != MIRAS_CU_SUCCESS)
    return miras_cuda_fail(driver, "cuInit", rc);
  int count = 0;
  rc = driver->cuDeviceGetCount(&count);
  if (rc != MIRAS_CU_SUCCESS)
    return miras_cuda_fail(driver, "cuDeviceGetCount", rc);
  if (count < 1)
    return miras_fail(MIRAS_ERR_DEVICE, "no CUDA device (the driver reports none)");
  return MIRAS_OK;
}

/* The initialised driver, or MIRAS_ERR_DEVICE with the (remembered) reason. */
static miras_status get_driver(const miras_cuda_driver **out) {
  pthread_mutex_lock(&driver_lock);
  if (!driver_resolved) {
    driver_status = resolve_driver();
    driver_resolved = 1;
    if (driver_status != MIRAS_OK)
      snprintf(driver_error, sizeof driver_error, "%s", miras_last_error());
  }
  miras_status st = driver_status;
  *out = st == MIRAS_OK ? driver : NULL;
  pthread_mutex_unlock(&driver_lock);
  if (st != MIRAS_OK)
    return miras_fail(st, "%s", driver_error); /* this thread's message, too */
  return MIRAS_OK;
}

void miras_cuda_set_driver_for_testing(const miras_cuda_driver *table, const char *load_error) {
  pthread_mutex_lock(&driver_lock);
  test_driver = table;
  test_load_fails = table == NULL && load_error != NULL;
  snprintf(test_load_error, sizeof test_load_error, "%s", load_error ? load_error : "");
  driver_resolved = 0;
  driver = NULL;
  pthread_mutex_unlock(&driver_lock);
}

miras_status miras_cuda_available(void) {
  const miras_cuda_driver *drv;
  return get_driver(&drv);
}

miras_status miras_cuda_gpu_acquire(miras_cuda_gpu *gpu) {
  memset(gpu, 0, sizeof *gpu);
  const miras_cuda_driver *drv;
  miras_status st = get_driver(&drv);
  if (st != MIRAS_OK)
    return st;
  miras_cu_device dev;
  miras_cu_result rc = drv->cuDeviceGet(&dev, 0);
  if (rc != MIRAS_CU_SUCCESS)
    return miras_cuda_fail(drv, "cuDeviceGet(0)", rc);
  int major = 0, minor = 0;
  rc = drv->cuDeviceGetAttribute(&major, MIRAS_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
  if (rc == MIRAS_CU_SUCCESS)
    rc = drv->cuDeviceGetAttribute(&minor, MIRAS_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                   dev);
  if (rc != MIRAS_CU_SUCCESS)
    return miras_cuda_fail(drv, "cuDeviceGetAttribute(compute capability)", rc);
  miras_cu_context ctx;
  rc = drv->cuDevicePrimaryCtxRetain(&ctx, dev);
  if (rc != MIRAS_CU_SUCCESS)
    return miras_cuda_fail(drv, "cuDevicePrimaryCtxRetain", rc);
  *gpu = (miras_cuda_gpu){drv, dev, ctx, major, minor};
  return MIRAS_OK;
}

void miras_cuda_gpu_release(miras_cuda_gpu *gpu) {
  if (gpu == NULL || gpu->driver == NULL)
    return;
  gpu->driver->cuDevicePrimaryCtxRelease(gpu->device);
  gpu->driver = NULL;
}

miras_status miras_cuda_push(const miras_cuda_gpu *gpu) {
  miras_cu_result rc = gpu->driver->cuCtxPushCurrent(gpu->context);
  return rc == MIRAS_CU_SUCCESS ? MIRAS_OK
                                : miras_cuda_fail(gpu->driver, "cuCtxPushCurrent", rc);
}

void miras_cuda_pop(const miras_cuda_gpu *gpu) {
  miras_cu_context ignored;
  gpu->driver->cuCtxPopCurrent(&ignored);
}

/* ---- a library's kernels ---------------------------------------------------------- */

enum { KERNEL_F32 = 0, KERNEL_BF16 = 1 };

struct miras_library_cuda {
  miras_cuda_gpu gpu;
  miras_cu_module module;
  miras_cu_function kernels[2]; /* KERNEL_F32, KERNEL_BF16 */
  miras_cu_deviceptr workspace; /* grown on demand, freed at close */
  size_t workspace_size;
  /* The backward's kernel (metadata cuda_backward), loaded by the first backward, and
   * its checkpoints and segments, grown on demand, freed at close. */
  miras_cu_module backward_module;
  miras_cu_function backward_kernel;
  miras_cu_deviceptr backward_buffer;
  size_t backward_buffer_size;
};

/* "sm_90" -> 9.0, "sm_100a" -> 10.0; 0 when arch is not of that form. */
static int parse_arch(const char *arch, int *major, int *minor) {
  if (strncmp(arch, "sm_", 3) != 0)
    return 0;
  char *end;
  long n = strtol(arch + 3, &end, 10);
  if (end == arch + 3 || n < 10 || n > 10000)
    return 0;
  *major = (int)(n / 10);
  *minor = (int)(n % 10);
  return 1;
}

/* Loads the cubin when it was assembled for this GPU, else (or when the cubin is
 * refused) the PTX, which the driver JIT-compiles for whatever GPU this is. */
static miras_status load_module(const miras_cuda_gpu *gpu, const miras_cuda_binary *bin,
                                miras_cu_module *module) {
  const miras_cuda_driver *drv = gpu->driver;
  int major, minor;
  if (bin->cubin != NULL && parse_arch(bin->arch, &major, &minor) &&
      major == gpu->cc_major && minor == gpu->cc_minor &&
      drv->cuModuleLoadDataEx(module, bin->cubin, 0, NULL, NULL) == MIRAS_CU_SUCCESS)
    return MIRAS_OK;
  /* The JIT says why it refused a PTX in its error log: keep the first line. */
  char log[512] = "";
  int options[2] = {MIRAS_CU_JIT_ERROR_LOG_BUFFER, MIRAS_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[2] = {log, (void *)(uintptr_t)sizeof log};
  miras_cu_result rc = drv->cuModuleLoadDataEx(module, bin->ptx, 2, options, values);
  if (rc == MIRAS_CU_SUCCESS)
    return MIRAS_OK;
  log[sizeof log - 1] = '\0';
  log[strcspn(log, "\n")] = '\0';
  char call[640];
  snprintf(call, sizeof call, "cuModuleLoadDataEx (PTX for %s on a cc %d.%d GPU%s%s)",
           bin->arch, gpu->cc_major, gpu->cc_minor, log[0] ? "; JIT log: " : "", log);
  return miras_cuda_fail(drv, call, rc);
}

/* The entry `name` of a loaded module, opted in to the table's dynamic shared memory. */
static miras_status get_kernel(const miras_cuda_driver *drv, miras_cu_module module,
                               const miras_cuda_binary *bin, const char *name,
                               miras_cu_function *out) {
  miras_cu_result rc = drv->cuModuleGetFunction(out, module, name);
  char call[192];
  if (rc != MIRAS_CU_SUCCESS) {
    snprintf(call, sizeof call, "cuModuleGetFunction('%s')", name);
    return miras_cuda_fail(drv, call, rc);
  }
  /* Above the default 48 KiB a kernel must opt in to its dynamic shared memory. */
  if (bin->shared_bytes > MIRAS_CUDA_DEFAULT_SHARED_BYTES) {
    rc = drv->cuFuncSetAttribute(*out, MIRAS_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int)bin->shared_bytes);
    if (rc != MIRAS_CU_SUCCESS) {
      snprintf(call, sizeof call,
               "cuFuncSetAttribute('%s', max dynamic shared memory = %u bytes)", name,
               (unsigned)bin->shared_bytes);
      return miras_cuda_fail(drv, call, rc);
    }
  }
  return MIRAS_OK;
}

static miras_status get_kernels(struct miras_library_cuda *c, const miras_cuda_binary *bin) {
  miras_status st = get_kernel(c->gpu.driver, c->module, bin, bin->kernel_f32,
                               &c->kernels[KERNEL_F32]);
  if (st == MIRAS_OK)
    st = get_kernel(c->gpu.driver, c->module, bin, bin->kernel_bf16, &c->kernels[KERNEL_BF16]);
  return st;
}

/* With the library's context current: the backward's module and kernel, loaded on the
 * first backward. */
static miras_status backward_kernel(miras_library *lib, struct miras_library_cuda *c) {
  if (c->backward_module != NULL)
    return MIRAS_OK;
  const miras_cuda_binary *bin = lib->meta->cuda_backward;
  miras_cu_module module = NULL;
  miras_status st = load_module(&c->gpu, bin, &module);
  if (st == MIRAS_OK)
    st = get_kernel(c->gpu.driver, module, bin, bin->kernel_f32, &c->backward_kernel);
  if (st != MIRAS_OK) {
    if (module != NULL)
      c->gpu.driver->cuModuleUnload(module);
    return st;
  }
  c->backward_module = module;
  return MIRAS_OK;
}

/* With lib->cuda_lock held: lib->cuda, loading it on first use. */
static miras_status library_cuda(miras_library *lib, struct miras_library_cuda **out) {
  if (lib->cuda != NULL) {
    *out = lib->cuda;
    return MIRAS_OK;
  }
  struct miras_library_cuda *c = calloc(1, sizeof *c);
  if (c == NULL)
    return miras_fail(MIRAS_ERR_DEVICE, "'%s': out of memory", lib->path);
  miras_status st = miras_cuda_gpu_acquire(&c->gpu);
  if (st != MIRAS_OK) {
    free(c);
    return st;
  }
  st = miras_cuda_push(&c->gpu);
  if (st == MIRAS_OK) {
    st = load_module(&c->gpu, lib->meta->cuda, &c->module);
    if (st == MIRAS_OK)
      st = get_kernels(c, lib->meta->cuda);
    if (st != MIRAS_OK && c->module != NULL)
      c->gpu.driver->cuModuleUnload(c->module);
    miras_cuda_pop(&c->gpu);
  }
  if (st != MIRAS_OK) {
    miras_cuda_gpu_release(&c->gpu);
    free(c);
    return st;
  }
  lib->cuda = c;
  *out = c;
  return MIRAS_OK;
}

void miras_cuda_close_library(miras_library *lib) {
  struct miras_library_cuda *c = lib->cuda;
  if (c == NULL)
    return;
  if (miras_cuda_push(&c->gpu) == MIRAS_OK) {
    /* cuMemFree waits for the kernels still using the workspace. */
    if (c->workspace != 0)
      c->gpu.driver->cuMemFree(c->workspace);
    if (c->backward_buffer != 0)
      c->gpu.driver->cuMemFree(c->backward_buffer);
    if (c->backward_module != NULL)
      c->gpu.driver->cuModuleUnload(c->backward_module);
    c->gpu.driver->cuModuleUnload(c->module);
    miras_cuda_pop(&c->gpu);
  }
  miras_cuda_gpu_release(&c->gpu);
  free(c);
  lib->cuda = NULL;
}

/* ---- launching -------------------------------------------------------------------- */

static miras_cu_deviceptr dptr(const void *p) { return (miras_cu_deviceptr)(uintptr_t)p; }

/* A device buffer of at least `bytes`, grown when too small. Growing frees the old
 * buffer; cuMemFree waits for earlier launches that still read it. */
static miras_status ensure_buffer(struct miras_library_cuda *c, miras_cu_deviceptr *buffer,
                                  size_t *size, int64_t bytes, const char *what) {
  if ((uint64_t)bytes > *size) {
    const miras_cuda_driver *drv = c->gpu.driver;
    if (*buffer != 0)
      drv->cuMemFree(*buffer);
    *buffer = 0;
    *size = 0;
    miras_cu_result rc = drv->cuMemAlloc(buffer, (size_t)bytes);
    if (rc != MIRAS_CU_SUCCESS) {
      *buffer = 0;
      char call[128];
      snprintf(call, sizeof call, "cuMemAlloc(%s, %lld bytes)", what, (long long)bytes);
      return miras_cuda_fail(drv, call, rc);
    }
    *size = (size_t)bytes;
  }
  return MIRAS_OK;
}

/* The per-(batch, head) workspace for `pairs` pairs (shared by the forward and the
 * backward: launches of one library are serialised). */
static miras_status ensure_workspace(struct miras_library_cuda *c, uint64_t per_pair,
                                     int64_t pairs, miras_cu_deviceptr *out) {
  *out = 0;
  if (per_pair == 0)
    return MIRAS_OK;
  int64_t bytes = per_pair > INT64_MAX ? -1 : miras_mul_checked(pairs, (int64_t)per_pair);
  if (bytes < 0)
    return miras_fail(MIRAS_ERR_SHAPE, "cuda workspace of %lld pairs x %llu bytes overflows",
                      (long long)pairs, (unsigned long long)per_pair);
  miras_status st = ensure_buffer(c, &c->workspace, &c->workspace_size, bytes, "workspace");
  if (st == MIRAS_OK)
    *out = c->workspace;
  return st;
}

/* Launches `fn` (entry `name` of `bin`) over `pairs` blocks of bin's threads and shared
 * memory, with the launch contract's parameters: num_dims int64 values, then num_ptrs
 * device pointers, each passed by address. `who` prefixes an out-of-memory message. */
static miras_status launch(const struct miras_library_cuda *c, miras_cu_function fn,
                           const char *name, const miras_cuda_binary *bin, int64_t pairs,
                           int64_t *dims, int32_t num_dims, miras_cu_deviceptr *ptrs,
                           int32_t num_ptrs, miras_cu_stream stream, const char *who) {
  void **params = malloc((size_t)(num_dims + num_ptrs) * sizeof *params);
  if (params == NULL)
    return miras_fail(MIRAS_ERR_DEVICE, "%s: out of memory", who);
  for (int32_t i = 0; i < num_dims; ++i)
    params[i] = &dims[i];
  for (int32_t i = 0; i < num_ptrs; ++i)
    params[num_dims + i] = &ptrs[i];
  const miras_cuda_driver *drv = c->gpu.driver;
  miras_cu_result rc = drv->cuLaunchKernel(fn, (unsigned)pairs, 1, 1, bin->block_threads, 1, 1,
                                           bin->shared_bytes, stream, params, NULL);
  free(params);
  if (rc != MIRAS_CU_SUCCESS) {
    char call[192];
    snprintf(call, sizeof call, "cuLaunchKernel('%s', grid %lld, block %u, %u shared bytes)",
             name, (long long)pairs, (unsigned)bin->block_threads, (unsigned)bin->shared_bytes);
    return miras_cuda_fail(drv, call, rc);
  }
  return MIRAS_OK;
}

/*
 * Enqueues one forward on `stream` (the library's context current, cuda_lock held):
 * the initial states into the state buffers, then the kernel, with the parameters of
 * the launch contract in miras_abi.h.
 */
static miras_status enqueue(miras_library *lib, struct miras_library_cuda *c,
                            const miras_forward_args *a, int32_t input_dtype,
                            miras_cu_stream stream) {
  const miras_module_metadata *m = lib->meta;
  const miras_cuda_binary *bin = m->cuda;
  const miras_cuda_driver *drv = c->gpu.driver;
  int64_t pairs = miras_mul_checked(a->batch, a->heads);
  if (pairs < 0 || pairs > INT32_MAX) /* gridDim.x is at most 2^31 - 1 */
    return miras_fail(MIRAS_ERR_SHAPE, "cuda forward: B * H = %lld * %lld exceeds the grid limit",
                      (long long)a->batch, (long long)a->heads);
  miras_cu_result rc;
  for (int32_t i = 0; i < m->num_states; ++i) {
    int64_t n = miras_state_numel(m, i, a->batch, a->heads);
    if (n < 0 || n > INT64_MAX / 4)
      return miras_fail(MIRAS_ERR_SHAPE, "cuda forward: state '%s' is too large",
                        m->states[i].name);
    if (a->state_in[i] == NULL)
      rc = drv->cuMemsetD32Async(dptr(a->state_out[i]), 0u, (size_t)n, stream);
    else if ((const void *)a->state_in[i] != (const void *)a->state_out[i])
      rc = drv->cuMemcpyDtoDAsync(dptr(a->state_out[i]), dptr(a->state_in[i]),
                                  (size_t)n * sizeof(float), stream);
    else
      continue;
    if (rc != MIRAS_CU_SUCCESS)
      return miras_cuda_fail(drv,
                             a->state_in[i] ? "cuMemcpyDtoDAsync(initial state)"
                                            : "cuMemsetD32Async(zero initial state)",
                             rc);
  }
  miras_cu_deviceptr workspace;
  miras_status st = ensure_workspace(c, bin->workspace_bytes, pairs, &workspace);
  if (st != MIRAS_OK)
    return st;

  /* int64 B, T, H, then q, k, v, gates, states, o, workspace: each by address. */
  int64_t dims[3] = {a->batch, a->length, a->heads};
  int32_t num_ptrs = 3 + m->num_gates + m->num_states + 2;
  miras_cu_deviceptr *ptrs = malloc((size_t)num_ptrs * sizeof *ptrs);
  if (ptrs == NULL)
    return miras_fail(MIRAS_ERR_DEVICE, "cuda forward: out of memory");
  int32_t k = 0;
  ptrs[k++] = dptr(a->q);
  ptrs[k++] = dptr(a->k);
  ptrs[k++] = dptr(a->v);
  for (int32_t i = 0; i < m->num_gates; ++i)
    ptrs[k++] = dptr(a->gates[i]);
  for (int32_t i = 0; i < m->num_states; ++i)
    ptrs[k++] = dptr(a->state_out[i]);
  ptrs[k++] = dptr(a->o);
  ptrs[k++] = workspace;
  const int bf16 = input_dtype == MIRAS_DTYPE_BF16;
  st = launch(c, c->kernels[bf16 ? KERNEL_BF16 : KERNEL_F32],
              bf16 ? bin->kernel_bf16 : bin->kernel_f32, bin, pairs, dims, 3, ptrs, num_ptrs,
              stream, "cuda forward");
  free(ptrs);
  return st;
}

/* Locks the library's GPU side, loads it when needed and makes its context current. */
static miras_status begin_gpu(miras_library *lib, struct miras_library_cuda **c) {
  pthread_mutex_lock(&lib->cuda_lock);
  miras_status st = library_cuda(lib, c);
  if (st == MIRAS_OK)
    st = miras_cuda_push(&(*c)->gpu);
  if (st != MIRAS_OK)
    pthread_mutex_unlock(&lib->cuda_lock);
  return st;
}

static void end_gpu(miras_library *lib, struct miras_library_cuda *c) {
  miras_cuda_pop(&c->gpu);
  pthread_mutex_unlock(&lib->cuda_lock);
}

int32_t miras_library_has_cuda(const miras_library *lib) {
  return lib != NULL && lib->meta->cuda != NULL;
}

miras_status miras_library_forward_cuda(miras_library *lib, const miras_forward_args *args,
                                        int32_t input_dtype, void *stream) {
  miras_status st = miras_check_forward_args(lib, args, "miras_library_forward_cuda");
  if (st != MIRAS_OK)
    return st;
  if (args->checkpoints != NULL)
    return miras_fail(MIRAS_ERR_UNSUPPORTED,
                      "miras_library_forward_cuda: checkpoints are saved by the cpu forward "
                      "only (set args->checkpoints to NULL; the cuda backward computes its own)");
  if (input_dtype != MIRAS_DTYPE_F32 && input_dtype != MIRAS_DTYPE_BF16)
    return miras_fail(MIRAS_ERR_DTYPE,
                      "miras_library_forward_cuda: input dtype %d is neither float32 (%d) nor "
                      "bfloat16 (%d)",
                      (int)input_dtype, (int)MIRAS_DTYPE_F32, (int)MIRAS_DTYPE_BF16);
  if (lib->meta->cuda == NULL)
    return miras_fail(MIRAS_ERR_DEVICE,
                      "'%s' has no cuda kernels (built with --target=%s); rebuild with "
                      "--target=cpu,cuda",
                      lib->path, lib->meta->targets);
  struct miras_library_cuda *c;
  st = begin_gpu(lib, &c);
  if (st != MIRAS_OK)
    return st;
  st = enqueue(lib, c, args, input_dtype, (miras_cu_stream)stream);
  end_gpu(lib, c);
  return st;
}

/* ---- the backward ---------------------------------------------------------------- */

/* Floats of one pair's state `i` and of its segment slot (the state with spare rows,
 * miras_abi.h: ceil(16 / row) more along the first extent). */
static int64_t state_floats(const miras_state_info *s) {
  int64_t n = 1;
  for (int32_t d = 0; d < s->rank; ++d)
    n *= s->shape[d];
  return n;
}
static int64_t slot_floats(const miras_state_info *s) {
  if (s->rank == 0)
    return 1;
  int64_t row = 1;
  for (int32_t d = 1; d < s->rank; ++d)
    row *= s->shape[d];
  return (s->shape[0] + (16 + row - 1) / row) * row;
}

static miras_status enqueue_backward_with(miras_library *lib, struct miras_library_cuda *c,
                                          const miras_backward_args *a, miras_cu_stream stream,
                                          int64_t pairs, int64_t *offsets);

/*
 * Enqueues one backward on `stream` (context current, cuda_lock held): the running
 * adjoints seeded in d_state_in, each pair's initial state into slot 0 of its
 * checkpoints, then the backward kernel over every pair (the launch of miras_abi.h).
 */
static miras_status enqueue_backward(miras_library *lib, struct miras_library_cuda *c,
                                     const miras_backward_args *a, miras_cu_stream stream) {
  int64_t pairs = miras_mul_checked(a->batch, a->heads);
  if (pairs < 0 || pairs > INT32_MAX)
    return miras_fail(MIRAS_ERR_SHAPE, "cuda backward: B * H = %lld * %lld exceeds the grid limit",
                      (long long)a->batch, (long long)a->heads);
  /* One buffer: per state, [pairs, checkpoints, state] then [pairs, S, slot] floats. */
  int64_t *offsets = malloc((size_t)(2 * lib->meta->num_states + 1) * sizeof *offsets);
  if (offsets == NULL)
    return miras_fail(MIRAS_ERR_DEVICE, "cuda backward: out of memory");
  miras_status st = enqueue_backward_with(lib, c, a, stream, pairs, offsets);
  free(offsets);
  return st;
}

/* enqueue_backward with room for the offsets of every state's checkpoints and segments
 * in the library's backward buffer. */
static miras_status enqueue_backward_with(miras_library *lib, struct miras_library_cuda *c,
                                          const miras_backward_args *a, miras_cu_stream stream,
                                          int64_t pairs, int64_t *offsets) {
  const miras_module_metadata *m = lib->meta;
  const miras_cuda_binary *bin = m->cuda_backward;
  const miras_cuda_driver *drv = c->gpu.driver;
  /* A carried state keeps the checkpoints of the chunk-aligned time (the chunk position
   * shifts it by up to C - 1 tokens) and a segment; an anchor or the chunk position one
   * slot, its initial value, and no segment (miras_abi.h). */
  const int64_t S = m->backward_segment;
  const int64_t carried_checkpoints = (a->length - 1 + m->chunk - 1) / S + 1;
  int64_t total = 0;
  for (int32_t i = 0; i < m->num_states; ++i) {
    const int carried = m->states[i].role == MIRAS_STATE_CARRIED;
    const int64_t checkpoints = carried ? carried_checkpoints : 1;
    int64_t ck = miras_mul_checked(miras_mul_checked(pairs, checkpoints),
                                   state_floats(&m->states[i]));
    int64_t seg = carried ? miras_mul_checked(miras_mul_checked(pairs, S),
                                              slot_floats(&m->states[i]))
                          : 0;
    if (ck < 0 || seg < 0 || ck > INT64_MAX / 8 - total || seg > INT64_MAX / 8 - total - ck)
      return miras_fail(MIRAS_ERR_SHAPE, "cuda backward: the checkpoints of state '%s' overflow",
                        m->states[i].name);
    offsets[2 * i] = total;
    offsets[2 * i + 1] = total + ck;
    total += ck + seg;
  }
  miras_status st = ensure_buffer(c, &c->backward_buffer, &c->backward_buffer_size,
                                  total * (int64_t)sizeof(float), "backward checkpoints");
  if (st != MIRAS_OK)
    return st;
  miras_cu_result rc = MIRAS_CU_SUCCESS;
  const char *failed = NULL;
  for (int32_t i = 0; i < m->num_states && rc == MIRAS_CU_SUCCESS; ++i) {
    const int64_t n = state_floats(&m->states[i]);
    const int64_t checkpoints =
        m->states[i].role == MIRAS_STATE_CARRIED ? carried_checkpoints : 1;
    miras_cu_deviceptr ck = c->backward_buffer + (miras_cu_deviceptr)(offsets[2 * i] * 4);
    /* Slot 0 of every pair's checkpoints first: d_state_in may be state_in. With one
     * checkpoint per pair the checkpoints are laid out like the state: one copy. */
    if (a->state_in[i] == NULL) {
      for (int64_t p = 0; p < pairs && rc == MIRAS_CU_SUCCESS; ++p)
        rc = drv->cuMemsetD32Async(ck + (miras_cu_deviceptr)(p * checkpoints * n * 4), 0u,
                                   (size_t)n, stream);
      failed = "cuMemsetD32Async(zero initial state)";
    } else if (checkpoints == 1) {
      rc = drv->cuMemcpyDtoDAsync(ck, dptr(a->state_in[i]), (size_t)(pairs * n * 4), stream);
      failed = "cuMemcpyDtoDAsync(initial state)";
    } else {
      for (int64_t p = 0; p < pairs && rc == MIRAS_CU_SUCCESS; ++p)
        rc = drv->cuMemcpyDtoDAsync(ck + (miras_cu_deviceptr)(p * checkpoints * n * 4),
                                    dptr(a->state_in[i] + p * n), (size_t)(n * 4), stream);
      failed = "cuMemcpyDtoDAsync(initial state)";
    }
    if (rc != MIRAS_CU_SUCCESS)
      break;
    /* The running adjoint starts as the final state's. */
    if (a->d_state_out[i] == NULL) {
      rc = drv->cuMemsetD32Async(dptr(a->d_state_in[i]), 0u, (size_t)(pairs * n), stream);
      failed = "cuMemsetD32Async(zero final state adjoint)";
    } else if ((const void *)a->d_state_out[i] != (const void *)a->d_state_in[i]) {
      rc = drv->cuMemcpyDtoDAsync(dptr(a->d_state_in[i]), dptr(a->d_state_out[i]),
                                  (size_t)(pairs * n * 4), stream);
      failed = "cuMemcpyDtoDAsync(final state adjoint)";
    }
  }
  if (rc != MIRAS_CU_SUCCESS)
    return miras_cuda_fail(drv, failed, rc);
  miras_cu_deviceptr workspace;
  st = ensure_workspace(c, bin->workspace_bytes, pairs, &workspace);
  if (st != MIRAS_OK)
    return st;

  /* int64 B, T, H, first_pair; q, k, v, gates, d_o, d_states, d_q, d_k, d_v, d_gates,
   * checkpoints, segments (carried states only), workspace: each by address. */
  int64_t dims[4] = {a->batch, a->length, a->heads, 0};
  const int32_t G = m->num_gates, N = m->num_states;
  int32_t num_ptrs = 3 + G + 1 + N + 3 + G + 2 * N + 1;
  miras_cu_deviceptr *ptrs = malloc((size_t)num_ptrs * sizeof *ptrs);
  if (ptrs == NULL)
    return miras_fail(MIRAS_ERR_DEVICE, "cuda backward: out of memory");
  int32_t k = 0;
  ptrs[k++] = dptr(a->q);
  ptrs[k++] = dptr(a->k);
  ptrs[k++] = dptr(a->v);
  for (int32_t i = 0; i < G; ++i)
    ptrs[k++] = dptr(a->gates[i]);
  ptrs[k++] = dptr(a->d_o);
  for (int32_t i = 0; i < N; ++i)
    ptrs[k++] = dptr(a->d_state_in[i]);
  ptrs[k++] = dptr(a->d_q);
  ptrs[k++] = dptr(a->d_k);
  ptrs[k++] = dptr(a->d_v);
  for (int32_t i = 0; i < G; ++i)
    ptrs[k++] = dptr(a->d_gates[i]);
  for (int32_t i = 0; i < N; ++i)
    ptrs[k++] = c->backward_buffer + (miras_cu_deviceptr)(offsets[2 * i] * 4);
  for (int32_t i = 0; i < N; ++i)
    if (m->states[i].role == MIRAS_STATE_CARRIED)
      ptrs[k++] = c->backward_buffer + (miras_cu_deviceptr)(offsets[2 * i + 1] * 4);
  ptrs[k++] = workspace;
  st = launch(c, c->backward_kernel, bin->kernel_f32, bin, pairs, dims, 4, ptrs, k,
              stream, "cuda backward");
  free(ptrs);
  return st;
}

miras_status miras_library_backward_cuda(miras_library *lib, const miras_backward_args *args,
                                         void *stream) {
  miras_status st = miras_check_backward_args(lib, args, "miras_library_backward_cuda");
  if (st != MIRAS_OK)
    return st;
  if (args->checkpoints != NULL)
    return miras_fail(MIRAS_ERR_UNSUPPORTED,
                      "miras_library_backward_cuda: the cuda backward computes its checkpoints "
                      "itself (set args->checkpoints to NULL)");
  if (lib->meta->cuda_backward == NULL)
    return miras_fail(lib->meta->backward_segment > 0 ? MIRAS_ERR_DEVICE : MIRAS_ERR_UNSUPPORTED,
                      "'%s' has no cuda backward kernel: rebuild module '%s' with mirasc "
                      "--backward --target=cpu,cuda",
                      lib->path, lib->meta->name);
  struct miras_library_cuda *c;
  st = begin_gpu(lib, &c);
  if (st != MIRAS_OK)
    return st;
  st = backward_kernel(lib, c);
  if (st == MIRAS_OK)
    st = enqueue_backward(lib, c, args, (miras_cu_stream)stream);
  end_gpu(lib, c);
  return st;
}

/* ---- the host-memory forward ------------------------------------------------------ */

/* Bytes of the named tensor for B, T, H with elements of elem_size bytes; -1 on overflow. */
static int64_t tensor_bytes(const miras_library *lib, const char *name,
                            const miras_forward_args *a, int64_t elem_size) {
  int32_t rank;
  int64_t shape[MIRAS_TENSOR_MAX_RANK];
  if (miras_library_tensor_shape(lib, name, a->batch, a->length, a->heads, &rank, shape) !=
      MIRAS_OK)
    return -1;
  int64_t n = elem_size;
  for (int32_t i = 0; i < rank && n >= 0; ++i)
    n = miras_mul_checked(n, shape[i]);
  return n;
}

enum { DEVICE_ALIGN = 256 };

/*
 * One device allocation holds every tensor (one cuMemAlloc and one cuMemFree per call):
 * buffer i is [offset[i], offset[i] + bytes[i]). Order: q, k, v, gates, states, o.
 */
typedef struct host_plan {
  int32_t count;
  const void **host_in; /* source of the upload, NULL for none (outputs, absent states) */
  void **host_out;      /* destination of the download, NULL for inputs */
  int64_t *bytes, *offset;
  int64_t total;
} host_plan;

static miras_status make_plan(const miras_library *lib, const miras_forward_args *a,
                              int32_t input_dtype, host_plan *p) {
  const miras_module_metadata *m = lib->meta;
  int32_t n = 3 + m->num_gates + m->num_states + 1;
  memset(p, 0, sizeof *p);
  p->count = n;
  p->host_in = calloc((size_t)n, sizeof *p->host_in);
  p->host_out = calloc((size_t)n, sizeof *p->host_out);
  p->bytes = calloc((size_t)n, sizeof *p->bytes);
  p->offset = calloc((size_t)n, sizeof *p->offset);
  if (!p->host_in || !p->host_out || !p->bytes || !p->offset)
    return miras_fail(MIRAS_ERR_DEVICE, "cuda forward: out of memory");
  int64_t in_size = input_dtype == MIRAS_DTYPE_BF16 ? 2 : 4;
  int32_t k = 0;
  const char *fixed[3] = {"q", "k", "v"};
  const void *fixed_data[3] = {a->q, a->k, a->v};
  for (int32_t i = 0; i < 3; ++i, ++k) {
    p->host_in[k] = fixed_data[i];
    p->bytes[k] = tensor_bytes(lib, fixed[i], a, in_size);
  }
  for (int32_t i = 0; i < m->num_gates; ++i, ++k) {
    p->host_in[k] = a->gates[i];
    p->bytes[k] = tensor_bytes(lib, m->gates[i].name, a, in_size);
  }
  for (int32_t i = 0; i < m->num_states; ++i, ++k) {
    p->host_in[k] = a->state_in[i];
    p->host_out[k] = a->state_out[i];
    p->bytes[k] = tensor_bytes(lib, m->states[i].name, a, 4);
  }
  p->host_out[k] = a->o;
  p->bytes[k] = tensor_bytes(lib, "o", a, 4);
  int64_t total = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (p->bytes[i] < 0 || total > INT64_MAX - p->bytes[i] - DEVICE_ALIGN)
      return miras_fail(MIRAS_ERR_SHAPE, "cuda forward: the tensors' total size overflows");
    p->offset[i] = total;
    total += (p->bytes[i] + DEVICE_ALIGN - 1) / DEVICE_ALIGN * DEVICE_ALIGN;
  }
  p->total = total;
  return MIRAS_OK;
}

static void free_plan(host_plan *p) {
  free(p->host_in);
  free(p->host_out);
  free(p->bytes);
  free(p->offset);
}

/* With the context current: upload, enqueue on the default stream, wait, and download
 * o and the states into `staging` (the outputs' bytes back to back, in plan order). */
static miras_status run_on_device(miras_library *lib, struct miras_library_cuda *c,
                                  const miras_forward_args *a, const host_plan *p,
                                  miras_cu_deviceptr base, int32_t input_dtype, char *staging) {
  const miras_module_metadata *m = lib->meta;
  const miras_cuda_driver *drv = c->gpu.driver;
  miras_cu_result rc;
  for (int32_t i = 0; i < p->count; ++i) {
    if (p->host_in[i] == NULL)
      continue;
    rc = drv->cuMemcpyHtoD(base + (miras_cu_deviceptr)p->offset[i], p->host_in[i],
                           (size_t)p->bytes[i]);
    if (rc != MIRAS_CU_SUCCESS)
      return miras_cuda_fail(drv, "cuMemcpyHtoD", rc);
  }
  /* Device views of the buffers. A state's buffer already holds its initial value
   * (state_in = state_out: enqueue copies nothing) or is zero-filled by enqueue. */
  int32_t first_state = 3 + m->num_gates;
  void **ptr = malloc((size_t)(p->count + m->num_states) * sizeof *ptr);
  if (ptr == NULL)
    return miras_fail(MIRAS_ERR_DEVICE, "cuda forward: out of memory");
  void **state_in = ptr + p->count;
  for (int32_t i = 0; i < p->count; ++i)
    ptr[i] = (void *)(uintptr_t)(base + (miras_cu_deviceptr)p->offset[i]);
  for (int32_t i = 0; i < m->num_states; ++i)
    state_in[i] = p->host_in[first_state + i] ? ptr[first_state + i] : NULL;
  miras_forward_args dev = {
      .batch = a->batch, .length = a->length, .heads = a->heads,
      .q = ptr[0], .k = ptr[1], .v = ptr[2],
      .gates = (const float *const *)(ptr + 3),
      .state_in = (const float *const *)state_in,
      .state_out = (float *const *)(ptr + first_state),
      .o = ptr[p->count - 1],
  };
  /* The legacy default stream orders the kernel after the synchronous uploads. */
  miras_status st = enqueue(lib, c, &dev, input_dtype, NULL);
  free(ptr);
  if (st != MIRAS_OK)
    return st;
  rc = drv->cuStreamSynchronize(NULL);
  if (rc != MIRAS_CU_SUCCESS)
    return miras_cuda_fail(drv, "cuStreamSynchronize (the kernel failed)", rc);
  for (int32_t i = 0; i < p->count; ++i) {
    if (p->host_out[i] == NULL)
      continue;
    rc = drv->cuMemcpyDtoH(staging, base + (miras_cu_deviceptr)p->offset[i],
                           (size_t)p->bytes[i]);
    if (rc != MIRAS_CU_SUCCESS)
      return miras_cuda_fail(drv, "cuMemcpyDtoH", rc);
    staging += p->bytes[i];
  }
  return MIRAS_OK;
}

miras_status miras_cuda_forward_host(miras_library *lib, const miras_forward_args *a,
                                     int32_t input_dtype) {
  host_plan p;
  miras_status st = miras_check_chunk_position(lib, a->state_in, a->batch, a->heads);
  if (st != MIRAS_OK)
    return st;
  st = make_plan(lib, a, input_dtype, &p);
  /* The results land in staging first and reach the caller's buffers only once every
   * step has succeeded. */
  int64_t out_bytes = 0;
  for (int32_t i = 0; st == MIRAS_OK && i < p.count; ++i)
    if (p.host_out[i] != NULL)
      out_bytes += p.bytes[i];
  char *staging = NULL;
  if (st == MIRAS_OK && (staging = malloc(out_bytes > 0 ? (size_t)out_bytes : 1)) == NULL)
    st = miras_fail(MIRAS_ERR_DEVICE, "cuda forward: out of memory for %lld bytes of results",
                    (long long)out_bytes);
  struct miras_library_cuda *c = NULL;
  if (st == MIRAS_OK)
    st = begin_gpu(lib, &c);
  if (st == MIRAS_OK) {
    const miras_cuda_driver *drv = c->gpu.driver;
    miras_cu_deviceptr base = 0;
    miras_cu_result rc = drv->cuMemAlloc(&base, (size_t)p.total);
    if (rc != MIRAS_CU_SUCCESS) {
      char call[96];
      snprintf(call, sizeof call, "cuMemAlloc(%lld bytes)", (long long)p.total);
      st = miras_cuda_fail(drv, call, rc);
    } else {
      st = run_on_device(lib, c, a, &p, base, input_dtype, staging);
      drv->cuMemFree(base);
    }
    end_gpu(lib, c);
  }
  if (st == MIRAS_OK) {
    const char *from = staging;
    for (int32_t i = 0; i < p.count; ++i) {
      if (p.host_out[i] == NULL)
        continue;
      memcpy(p.host_out[i], from, (size_t)p.bytes[i]);
      from += p.bytes[i];
    }
  }
  free(staging);
  free_plan(&p);
  return st;
}
