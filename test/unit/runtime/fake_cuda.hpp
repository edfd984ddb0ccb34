// fake_cuda.hpp: a fake CUDA driver for the runtime's GPU path (installed with
// miras_cuda_set_driver_for_testing). "Device memory" is host malloc; cuLaunchKernel
// reads B, T, H and the buffers from the parameter array of the launch contract
// (miras_abi.h) and runs the fake module's CPU code on them (fake_kernel_forward, found
// in the library whose image was loaded), widening bfloat16 inputs first. Every call is
// recorded, and any call can be made to fail.
#ifndef MIRAS_TEST_UNIT_RUNTIME_FAKE_CUDA_HPP
#define MIRAS_TEST_UNIT_RUNTIME_FAKE_CUDA_HPP

#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include <dlfcn.h>

#include "cuda_driver.h"
#include "miras/runtime.hpp"

namespace miras::test {

// CUresult values of cuda.h that the fake returns.
enum : int {
  kCuErrorOutOfMemory = 2,
  kCuErrorNoDevice = 100,
  kCuErrorInvalidImage = 200,
  kCuErrorInvalidValue = 1,
  kCuErrorNotFound = 500,
  kCuErrorLaunchFailed = 719,
};

struct FakeLaunch {
  std::string kernel;
  unsigned grid[3] = {}, block[3] = {}, shared = 0;
  void *stream = nullptr;
  int64_t B = 0, T = 0, H = 0;
  std::vector<miras_cu_deviceptr> ptrs; // q, k, v, gates, states, o, workspace
};

struct FakeModule {
  void *handle = nullptr; // the fake module library, kept open while loaded
  int32_t (*kernel)(const miras_forward_args *) = nullptr;
  int32_t (*backward)(const miras_backward_args *) = nullptr; // its CPU backward
  bool cubin = false;
};

struct FakeFunction {
  const FakeModule *module;
  std::string name;
  bool bf16;
};

struct FakeCuda {
  int ccMajor = 9, ccMinor = 0, deviceCount = 1, initResult = 0;
  bool failCubinLoad = false;
  size_t maxAlloc = SIZE_MAX; // larger cuMemAlloc requests fail with out of memory
  std::map<std::string, int> failures; // call name -> CUresult it returns

  std::vector<std::string> calls;
  std::vector<std::string> loadedImages; // "cubin" / "ptx", per successful load
  std::vector<FakeLaunch> launches;
  std::vector<std::pair<int, int>> funcAttributes;
  std::map<miras_cu_deviceptr, size_t> allocations;
  int pushes = 0, pops = 0, retains = 0, releases = 0, unloads = 0;
  int memsets = 0, dtodCopies = 0;
  std::deque<FakeModule> modules;
  std::deque<FakeFunction> functions;

  int count(const std::string &call) const {
    int n = 0;
    for (const std::string &c : calls)
      n += c == call;
    return n;
  }
  // Bytes of device memory still allocated.
  size_t liveBytes() const {
    size_t n = 0;
    for (const auto &[p, size] : allocations)
      n += size;
    return n;
  }
  // Whether [p, p + bytes) lies inside one allocation.
  bool isDevice(miras_cu_deviceptr p, size_t bytes) const {
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin())
      return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second;
  }
};

inline FakeCuda &fakeCuda() {
  static FakeCuda fake;
  return fake;
}

