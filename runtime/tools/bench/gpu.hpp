// gpu.hpp: device memory and copy bandwidth for `miras bench --device cuda`, through the
// driver table the runtime resolved (cuda_driver.h): the tool links no CUDA either.
#ifndef MIRAS_TOOLS_BENCH_GPU_HPP
#define MIRAS_TOOLS_BENCH_GPU_HPP

#include <cstddef>
#include <string>
#include <vector>

#include "cuda_driver.h"

namespace miras::bench {

// GPU 0's primary context, current on this thread while the object lives. Buffers it
// hands out are freed by its destructor. Throws miras::Error(MIRAS_ERR_DEVICE) with the
// runtime's reason when there is no usable GPU.
class Gpu {
public:
  Gpu();
  ~Gpu();
  Gpu(const Gpu &) = delete;
  Gpu &operator=(const Gpu &) = delete;

  std::string name() const;          // "NVIDIA H200"
  std::string computeCapability() const; // "9.0"

  // A device buffer of `bytes` holding a copy of host memory (`host` may be null: left
  // uninitialised). Returned as a pointer for miras_forward_args.
  void *upload(const void *host, size_t bytes);
  void download(void *host, const void *device, size_t bytes) const;
  void synchronize() const; // the default stream

  // Bytes per second of a large device-to-device copy, counting read and write (2 bytes
  // per byte copied): the bandwidth a memory-bound kernel can hope for. Tries 1 GiB and
  // halves on allocation failure; best of `repeat` copies.
  double copyBandwidth(int repeat = 5) const;

private:
  void check(const char *call, miras_cu_result rc) const;

  miras_cuda_gpu gpu_{};
  std::vector<miras_cu_deviceptr> buffers_;
};

} // namespace miras::bench

#endif // MIRAS_TOOLS_BENCH_GPU_HPP
