// core.cpp: miras._core, the Python binding of the runtime's C API (runtime.h).
//
// Thin on purpose: a Library handle over miras_library_open, its metadata as the JSON
// `miras info` prints (metadata_json.hpp, one writer), and forward / backward over
// named tensors given as (name, data address, shape) triples. The Python layer
// (miras/_module.py) turns torch tensors into those triples after making them float32
// and contiguous, and keeps the tensors alive for the call; the runtime checks every
// name, shape and pointer against the metadata, so a wrong triple is an exception, not
// a misread. The struct layouts come from the runtime's own headers: nothing is copied.
// The GIL is released while a kernel runs; a library's calls are serialised by a mutex
// of its own (taken without the GIL held), so one thread cannot change the thread count
// under another's running call.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "metadata_json.hpp"
#include "miras/runtime.h"

namespace nb = nanobind;

namespace {

// A failed runtime call: the status's name ("shape error") and miras_last_error().
struct RuntimeError {
  miras_status status;
  std::string message;
};

void check(miras_status status) {
  if (status != MIRAS_OK)
    throw RuntimeError{status, miras_last_error()};
}

// (name, data address, shape): one tensor of a call, as the Python layer passes it.
using TensorSpec = std::tuple<std::string, std::uintptr_t, std::vector<int64_t>>;

// The miras_tensor views of a call's specs. The names stay owned by the specs.
std::vector<miras_tensor> views(const std::vector<TensorSpec> &specs, const char *role) {
  std::vector<miras_tensor> out(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto &[name, data, shape] = specs[i];
    if (shape.size() > MIRAS_TENSOR_MAX_RANK)
      throw RuntimeError{MIRAS_ERR_SHAPE, std::string(role) + " tensor '" + name + "' has rank " +
                                              std::to_string(shape.size()) + ", more than " +
                                              std::to_string(MIRAS_TENSOR_MAX_RANK)};
    miras_tensor &t = out[i];
    t.name = name.c_str();
    t.data = reinterpret_cast<void *>(data);
    t.dtype = MIRAS_DTYPE_F32;
    t.rank = static_cast<int32_t>(shape.size());
    for (size_t d = 0; d < shape.size(); ++d)
      t.shape[d] = shape[d];
  }
  return out;
}

// Device addresses as the float pointers of miras_forward_args / miras_backward_args.
std::vector<float *> floats(const std::vector<std::uintptr_t> &addresses) {
  std::vector<float *> out;
  for (std::uintptr_t a : addresses)
    out.push_back(reinterpret_cast<float *>(a));
  return out;
}

class Library {
public:
  explicit Library(const std::string &path) { check(miras_library_open(path.c_str(), &lib_)); }
  ~Library() { miras_library_close(lib_); }
  Library(const Library &) = delete;
  Library &operator=(const Library &) = delete;

  std::string metadataJson() const { return miras::cli::metadataJson(*metadata()); }
  bool hasCuda() const { return miras_library_has_cuda(lib_) != 0; }
  bool hasBackward() const { return metadata()->backward_segment > 0; }
  bool hasCudaBackward() const { return metadata()->cuda_backward != nullptr; }

  std::vector<int64_t> tensorShape(const std::string &name, int64_t batch, int64_t length,
                                   int64_t heads) const {
    int32_t rank = 0;
    int64_t shape[MIRAS_TENSOR_MAX_RANK];
    check(miras_library_tensor_shape(lib_, name.c_str(), batch, length, heads, &rank, shape));
    return {shape, shape + rank};
  }

  // The declared initial value of state `index` for B x H pairs
  // (miras_library_initial_state), written to the float32 buffer at `address` of
  // B * H * prod(shape) floats (a contiguous CPU tensor the Python layer allocated).
  void initialState(int32_t index, int64_t batch, int64_t heads, std::uintptr_t address) const {
    check(miras_library_initial_state(lib_, index, batch, heads,
                                      reinterpret_cast<float *>(address)));
  }

  void forward(const std::vector<TensorSpec> &inputs, const std::vector<TensorSpec> &outputs,
               int32_t threads) {
    std::vector<miras_tensor> in = views(inputs, "input"), out = views(outputs, "output");
    check(locked(threads, [&] {
      return miras_library_forward(lib_, in.data(), static_cast<int32_t>(in.size()), out.data(),
                                   static_cast<int32_t>(out.size()));
    }));
  }

  void backward(const std::vector<TensorSpec> &inputs, const std::vector<TensorSpec> &adjoints,
                const std::vector<TensorSpec> &outputs, int32_t threads) {
    std::vector<miras_tensor> in = views(inputs, "input"), adj = views(adjoints, "adjoint"),
                              out = views(outputs, "output");
    check(locked(threads, [&] {
      return miras_library_backward(lib_, in.data(), static_cast<int32_t>(in.size()), adj.data(),
                                    static_cast<int32_t>(adj.size()), out.data(),
                                    static_cast<int32_t>(out.size()));
    }));
  }