namespace fake_detail {

// Records the call; returns the failure configured for it (0 when none).
inline int enter(const char *call) {
  fakeCuda().calls.push_back(call);
  auto it = fakeCuda().failures.find(call);
  return it == fakeCuda().failures.end() ? 0 : it->second;
}

inline float widen(uint16_t h) { return miras::fromBfloat16(h); }

inline std::vector<float> widened(miras_cu_deviceptr p, size_t n) {
  const uint16_t *h = reinterpret_cast<const uint16_t *>(p);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = widen(h[i]);
  return out;
}

// The backward's launch (miras_abi.h) of fake_linear: B, T, H, first_pair; q, k, v,
// alpha, beta, d_o, dW, dq, dk, dv, dalpha, dbeta, the checkpoints and the segments of
// W, workspace. Runs the module's CPU backward with the initial state read from each
// pair's checkpoint slot 0 and dW as both the final state's adjoint and the result.
inline miras_cu_result launchBackward(const FakeFunction *fn, FakeLaunch &l, void **params) {
  FakeCuda &fake = fakeCuda();
  int64_t first = *static_cast<int64_t *>(params[3]);
  for (int i = 0; i < 15; ++i)
    l.ptrs.push_back(*static_cast<miras_cu_deviceptr *>(params[4 + i]));
  fake.launches.push_back(l);
  const size_t tok = size_t(l.B * l.T * l.H), pairs = size_t(l.B * l.H);
  const size_t S = 4, checkpoints = (size_t(l.T) + S - 1) / S, slot = (4 + 6) * 3;
  const size_t sizes[15] = {tok * 12, tok * 12, tok * 16, tok * 4, tok * 16, tok * 16,
                            pairs * 48, tok * 12, tok * 12, tok * 16, tok * 4, tok * 16,
                            pairs * checkpoints * 48, pairs * S * slot * 4, pairs * 32};
  for (int i = 0; i < 15; ++i)
    if (!fake.isDevice(l.ptrs[i], sizes[i]))
      return kCuErrorInvalidValue;
  if (first != 0 || l.grid[0] != pairs || fn->module->backward == nullptr)
    return kCuErrorInvalidValue;
  auto f = [&](int i) { return reinterpret_cast<float *>(l.ptrs[i]); };
  std::vector<float> initial(pairs * 12);
  for (size_t p = 0; p < pairs; ++p)
    std::memcpy(&initial[p * 12], f(12) + p * checkpoints * 12, 12 * sizeof(float));
  const float *gates[2] = {f(3), f(4)};
  const float *stateIn[1] = {initial.data()};
  const float *dStateOut[1] = {f(6)};
  float *dGates[2] = {f(10), f(11)};
  float *dStateIn[1] = {f(6)};
  miras_backward_args a{l.B, l.T, l.H, f(0), f(1), f(2), gates, stateIn, f(5), dStateOut,
                        f(7), f(8), f(9), dGates, dStateIn};
  return fn->module->backward(&a) == 0 ? 0 : kCuErrorLaunchFailed;
}

inline miras_cu_result launch(miras_cu_function f, unsigned gx, unsigned gy, unsigned gz,
                              unsigned bx, unsigned by, unsigned bz, unsigned shared,
                              miras_cu_stream stream, void **params, void **extra) {
  if (int rc = enter("cuLaunchKernel"))
    return rc;
  FakeCuda &fake = fakeCuda();
  const FakeFunction *fn = reinterpret_cast<const FakeFunction *>(f);
  FakeLaunch l;
  l.kernel = fn->name;
  l.grid[0] = gx, l.grid[1] = gy, l.grid[2] = gz;
  l.block[0] = bx, l.block[1] = by, l.block[2] = bz;
  l.shared = shared;
  l.stream = stream;
  if (params == nullptr || extra != nullptr)
    return kCuErrorInvalidValue;
  l.B = *static_cast<int64_t *>(params[0]);
  l.T = *static_cast<int64_t *>(params[1]);
  l.H = *static_cast<int64_t *>(params[2]);
  if (fn->name.size() > 13 && fn->name.compare(fn->name.size() - 13, 13, "_backward_f32") == 0)
    return launchBackward(fn, l, params);
  // fake_linear: 2 gates, 1 state -> q, k, v, alpha, beta, W, o, workspace.
  for (int i = 0; i < 8; ++i)
    l.ptrs.push_back(*static_cast<miras_cu_deviceptr *>(params[3 + i]));
  fake.launches.push_back(l);
  const size_t tok = size_t(l.B * l.T * l.H), pairs = size_t(l.B * l.H);
  const size_t in = fn->bf16 ? 2 : 4;
  const size_t sizes[8] = {tok * 3 * in, tok * 3 * in, tok * 4 * in, tok * in,
                           tok * 4 * in, pairs * 12 * 4, tok * 4 * 4, pairs * 64};
  for (int i = 0; i < 8; ++i)
    if (!fake.isDevice(l.ptrs[i], sizes[i]))
      return kCuErrorInvalidValue; // a host pointer, or a buffer too small
  if (gx != pairs || gy != 1 || gz != 1)
    return kCuErrorInvalidValue;
  std::vector<float> q, k, v, alpha, beta;
  const float *p[5];
  if (fn->bf16) {
    q = widened(l.ptrs[0], tok * 3), k = widened(l.ptrs[1], tok * 3);
    v = widened(l.ptrs[2], tok * 4), alpha = widened(l.ptrs[3], tok);
    beta = widened(l.ptrs[4], tok * 4);
    const float *w[5] = {q.data(), k.data(), v.data(), alpha.data(), beta.data()};
    std::copy(w, w + 5, p);
  } else {
    for (int i = 0; i < 5; ++i)
      p[i] = reinterpret_cast<const float *>(l.ptrs[i]);
  }
  float *W = reinterpret_cast<float *>(l.ptrs[5]);
  const float *gates[2] = {p[3], p[4]};
  const float *stateIn[1] = {W}; // states are in/out
  float *stateOut[1] = {W};
  miras_forward_args a{l.B, l.T, l.H, p[0], p[1], p[2], gates, stateIn, stateOut,
                       reinterpret_cast<float *>(l.ptrs[6])};
  return fn->module->kernel(&a) == 0 ? 0 : kCuErrorLaunchFailed;
}

/// Writes `text` into the JIT error log a cuModuleLoadDataEx caller passed, if any.
inline void writeJitLog(unsigned int n, const int *options, void **values, const char *text) {
  char *buffer = nullptr;
  size_t size = 0;
  for (unsigned int i = 0; i < n; ++i) {
    if (options[i] == MIRAS_CU_JIT_ERROR_LOG_BUFFER)
      buffer = static_cast<char *>(values[i]);
    else if (options[i] == MIRAS_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
      size = reinterpret_cast<uintptr_t>(values[i]);
  }
  if (buffer != nullptr && size > 0)
    std::snprintf(buffer, size, "%s", text);
}

inline miras_cu_result loadData(miras_cu_module *module, const void *image, unsigned int n,
                                int *options, void **values) {
  if (int rc = enter("cuModuleLoadDataEx")) {
    writeJitLog(n, options, values, "ptxas fatal: the fake JIT refuses\nsecond line");
    return rc;
  }
  FakeCuda &fake = fakeCuda();
  // The image lives in a fake module library: find it and its kernel.
  Dl_info info;
  if (dladdr(image, &info) == 0 || info.dli_fname == nullptr)
    return kCuErrorInvalidImage;
  void *handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr)
    return kCuErrorInvalidImage;
  auto *entry = static_cast<const miras_module_entry *>(dlsym(handle, "miras_module_v1"));
  const miras_cuda_binary *bin = entry ? entry->metadata()->cuda : nullptr;
  const miras_cuda_binary *backward = entry ? entry->metadata()->cuda_backward : nullptr;
  if (backward && (image == backward->cubin || image == backward->ptx))
    bin = backward;
  bool cubin = bin && image == bin->cubin;
  if (bin == nullptr || (!cubin && image != bin->ptx) || (cubin && fake.failCubinLoad)) {
    dlclose(handle);
    return kCuErrorInvalidImage;
  }
  FakeModule m;
  m.handle = handle;
  m.kernel = reinterpret_cast<int32_t (*)(const miras_forward_args *)>(
      dlsym(handle, "fake_kernel_forward"));
  m.backward = entry->backward;
  m.cubin = cubin;
  fake.modules.push_back(m);
  fake.loadedImages.push_back(cubin ? "cubin" : "ptx");
  *module = reinterpret_cast<miras_cu_module>(&fake.modules.back());
  return 0;
}

inline const char *errorName(int rc) {
  switch (rc) {
  case 0: return "CUDA_SUCCESS";
  case kCuErrorInvalidValue: return "CUDA_ERROR_INVALID_VALUE";
  case kCuErrorOutOfMemory: return "CUDA_ERROR_OUT_OF_MEMORY";
  case kCuErrorNoDevice: return "CUDA_ERROR_NO_DEVICE";
  case kCuErrorInvalidImage: return "CUDA_ERROR_INVALID_IMAGE";
  case kCuErrorNotFound: return "CUDA_ERROR_NOT_FOUND";
  case kCuErrorLaunchFailed: return "CUDA_ERROR_LAUNCH_FAILED";
  }
  return nullptr;
}

} // namespace fake_detail

