/*
 * cuda_driver.h: the slice of the CUDA driver API the runtime uses, as a table of
 * function pointers (not installed).
 *
 * The runtime must load on machines without CUDA, so it never includes cuda.h nor links
 * libcuda: the few driver types are declared here with the driver's ABI (handles are
 * opaque pointers, CUdevice an int, CUdeviceptr a 64-bit integer, CUresult an int enum),
 * and cuda.c fills the table from dlopen("libcuda.so.1") on the first call that needs
 * the GPU. Entry names are the versioned symbols the driver exports (cuda.h maps e.g.
 * cuMemAlloc to cuMemAlloc_v2 with macros, which a dlsym does not see).
 *
 * The miras tool (bench timing of device memory) and the unit tests (a fake driver) use
 * this header too; nothing here is part of the public API. Its functions are hidden in
 * libmiras_runtime.so (MIRAS_INTERNAL): the tool and the tests link the runtime's
 * objects themselves (runtime/CMakeLists.txt).
 */
#ifndef MIRAS_RUNTIME_CUDA_DRIVER_H
#define MIRAS_RUNTIME_CUDA_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MIRAS_INTERNAL __attribute__((visibility("hidden")))
#else
#define MIRAS_INTERNAL
#endif

#include "miras/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int miras_cu_result;                 /* CUresult; 0 is CUDA_SUCCESS */
typedef int miras_cu_device;                 /* CUdevice */
typedef unsigned long long miras_cu_deviceptr; /* CUdeviceptr (v2, 64 bit) */
typedef struct miras_cu_context_st *miras_cu_context;
typedef struct miras_cu_module_st *miras_cu_module;
typedef struct miras_cu_function_st *miras_cu_function;
typedef struct miras_cu_stream_st *miras_cu_stream;

/* Enumerator values from cuda.h (they are part of the driver's ABI). */
enum {
  MIRAS_CU_SUCCESS = 0,
  MIRAS_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
  MIRAS_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
  MIRAS_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
};

/* cuModuleLoadDataEx options (CUjit_option): where the JIT writes why a PTX failed. */
enum {
  MIRAS_CU_JIT_ERROR_LOG_BUFFER = 5,
  MIRAS_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
};

/* Dynamic shared memory a kernel may use without opting in through
 * MIRAS_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES. */
#define MIRAS_CUDA_DEFAULT_SHARED_BYTES (48u * 1024u)

typedef struct miras_cuda_driver {
  miras_cu_result (*cuInit)(unsigned int flags);
  miras_cu_result (*cuDeviceGetCount)(int *count);
  miras_cu_result (*cuDeviceGet)(miras_cu_device *device, int ordinal);
  miras_cu_result (*cuDeviceGetAttribute)(int *value, int attribute, miras_cu_device device);
  miras_cu_result (*cuDeviceGetName)(char *name, int len, miras_cu_device device);
  miras_cu_result (*cuDevicePrimaryCtxRetain)(miras_cu_context *ctx, miras_cu_device device);
  miras_cu_result (*cuDevicePrimaryCtxRelease)(miras_cu_device device);   /* _v2 */
  miras_cu_result (*cuCtxPushCurrent)(miras_cu_context ctx);              /* _v2 */
  miras_cu_result (*cuCtxPopCurrent)(miras_cu_context *ctx);              /* _v2 */
  miras_cu_result (*cuModuleLoadDataEx)(miras_cu_module *module, const void *image,
                                        unsigned int num_options, int *options,
                                        void **option_values);
  miras_cu_result (*cuModuleUnload)(miras_cu_module module);
  miras_cu_result (*cuModuleGetFunction)(miras_cu_function *function, miras_cu_module module,
                                         const char *name);
  miras_cu_result (*cuFuncSetAttribute)(miras_cu_function function, int attribute, int value);
  miras_cu_result (*cuLaunchKernel)(miras_cu_function function, unsigned int grid_x,
                                    unsigned int grid_y, unsigned int grid_z,
                                    unsigned int block_x, unsigned int block_y,
                                    unsigned int block_z, unsigned int shared_bytes,
                                    miras_cu_stream stream, void **params, void **extra);
  miras_cu_result (*cuMemAlloc)(miras_cu_deviceptr *ptr, size_t bytes);   /* _v2 */
  miras_cu_result (*cuMemFree)(miras_cu_deviceptr ptr);                   /* _v2 */
  miras_cu_result (*cuMemcpyHtoD)(miras_cu_deviceptr dst, const void *src, size_t bytes); /* _v2 */
  miras_cu_result (*cuMemcpyDtoH)(void *dst, miras_cu_deviceptr src, size_t bytes);       /* _v2 */
  miras_cu_result (*cuMemcpyDtoDAsync)(miras_cu_deviceptr dst, miras_cu_deviceptr src,
                                       size_t bytes, miras_cu_stream stream);           /* _v2 */
  miras_cu_result (*cuMemsetD32Async)(miras_cu_deviceptr dst, unsigned int value,
                                      size_t count, miras_cu_stream stream);
  miras_cu_result (*cuStreamSynchronize)(miras_cu_stream stream);
  miras_cu_result (*cuGetErrorName)(miras_cu_result error, const char **name);
  miras_cu_result (*cuGetErrorString)(miras_cu_result error, const char **text);
} miras_cuda_driver;

/* GPU 0 as the runtime uses it: the driver table, the device and its primary context. */
typedef struct miras_cuda_gpu {
  const miras_cuda_driver *driver;
  miras_cu_device device;
  miras_cu_context context; /* retained primary context */
  int cc_major, cc_minor;   /* compute capability */
} miras_cuda_gpu;

/* Resolves the driver (once per process), initialises it and retains the primary
 * context of GPU 0. Each successful call is paired with miras_cuda_gpu_release.
 * Errors: MIRAS_ERR_DEVICE with a one-line reason via miras_fail. Used by the miras
 * tool too, which times device memory itself. */
MIRAS_INTERNAL miras_status miras_cuda_gpu_acquire(miras_cuda_gpu *gpu);
MIRAS_INTERNAL void miras_cuda_gpu_release(miras_cuda_gpu *gpu);

/* Makes gpu's context current on this thread / restores the previous one. */
MIRAS_INTERNAL miras_status miras_cuda_push(const miras_cuda_gpu *gpu);
MIRAS_INTERNAL void miras_cuda_pop(const miras_cuda_gpu *gpu);

/* MIRAS_ERR_DEVICE "<call> failed: <CUDA_ERROR_NAME> (<driver's description>)". */
MIRAS_INTERNAL miras_status miras_cuda_fail(const miras_cuda_driver *driver,
                                               const char *call, miras_cu_result rc);

/*
 * For tests only: replaces the driver the runtime would dlopen. With a table, every
 * later GPU call uses it (the table must outlive its use); with table NULL and
 * load_error non-NULL, resolving the driver fails with load_error as if dlopen had;
 * with both NULL the real libcuda.so.1 is resolved again on next use. Each call resets
 * the process-wide driver state (cuInit is called again). Libraries that loaded their
 * kernels through the previous driver must be closed before it is replaced.
 */
MIRAS_INTERNAL void miras_cuda_set_driver_for_testing(const miras_cuda_driver *table,
                                                         const char *load_error);

#ifdef __cplusplus
}
#endif

#endif /* MIRAS_RUNTIME_CUDA_DRIVER_H */