  // The GPU forward on device memory (miras_library_forward_cuda): every address a
  // CUdeviceptr, the states and gates in metadata order, enqueued on `stream`. The caller
  // (the Python layer) has checked every shape with tensorShape: this path's runtime
  // checks only pointers, B, T, H and the dtype.
  void forwardCuda(int64_t batch, int64_t length, int64_t heads, std::uintptr_t q,
                   std::uintptr_t k, std::uintptr_t v, const std::vector<std::uintptr_t> &gates,
                   const std::vector<std::uintptr_t> &stateIn,
                   const std::vector<std::uintptr_t> &stateOut, std::uintptr_t o,
                   int32_t inputDtype, std::uintptr_t stream) {
    const miras_module_metadata *m = metadata();
    if (gates.size() != static_cast<size_t>(m->num_gates) ||
        stateIn.size() != static_cast<size_t>(m->num_states) ||
        stateOut.size() != static_cast<size_t>(m->num_states))
      throw RuntimeError{MIRAS_ERR_INVALID_ARGUMENT,
                         "forward_cuda: " + std::to_string(m->num_gates) + " gates and " +
                             std::to_string(m->num_states) + " states expected"};
    std::vector<float *> g = floats(gates), in = floats(stateIn), out = floats(stateOut);
    miras_forward_args args{};
    args.batch = batch;
    args.length = length;
    args.heads = heads;
    args.q = reinterpret_cast<const float *>(q);
    args.k = reinterpret_cast<const float *>(k);
    args.v = reinterpret_cast<const float *>(v);
    args.gates = g.data();
    args.state_in = in.data();
    args.state_out = out.data();
    args.o = reinterpret_cast<float *>(o);
    check(locked(0, [&] {
      return miras_library_forward_cuda(lib_, &args, inputDtype, reinterpret_cast<void *>(stream));
    }));
  }

  // The GPU backward on device memory (miras_library_backward_cuda), enqueued on
  // `stream`; 0 in state_in / d_state_out: zeros. Shapes checked by the caller, as above.
  void backwardCuda(int64_t batch, int64_t length, int64_t heads, std::uintptr_t q,
                    std::uintptr_t k, std::uintptr_t v, const std::vector<std::uintptr_t> &gates,
                    const std::vector<std::uintptr_t> &stateIn, std::uintptr_t dO,
                    const std::vector<std::uintptr_t> &dStateOut, std::uintptr_t dQ,
                    std::uintptr_t dK, std::uintptr_t dV,
                    const std::vector<std::uintptr_t> &dGates,
                    const std::vector<std::uintptr_t> &dStateIn, std::uintptr_t stream) {
    const miras_module_metadata *m = metadata();
    const size_t G = static_cast<size_t>(m->num_gates), N = static_cast<size_t>(m->num_states);
    if (gates.size() != G || dGates.size() != G || stateIn.size() != N ||
        dStateOut.size() != N || dStateIn.size() != N)
      throw RuntimeError{MIRAS_ERR_INVALID_ARGUMENT,
                         "backward_cuda: " + std::to_string(G) + " gates and " +
                             std::to_string(N) + " states expected"};
    std::vector<float *> g = floats(gates), in = floats(stateIn), dso = floats(dStateOut),
                         dg = floats(dGates), dsi = floats(dStateIn);
    miras_backward_args args{};
    args.batch = batch;
    args.length = length;
    args.heads = heads;
    args.q = reinterpret_cast<const float *>(q);
    args.k = reinterpret_cast<const float *>(k);
    args.v = reinterpret_cast<const float *>(v);
    args.gates = g.data();
    args.state_in = in.data();
    args.d_o = reinterpret_cast<const float *>(dO);
    args.d_state_out = dso.data();
    args.d_q = reinterpret_cast<float *>(dQ);
    args.d_k = reinterpret_cast<float *>(dK);
    args.d_v = reinterpret_cast<float *>(dV);
    args.d_gates = dg.data();
    args.d_state_in = dsi.data();
    check(locked(0, [&] {
      return miras_library_backward_cuda(lib_, &args, reinterpret_cast<void *>(stream));
    }));
  }

  // The runtime's non-finite check (miras_library_set_check_finite), changed under the
  // library's mutex so that no call sees it half way.
  bool checkFinite() const { return miras_library_check_finite(lib_) != 0; }
  void setCheckFinite(bool enabled) {
    locked(0, [&] { return miras_library_set_check_finite(lib_, enabled ? 1 : 0); });
  }

private:
  const miras_module_metadata *metadata() const { return miras_library_metadata(lib_); }