// The table; each entry records its call, honours FakeCuda::failures and does its work.
inline const miras_cuda_driver *fakeCudaDriver() {
  using namespace fake_detail;
  static const miras_cuda_driver table = {
      /* cuInit */ [](unsigned flags) -> miras_cu_result {
        if (int rc = enter("cuInit"))
          return rc;
        return flags == 0 ? fakeCuda().initResult : kCuErrorInvalidValue;
      },
      /* cuDeviceGetCount */ [](int *count) -> miras_cu_result {
        if (int rc = enter("cuDeviceGetCount"))
          return rc;
        *count = fakeCuda().deviceCount;
        return 0;
      },
      /* cuDeviceGet */ [](miras_cu_device *device, int ordinal) -> miras_cu_result {
        if (int rc = enter("cuDeviceGet"))
          return rc;
        *device = ordinal;
        return ordinal < fakeCuda().deviceCount ? 0 : kCuErrorInvalidValue;
      },
      /* cuDeviceGetAttribute */ [](int *value, int attribute, miras_cu_device) -> miras_cu_result {
        if (int rc = enter("cuDeviceGetAttribute"))
          return rc;
        if (attribute == MIRAS_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
          *value = fakeCuda().ccMajor;
        else if (attribute == MIRAS_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
          *value = fakeCuda().ccMinor;
        else
          return kCuErrorInvalidValue;
        return 0;
      },
      /* cuDeviceGetName */ [](char *name, int len, miras_cu_device) -> miras_cu_result {
        if (int rc = enter("cuDeviceGetName"))
          return rc;
        std::snprintf(name, size_t(len), "Fake GPU");
        return 0;
      },
      /* cuDevicePrimaryCtxRetain */ [](miras_cu_context *ctx, miras_cu_device) -> miras_cu_result {
        if (int rc = enter("cuDevicePrimaryCtxRetain"))
          return rc;
        static int context;
        *ctx = reinterpret_cast<miras_cu_context>(&context);
        ++fakeCuda().retains;
        return 0;
      },
      /* cuDevicePrimaryCtxRelease */ [](miras_cu_device) -> miras_cu_result {
        ++fakeCuda().releases;
        return enter("cuDevicePrimaryCtxRelease");
      },
      /* cuCtxPushCurrent */ [](miras_cu_context) -> miras_cu_result {
        if (int rc = enter("cuCtxPushCurrent"))
          return rc;
        ++fakeCuda().pushes;
        return 0;
      },
      /* cuCtxPopCurrent */ [](miras_cu_context *ctx) -> miras_cu_result {
        ++fakeCuda().pops;
        if (ctx)
          *ctx = nullptr;
        return enter("cuCtxPopCurrent");
      },
      /* cuModuleLoadDataEx */ loadData,
      /* cuModuleUnload */ [](miras_cu_module module) -> miras_cu_result {
        ++fakeCuda().unloads;
        dlclose(reinterpret_cast<FakeModule *>(module)->handle);
        return enter("cuModuleUnload");
      },
      /* cuModuleGetFunction */ [](miras_cu_function *f, miras_cu_module module,
                                   const char *name) -> miras_cu_result {
        if (int rc = enter("cuModuleGetFunction"))
          return rc;
        std::string n = name;
        if (n != "fake_linear_f32" && n != "fake_linear_bf16" && n != "fake_linear_backward_f32")
          return kCuErrorNotFound;
        fakeCuda().functions.push_back(
            {reinterpret_cast<FakeModule *>(module), n, n == "fake_linear_bf16"});
        *f = reinterpret_cast<miras_cu_function>(&fakeCuda().functions.back());
        return 0;
      },
      /* cuFuncSetAttribute */ [](miras_cu_function, int attribute, int value) -> miras_cu_result {
        if (int rc = enter("cuFuncSetAttribute"))
          return rc;
        fakeCuda().funcAttributes.push_back({attribute, value});
        return 0;
      },
      /* cuLaunchKernel */ launch,
      /* cuMemAlloc */ [](miras_cu_deviceptr *p, size_t bytes) -> miras_cu_result {
        if (int rc = enter("cuMemAlloc"))
          return rc;
        if (bytes > fakeCuda().maxAlloc)
          return kCuErrorOutOfMemory;
        void *host = std::malloc(bytes);
        if (host == nullptr)
          return kCuErrorOutOfMemory;
        *p = reinterpret_cast<miras_cu_deviceptr>(host);
        fakeCuda().allocations[*p] = bytes;
        return 0;
      },
      /* cuMemFree */ [](miras_cu_deviceptr p) -> miras_cu_result {
        enter("cuMemFree");
        if (fakeCuda().allocations.erase(p) == 0)
          return kCuErrorInvalidValue;
        std::free(reinterpret_cast<void *>(p));
        return 0;
      },
      /* cuMemcpyHtoD */ [](miras_cu_deviceptr dst, const void *src, size_t n) -> miras_cu_result {
        if (int rc = enter("cuMemcpyHtoD"))
          return rc;
        if (!fakeCuda().isDevice(dst, n))
          return kCuErrorInvalidValue;
        std::memcpy(reinterpret_cast<void *>(dst), src, n);
        return 0;
      },
      /* cuMemcpyDtoH */ [](void *dst, miras_cu_deviceptr src, size_t n) -> miras_cu_result {
        if (int rc = enter("cuMemcpyDtoH"))
          return rc;
        if (!fakeCuda().isDevice(src, n))
          return kCuErrorInvalidValue;
        std::memcpy(dst, reinterpret_cast<const void *>(src), n);
        return 0;
      },
      /* cuMemcpyDtoDAsync */ [](miras_cu_deviceptr dst, miras_cu_deviceptr src, size_t n,
                                 miras_cu_stream) -> miras_cu_result {
        if (int rc = enter("cuMemcpyDtoDAsync"))
          return rc;
        if (!fakeCuda().isDevice(dst, n) || !fakeCuda().isDevice(src, n))
          return kCuErrorInvalidValue;
        ++fakeCuda().dtodCopies;
        std::memmove(reinterpret_cast<void *>(dst), reinterpret_cast<const void *>(src), n);
        return 0;
      },
      /* cuMemsetD32Async */ [](miras_cu_deviceptr dst, unsigned value, size_t count,
                                miras_cu_stream) -> miras_cu_result {
        if (int rc = enter("cuMemsetD32Async"))
          return rc;
        if (!fakeCuda().isDevice(dst, count * 4))
          return kCuErrorInvalidValue;
        ++fakeCuda().memsets;
        uint32_t *words = reinterpret_cast<uint32_t *>(dst);
        for (size_t i = 0; i < count; ++i)
          words[i] = value;
        return 0;
      },
      /* cuStreamSynchronize */ [](miras_cu_stream) -> miras_cu_result {
        return enter("cuStreamSynchronize");
      },
      /* cuGetErrorName */ [](miras_cu_result rc, const char **name) -> miras_cu_result {
        *name = errorName(rc);
        return *name ? 0 : kCuErrorInvalidValue;
      },
      /* cuGetErrorString */ [](miras_cu_result rc, const char **text) -> miras_cu_result {
        *text = errorName(rc) ? "described by the fake driver" : nullptr;
        return *text ? 0 : kCuErrorInvalidValue;
      },
  };
  return &table;
}

} // namespace miras::test

#endif // MIRAS_TEST_UNIT_RUNTIME_FAKE_CUDA_HPP
