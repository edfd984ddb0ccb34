// runtime.cpp: the C++ wrapper (runtime.hpp) over the C API.
#include "miras/runtime.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>

#include <unistd.h>

namespace miras {
namespace {

void check(miras_status status) {
  if (status != MIRAS_OK)
    throw Error(status, miras_last_error());
}

// A C view of a tensor (of bfloat16 values when `bf16` is given). Inputs are passed
// through a non-const pointer because miras_tensor serves both directions; the module
// only reads inputs.
miras_tensor viewOf(const std::string &name, const Tensor &t,
                    const std::vector<uint16_t> *bf16 = nullptr) {
  miras_tensor v{};
  v.name = name.c_str();
  v.data = bf16 ? static_cast<void *>(const_cast<uint16_t *>(bf16->data()))
                : static_cast<void *>(const_cast<float *>(t.data()));
  v.dtype = bf16 ? MIRAS_DTYPE_BF16 : MIRAS_DTYPE_F32;
  // An over-long shape keeps its true rank so that the C API reports it.
  v.rank = static_cast<int32_t>(t.shape().size());
  std::copy_n(t.shape().begin(), std::min<size_t>(t.shape().size(), MIRAS_TENSOR_MAX_RANK),
              v.shape);
  return v;
}

} // namespace

int64_t Tensor::numelOf(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw Error(MIRAS_ERR_SHAPE, "invalid tensor shape " + formatShape(shape) +
                                       ": negative dimension");
    if (__builtin_mul_overflow(n, d, &n))
      throw Error(MIRAS_ERR_SHAPE, "invalid tensor shape " + formatShape(shape) +
                                       ": more elements than a 64-bit count holds");
  }
  return n;
}

Tensor::Tensor(std::vector<int64_t> shape)
    : shape_(std::move(shape)), data_(allocateFloats(numelOf(shape_), "tensor")) {}

Tensor Tensor::zeros(std::vector<int64_t> shape, const std::string &what) {
  int64_t n = numelOf(shape);
  return Tensor(shape, allocateFloats(n, what + " of shape " + formatShape(shape)));
}

std::vector<float> allocateFloats(int64_t count, const std::string &what) {
  const uint64_t bytes = static_cast<uint64_t>(count) * sizeof(float);
  long pages = sysconf(_SC_PHYS_PAGES), pageSize = sysconf(_SC_PAGESIZE);
  const uint64_t memory = pages > 0 && pageSize > 0 ? uint64_t(pages) * uint64_t(pageSize) : 0;
  auto fail = [&](const std::string &why) {
    return Error(MIRAS_ERR_ALLOC, what + ": cannot allocate " + std::to_string(bytes) +
                                      " bytes (" + why + ")");
  };
  if (count < 0 || static_cast<uint64_t>(count) > SIZE_MAX / sizeof(float))
    throw fail("too large to address");
  if (memory > 0 && bytes > memory)
    throw fail("more than this machine's " + std::to_string(memory >> 20) + " MiB of memory");
  try {
    return std::vector<float>(static_cast<size_t>(count), 0.0f);
  } catch (const std::bad_alloc &) {
    throw fail("out of memory");
  }
}

Tensor::Tensor(std::vector<int64_t> shape, std::vector<float> data)
    : shape_(std::move(shape)), data_(std::move(data)) {
  if (numelOf(shape_) != numel())
    throw Error(MIRAS_ERR_SHAPE, "tensor of shape " + formatShape(shape_) + " given " +
                                     std::to_string(numel()) + " values");
}

