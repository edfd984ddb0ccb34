// gpu.cpp: see gpu.hpp.
#include "bench/gpu.hpp"

#include <algorithm>
#include <chrono>

#include "miras/runtime.hpp"

namespace miras::bench {

Gpu::Gpu() {
  if (miras_cuda_gpu_acquire(&gpu_) != MIRAS_OK)
    throw Error(MIRAS_ERR_DEVICE, std::string("device cuda: ") + miras_last_error());
  if (miras_cuda_push(&gpu_) != MIRAS_OK) {
    std::string why = miras_last_error();
    miras_cuda_gpu_release(&gpu_);
    throw Error(MIRAS_ERR_DEVICE, "device cuda: " + why);
  }
}

Gpu::~Gpu() {
  for (miras_cu_deviceptr p : buffers_)
    gpu_.driver->cuMemFree(p);
  miras_cuda_pop(&gpu_);
  miras_cuda_gpu_release(&gpu_);
}

void Gpu::check(const char *call, miras_cu_result rc) const {
  if (rc != MIRAS_CU_SUCCESS) {
    miras_cuda_fail(gpu_.driver, call, rc);
    throw Error(MIRAS_ERR_DEVICE, std::string("device cuda: ") + miras_last_error());
  }
}

std::string Gpu::name() const {
  char name[256] = {};
  if (gpu_.driver->cuDeviceGetName(name, sizeof name - 1, gpu_.device) != MIRAS_CU_SUCCESS)
    return "unknown GPU";
  return name;
}

std::string Gpu::computeCapability() const {
  return std::to_string(gpu_.cc_major) + "." + std::to_string(gpu_.cc_minor);
}

void *Gpu::upload(const void *host, size_t bytes) {
  miras_cu_deviceptr p = 0;
  check("cuMemAlloc", gpu_.driver->cuMemAlloc(&p, std::max<size_t>(bytes, 1)));
  buffers_.push_back(p);
  if (host != nullptr && bytes > 0)
    check("cuMemcpyHtoD", gpu_.driver->cuMemcpyHtoD(p, host, bytes));
  return reinterpret_cast<void *>(static_cast<uintptr_t>(p));
}

void Gpu::download(void *host, const void *device, size_t bytes) const {
  check("cuMemcpyDtoH",
        gpu_.driver->cuMemcpyDtoH(host, reinterpret_cast<uintptr_t>(device), bytes));
}

void Gpu::synchronize() const {
  check("cuStreamSynchronize", gpu_.driver->cuStreamSynchronize(nullptr));
}

double Gpu::copyBandwidth(int repeat) const {
  const miras_cuda_driver *d = gpu_.driver;
  for (size_t bytes = size_t(1) << 30; bytes >= (size_t(64) << 20); bytes /= 2) {
    miras_cu_deviceptr src = 0, dst = 0;
    if (d->cuMemAlloc(&src, bytes) != MIRAS_CU_SUCCESS)
      continue;
    if (d->cuMemAlloc(&dst, bytes) != MIRAS_CU_SUCCESS) {
      d->cuMemFree(src);
      continue;
    }
    double best = 0.0;
    miras_cu_result rc = d->cuMemsetD32Async(src, 0u, bytes / 4, nullptr);
    for (int i = -1; i < repeat && rc == MIRAS_CU_SUCCESS; ++i) { // i = -1: warm-up
      if ((rc = d->cuStreamSynchronize(nullptr)) != MIRAS_CU_SUCCESS)
        break;
      auto start = std::chrono::steady_clock::now();
      rc = d->cuMemcpyDtoDAsync(dst, src, bytes, nullptr);
      if (rc == MIRAS_CU_SUCCESS)
        rc = d->cuStreamSynchronize(nullptr);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (i >= 0 && s > 0)
        best = std::max(best, 2.0 * double(bytes) / s);
    }
    d->cuMemFree(dst);
    d->cuMemFree(src);
    check("cuMemcpyDtoDAsync (copy bandwidth)", rc);
    return best;
  }
  throw Error(MIRAS_ERR_DEVICE, "device cuda: cannot allocate 2 x 64 MiB to measure the copy "
                                "bandwidth");
}

} // namespace miras::bench
