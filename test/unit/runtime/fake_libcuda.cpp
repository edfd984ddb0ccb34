// fake_libcuda.cpp: the fake driver of fake_cuda.hpp as a shared library named
// libcuda.so.1, exporting the driver's own symbol names. With its directory on
// LD_LIBRARY_PATH, the runtime's real dlopen/dlsym path and the `miras` tool's cuda
// commands run end to end without a GPU (cli_test.cpp). Allocations above 64 MiB fail,
// so `miras bench` measures its copy bandwidth on the smallest size it tries.
#include "fake_cuda.hpp"

using miras::test::fakeCuda;
using miras::test::fakeCudaDriver;

namespace {

const miras_cuda_driver &driver() {
  static bool limited = (fakeCuda().maxAlloc = size_t(64) << 20, true);
  (void)limited;
  return *fakeCudaDriver();
}

} // namespace

#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

FAKE_EXPORT int cuInit(unsigned flags) { return driver().cuInit(flags); }
FAKE_EXPORT int cuDeviceGetCount(int *count) { return driver().cuDeviceGetCount(count); }
FAKE_EXPORT int cuDeviceGet(int *device, int ordinal) {
  return driver().cuDeviceGet(device, ordinal);
}
FAKE_EXPORT int cuDeviceGetAttribute(int *value, int attribute, int device) {
  return driver().cuDeviceGetAttribute(value, attribute, device);
}
FAKE_EXPORT int cuDeviceGetName(char *name, int len, int device) {
  return driver().cuDeviceGetName(name, len, device);
}
FAKE_EXPORT int cuDevicePrimaryCtxRetain(miras_cu_context *ctx, int device) {
  return driver().cuDevicePrimaryCtxRetain(ctx, device);
}
FAKE_EXPORT int cuDevicePrimaryCtxRelease_v2(int device) {
  return driver().cuDevicePrimaryCtxRelease(device);
}
FAKE_EXPORT int cuCtxPushCurrent_v2(miras_cu_context ctx) { return driver().cuCtxPushCurrent(ctx); }
FAKE_EXPORT int cuCtxPopCurrent_v2(miras_cu_context *ctx) { return driver().cuCtxPopCurrent(ctx); }
FAKE_EXPORT int cuModuleLoadDataEx(miras_cu_module *module, const void *image,
                                   unsigned int n, int *options, void **values) {
  return driver().cuModuleLoadDataEx(module, image, n, options, values);
}
FAKE_EXPORT int cuModuleUnload(miras_cu_module module) { return driver().cuModuleUnload(module); }
FAKE_EXPORT int cuModuleGetFunction(miras_cu_function *f, miras_cu_module module,
                                    const char *name) {
  return driver().cuModuleGetFunction(f, module, name);
}
FAKE_EXPORT int cuFuncSetAttribute(miras_cu_function f, int attribute, int value) {
  return driver().cuFuncSetAttribute(f, attribute, value);
}
FAKE_EXPORT int cuLaunchKernel(miras_cu_function f, unsigned gx, unsigned gy, unsigned gz,
                               unsigned bx, unsigned by, unsigned bz, unsigned shared,
                               miras_cu_stream stream, void **params, void **extra) {
  return driver().cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra);
}
FAKE_EXPORT int cuMemAlloc_v2(miras_cu_deviceptr *p, size_t bytes) {
  return driver().cuMemAlloc(p, bytes);
}
FAKE_EXPORT int cuMemFree_v2(miras_cu_deviceptr p) { return driver().cuMemFree(p); }
FAKE_EXPORT int cuMemcpyHtoD_v2(miras_cu_deviceptr dst, const void *src, size_t n) {
  return driver().cuMemcpyHtoD(dst, src, n);
}
FAKE_EXPORT int cuMemcpyDtoH_v2(void *dst, miras_cu_deviceptr src, size_t n) {
  return driver().cuMemcpyDtoH(dst, src, n);
}
FAKE_EXPORT int cuMemcpyDtoDAsync_v2(miras_cu_deviceptr dst, miras_cu_deviceptr src, size_t n,
                                     miras_cu_stream stream) {
  return driver().cuMemcpyDtoDAsync(dst, src, n, stream);
}
FAKE_EXPORT int cuMemsetD32Async(miras_cu_deviceptr dst, unsigned value, size_t count,
                                 miras_cu_stream stream) {
  return driver().cuMemsetD32Async(dst, value, count, stream);
}
FAKE_EXPORT int cuStreamSynchronize(miras_cu_stream stream) {
  return driver().cuStreamSynchronize(stream);
}
FAKE_EXPORT int cuGetErrorName(int rc, const char **name) {
  return driver().cuGetErrorName(rc, name);
}
FAKE_EXPORT int cuGetErrorString(int rc, const char **text) {
  return driver().cuGetErrorString(rc, text);
}