uint16_t toBfloat16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) // NaN: keep the sign, force a quiet payload
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  // Adding 0x7fff plus the lowest kept bit rounds to nearest with ties to even; a carry
  // into the exponent is the correct rounding up (to infinity at the top).
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float fromBfloat16(uint16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

bool cudaAvailable(std::string *why) {
  if (miras_cuda_available() == MIRAS_OK)
    return true;
  if (why)
    *why = miras_last_error();
  return false;
}

std::string formatShape(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Library Library::open(const std::string &path) {
  miras_library *lib = nullptr;
  check(miras_library_open(path.c_str(), &lib));
  return Library(lib);
}

Library::Library(Library &&other) noexcept : lib_(std::exchange(other.lib_, nullptr)) {}

Library &Library::operator=(Library &&other) noexcept {
  if (this != &other) {
    miras_library_close(lib_);
    lib_ = std::exchange(other.lib_, nullptr);
  }
  return *this;
}

Library::~Library() { miras_library_close(lib_); }

const miras_module_metadata &Library::metadata() const {
  if (lib_ == nullptr)
    throw Error(MIRAS_ERR_NULL_POINTER, "use of a moved-from miras::Library");
  return *miras_library_metadata(lib_);
}

std::vector<int64_t> Library::shapeOf(const std::string &name, int64_t batch, int64_t length,
                                      int64_t heads) const {
  int32_t rank = 0;
  int64_t shape[MIRAS_TENSOR_MAX_RANK];
  check(miras_library_tensor_shape(lib_, name.c_str(), batch, length, heads, &rank, shape));
  return std::vector<int64_t>(shape, shape + rank);
}

void Library::setNumThreads(int32_t numThreads) {
  check(miras_library_set_num_threads(lib_, numThreads));
}

Tensor Library::zeroState(const std::string &name, int64_t batch, int64_t heads) const {
  const miras_module_metadata &m = metadata();
  for (int32_t i = 0; i < m.num_states; ++i)
    if (name == m.states[i].name)
      return Tensor::zeros(shapeOf(name, batch, 1, heads), "state '" + name + "'");
  throw Error(MIRAS_ERR_INVALID_ARGUMENT,
              "module '" + std::string(m.name) + "' has no state named '" + name + "'");
}

Tensor Library::initialState(const std::string &name, int64_t batch, int64_t heads) const {
  const miras_module_metadata &m = metadata();
  for (int32_t i = 0; i < m.num_states; ++i) {
    if (name != m.states[i].name)
      continue;
    Tensor state = Tensor::zeros(shapeOf(name, batch, 1, heads), "state '" + name + "'");
    check(miras_library_initial_state(lib_, i, batch, heads, state.data()));
    return state;
  }
  throw Error(MIRAS_ERR_INVALID_ARGUMENT,
              "module '" + std::string(m.name) + "' has no state named '" + name + "'");
}

/// q's shape when it is [B, T, H, Dk] with B, T, H positive (what the outputs are
/// sized from), else null: the C API then reports what is wrong with it.
static const std::vector<int64_t> *validQueryShape(const TensorMap &inputs) {
  auto q = inputs.find("q");
  if (q == inputs.end() || q->second.shape().size() != 4 ||
      !std::all_of(q->second.shape().begin(), q->second.shape().begin() + 3,
                   [](int64_t d) { return d > 0; }))
    return nullptr;
  return &q->second.shape();
}

TensorMap Library::forward(const TensorMap &inputs, miras_device device,
                           miras_dtype inputDtype) const {
  const miras_module_metadata &m = metadata();
  // Outputs are sized from q's B, T, H. A missing or malformed q allocates nothing and
  // is then reported by the C API, which owns all validation messages.
  TensorMap outputs;
  if (const std::vector<int64_t> *qShape = validQueryShape(inputs)) {
    const std::vector<int64_t> &s = *qShape;
    outputs.emplace("o", Tensor::zeros(shapeOf("o", s[0], s[1], s[2]), "output 'o'"));
    for (int32_t i = 0; i < m.num_states; ++i)
      outputs.emplace(m.states[i].name,
                      Tensor::zeros(shapeOf(m.states[i].name, s[0], s[1], s[2]),
                                    "final state '" + std::string(m.states[i].name) + "'"));
  }
  // bfloat16 copies of every input but the states (which stay float32); an unknown
  // name is converted too and then reported by the C API.
  auto isState = [&](const std::string &name) {
    for (int32_t i = 0; i < m.num_states; ++i)
      if (name == m.states[i].name)
        return true;
    return false;
  };
  std::map<std::string, std::vector<uint16_t>> bf16;
  if (inputDtype == MIRAS_DTYPE_BF16) {
    for (const auto &[name, t] : inputs) {
      if (isState(name))
        continue;
      std::vector<uint16_t> &x = bf16[name];
      x.reserve(t.values().size());
      for (float value : t.values())
        x.push_back(toBfloat16(value));
    }
  } else if (inputDtype != MIRAS_DTYPE_F32) {
    throw Error(MIRAS_ERR_DTYPE, "input dtype " + std::to_string(inputDtype) +
                                     " is neither float32 nor bfloat16");
  }
  std::vector<miras_tensor> in, out;
  for (const auto &[name, t] : inputs) {
    auto converted = bf16.find(name);
    in.push_back(viewOf(name, t, converted == bf16.end() ? nullptr : &converted->second));
  }
  for (const auto &[name, t] : outputs)
    out.push_back(viewOf(name, t));
  check(miras_library_forward_on(lib_, device, in.data(), static_cast<int32_t>(in.size()),
                                 out.data(), static_cast<int32_t>(out.size())));
  return outputs;
}

TensorMap Library::backward(const TensorMap &inputs, const TensorMap &adjoints) const {
  const miras_module_metadata &m = metadata();
  // The adjoints are sized from q's B, T, H, like forward's outputs.
  TensorMap outputs;
  if (const std::vector<int64_t> *qShape = validQueryShape(inputs)) {
    const std::vector<int64_t> &s = *qShape;
    std::vector<std::string> names{"q", "k", "v"};
    for (int32_t i = 0; i < m.num_gates; ++i)
      names.push_back(m.gates[i].name);
    for (int32_t i = 0; i < m.num_states; ++i)
      names.push_back(m.states[i].name);
    for (const std::string &name : names)
      outputs.emplace(name, Tensor::zeros(shapeOf(name, s[0], s[1], s[2]),
                                          "adjoint of '" + name + "'"));
  }
  std::vector<miras_tensor> in, adj, out;
  for (const auto &[name, t] : inputs)
    in.push_back(viewOf(name, t));
  for (const auto &[name, t] : adjoints)
    adj.push_back(viewOf(name, t));
  for (const auto &[name, t] : outputs)
    out.push_back(viewOf(name, t));
  check(miras_library_backward(lib_, in.data(), static_cast<int32_t>(in.size()), adj.data(),
                               static_cast<int32_t>(adj.size()), out.data(),
                               static_cast<int32_t>(out.size())));
  return outputs;
}

void Library::forwardCuda(const miras_forward_args &args, miras_dtype inputDtype,
                          void *stream) const {
  check(miras_library_forward_cuda(lib_, &args, inputDtype, stream));
}

} // namespace miras
