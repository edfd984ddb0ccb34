// runtime.hpp: C++ wrapper over the miras runtime C API (runtime.h), in
// libmiras_runtime_cxx.so (CMake: miras::runtime_cxx; pkg-config: miras-cxx).
// Owning float32 tensors, an RAII module handle, and exceptions (miras::Error) instead of
// status codes. Everything here is a thin layer: shape rules and validation live in the
// C API so that C, C++ and the CLI agree on them.
#ifndef MIRAS_RUNTIME_HPP
#define MIRAS_RUNTIME_HPP

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "miras/runtime.h"

namespace miras {

// A failed runtime operation: the C status plus the message of miras_last_error().
class MIRAS_RUNTIME_API Error : public std::runtime_error {
public:
  Error(miras_status status, const std::string &message)
      : std::runtime_error(message), status_(status) {}
  miras_status status() const { return status_; }

private:
  miras_status status_;
};

// A C-contiguous float32 tensor that owns its buffer.
class MIRAS_RUNTIME_API Tensor {
public:
  Tensor() = default;
  // Zero-filled tensor; throws Error(MIRAS_ERR_SHAPE) on a negative or overflowing shape.
  explicit Tensor(std::vector<int64_t> shape);
  // Takes `data`, whose size must equal the product of `shape`.
  Tensor(std::vector<int64_t> shape, std::vector<float> data);

  const std::vector<int64_t> &shape() const { return shape_; }
  int64_t numel() const { return static_cast<int64_t>(data_.size()); }
  float *data() { return data_.data(); }
  const float *data() const { return data_.data(); }
  std::vector<float> &values() { return data_; }
  const std::vector<float> &values() const { return data_; }

  // Number of elements of `shape`; throws Error(MIRAS_ERR_SHAPE) when invalid.
  static int64_t numelOf(const std::vector<int64_t> &shape);

  // Zero-filled, as Tensor(shape); `what` names it in the error when its memory cannot
  // be had (Error(MIRAS_ERR_ALLOC): "<what> of shape [..]: cannot allocate N bytes").
  static Tensor zeros(std::vector<int64_t> shape, const std::string &what);

private:
  std::vector<int64_t> shape_;
  std::vector<float> data_;
};

using TensorMap = std::map<std::string, Tensor>;

// "[2, 3, 4]", for messages.
MIRAS_RUNTIME_API std::string formatShape(const std::vector<int64_t> &shape);

// `count` zero floats for `what` (a tensor's name, for the message). Throws
// Error(MIRAS_ERR_ALLOC) naming it and the bytes asked for when they exceed this
// machine's physical memory or the allocation fails, instead of std::bad_alloc or a
// process killed for memory halfway through zero-filling.
MIRAS_RUNTIME_API std::vector<float> allocateFloats(int64_t count, const std::string &what);

// float32 -> bfloat16 rounded to nearest, ties to even (NaN stays a quiet NaN), and back
// (exact). bfloat16 is the upper half of a float32's bits.
MIRAS_RUNTIME_API uint16_t toBfloat16(float x);
MIRAS_RUNTIME_API float fromBfloat16(uint16_t x);

// Whether a CUDA driver and a GPU are usable (miras_cuda_available); on false, *why (when
// given) receives the one-line reason.
MIRAS_RUNTIME_API bool cudaAvailable(std::string *why = nullptr);

// An opened module (move-only).
class MIRAS_RUNTIME_API Library {
public:
  // Throws Error with the C API's status and message.
  static Library open(const std::string &path);

  Library(Library &&other) noexcept;
  Library &operator=(Library &&other) noexcept;
  Library(const Library &) = delete;
  Library &operator=(const Library &) = delete;
  ~Library();

  const miras_module_metadata &metadata() const;
  miras_library *handle() const { return lib_; }

  // Expected shape of a named tensor for the given B, T, H (see runtime.h).
  std::vector<int64_t> shapeOf(const std::string &name, int64_t batch, int64_t length,
                               int64_t heads) const;

  // Threads a forward splits its (batch, head) pairs over; 0 = one per CPU
  // (see miras_library_set_num_threads). Throws Error on a negative count.
  void setNumThreads(int32_t numThreads);
  int32_t numThreads() const { return miras_library_num_threads(lib_); }

  // The runtime's non-finite check (miras_library_set_check_finite; default from
  // MIRAS_CHECK_FINITE): forward and backward then throw Error(MIRAS_ERR_NON_FINITE)
  // naming the first NaN or infinity of an input, or of an output after the run.
  void setCheckFinite(bool enabled) { miras_library_set_check_finite(lib_, enabled); }
  bool checkFinite() const { return miras_library_check_finite(lib_) != 0; }

  // A zero state tensor [B, H, ...] for the named state.
  Tensor zeroState(const std::string &name, int64_t batch, int64_t heads) const;

  // The named state's declared initial value [B, H, ...] (miras_library_initial_state:
  // what forward and backward use when the state is not given). Throws Error for an
  // unknown name or B, H not positive.
  Tensor initialState(const std::string &name, int64_t batch, int64_t heads) const;

  // Runs the module. `inputs` holds q, k, v, every gate and optionally initial states;
  // the result holds o and every final state. Throws Error on any invalid tensor.
  TensorMap forward(const TensorMap &inputs) const { return forward(inputs, MIRAS_DEVICE_CPU); }

  // The same on `device` (miras_library_forward_on). With inputDtype MIRAS_DTYPE_BF16,
  // q, k, v and the gates are rounded to bfloat16 (toBfloat16) before the call; states
  // and o stay float32. The CPU takes float32 only (Error MIRAS_ERR_DTYPE otherwise);
  // CUDA throws Error(MIRAS_ERR_DEVICE) without a GPU or without cuda kernels.
  TensorMap forward(const TensorMap &inputs, miras_device device,
                    miras_dtype inputDtype = MIRAS_DTYPE_F32) const;

  // The backward pass (miras_library_backward; a library built with mirasc --backward):
  // `inputs` as forward's, `adjoints` holds o's adjoint and optionally the final states';
  // the result holds the adjoint of q, k, v, every gate and every initial state, named
  // like them. Throws Error (MIRAS_ERR_UNSUPPORTED without a backward pass).
  TensorMap backward(const TensorMap &inputs, const TensorMap &adjoints) const;

  // Whether the module carries CUDA kernels (built with --target=cuda or cpu,cuda).
  bool hasCuda() const { return miras_library_has_cuda(lib_) != 0; }

  // The GPU forward on device pointers, enqueued on `stream` (a CUstream; nullptr for
  // the default stream) without waiting: miras_library_forward_cuda.
  void forwardCuda(const miras_forward_args &args, miras_dtype inputDtype = MIRAS_DTYPE_F32,
                   void *stream = nullptr) const;

private:
  explicit Library(miras_library *lib) : lib_(lib) {}
  miras_library *lib_ = nullptr;
};

} // namespace miras

#endif // MIRAS_RUNTIME_HPP