  // Runs `call` without the GIL and with the library's mutex (taken after the GIL is
  // released: a thread waiting for it never holds the GIL), after setting the thread
  // count (threads > 0; 0 leaves it).
  template <typename Call> miras_status locked(int32_t threads, Call call) {
    nb::gil_scoped_release released;
    std::lock_guard<std::mutex> guard(mutex_);
    if (threads > 0 && threads != miras_library_num_threads(lib_)) {
      miras_status status = miras_library_set_num_threads(lib_, threads);
      if (status != MIRAS_OK)
        return status;
    }
    return call();
  }

  miras_library *lib_ = nullptr;
  std::mutex mutex_;
};

} // namespace

NB_MODULE(_core, m) {
  m.doc() = "Binding of the miras runtime's C API (runtime.h); use the `miras` package.";
  // Libraries held by torch (autograd graphs, torch.compile's caches) may outlive this
  // module's teardown at exit; that is not a leak worth a warning on every exit.
  nb::set_leak_warnings(false);
  m.attr("ABI_VERSION") = MIRAS_ABI_VERSION;
  m.attr("CHECKPOINTS_SUFFIX") = MIRAS_CHECKPOINTS_SUFFIX;
  m.attr("DTYPE_F32") = static_cast<int>(MIRAS_DTYPE_F32);
  m.attr("DTYPE_BF16") = static_cast<int>(MIRAS_DTYPE_BF16);

  // A RuntimeError becomes miras._core.RuntimeCallError(status name, message); the
  // Python layer re-raises it as the matching miras exception.
  // Owned for the life of the process (never decref'ed at exit, after the interpreter).
  static PyObject *errorType =
      PyErr_NewException("miras._core.RuntimeCallError", PyExc_RuntimeError, nullptr);
  m.attr("RuntimeCallError") = nb::handle(errorType);
  nb::register_exception_translator([](const std::exception_ptr &p, void *) {
    try {
      std::rethrow_exception(p);
    } catch (const RuntimeError &e) {
      nb::object args = nb::make_tuple(miras_status_string(e.status), e.message);
      PyErr_SetObject(errorType, args.ptr());
    }
  });

  m.def("cuda_available", [] {
    miras_status status = miras_cuda_available();
    return std::make_tuple(status == MIRAS_OK, status == MIRAS_OK ? std::string() : std::string(miras_last_error()));
  }, "(usable, reason): whether a CUDA driver and a GPU are usable from this process.");

  nb::class_<Library>(m, "Library")
      .def(nb::init<const std::string &>(), nb::arg("path"),
           "Opens a compiled module (miras_library_open).")
      .def("metadata_json", &Library::metadataJson, "The metadata as `miras info` prints it.")
      .def_prop_rw("check_finite", &Library::checkFinite, &Library::setCheckFinite,
                   "Whether calls fail on the first NaN or infinity of an input or output.")
      .def_prop_ro("has_cuda", &Library::hasCuda)
      .def_prop_ro("has_backward", &Library::hasBackward)
      .def_prop_ro("has_cuda_backward", [](const Library &l) { return l.hasCudaBackward(); })
      .def("tensor_shape", &Library::tensorShape, nb::arg("name"), nb::arg("batch"),
           nb::arg("length"), nb::arg("heads"))
      .def("initial_state", &Library::initialState, nb::arg("index"), nb::arg("batch"),
           nb::arg("heads"), nb::arg("address"),
           "Writes state `index`'s declared init for B x H into the float32 buffer at address.")
      .def("forward", &Library::forward, nb::arg("inputs"), nb::arg("outputs"),
           nb::arg("threads"))
      .def("backward", &Library::backward, nb::arg("inputs"), nb::arg("adjoints"),
           nb::arg("outputs"), nb::arg("threads"))
      .def("forward_cuda", &Library::forwardCuda, nb::arg("batch"), nb::arg("length"),
           nb::arg("heads"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("gates"),
           nb::arg("state_in"), nb::arg("state_out"), nb::arg("o"), nb::arg("input_dtype"),
           nb::arg("stream"))
      .def("backward_cuda", &Library::backwardCuda, nb::arg("batch"), nb::arg("length"),
           nb::arg("heads"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("gates"),
           nb::arg("state_in"), nb::arg("d_o"), nb::arg("d_state_out"), nb::arg("d_q"),
           nb::arg("d_k"), nb::arg("d_v"), nb::arg("d_gates"), nb::arg("d_state_in"),
           nb::arg("stream"));
}
