// cuda_test.cpp: the runtime's GPU path against a fake driver (fake_cuda.hpp): results
// equal to the CPU forward, the launch contract, module loading (cubin / PTX / fallback),
// error paths that leave the caller's buffers alone, and the cuda metadata checks. One
// test takes the real dlopen path, which fails on a machine without a CUDA driver.
#include <algorithm>
#include <cstring>

#include "fake_cuda.hpp"
#include "test_util.hpp"

namespace {

using namespace miras::test;
using miras::Tensor;
using miras::TensorMap;

constexpr int64_t B = 2, T = 5, H = 3;

class Cuda : public ::testing::Test {
protected:
  void SetUp() override {
    fakeCuda() = FakeCuda{};
    miras_cuda_set_driver_for_testing(fakeCudaDriver(), nullptr);
  }
  void TearDown() override {
    for (miras_cu_deviceptr p : uploaded_)
      fakeCudaDriver()->cuMemFree(p);
    // Every library of a test is closed by now: nothing may stay on the "device".
    EXPECT_EQ(fakeCuda().liveBytes(), 0u) << "device memory leaked";
    EXPECT_EQ(fakeCuda().pushes, fakeCuda().pops) << "unbalanced context push/pop";
    EXPECT_EQ(fakeCuda().retains, fakeCuda().releases) << "primary context not released";
    EXPECT_EQ(fakeCuda().loadedImages.size(), size_t(fakeCuda().unloads)) << "module leaked";
    miras_cuda_set_driver_for_testing(nullptr, nullptr); // the real driver again
  }

  // A "device" copy of t, freed when the test ends.
  float *upload(const Tensor &t) {
    const miras_cuda_driver *d = fakeCudaDriver();
    miras_cu_deviceptr p;
    d->cuMemAlloc(&p, size_t(t.numel()) * 4);
    d->cuMemcpyHtoD(p, t.data(), size_t(t.numel()) * 4);
    uploaded_.push_back(p);
    return reinterpret_cast<float *>(p);
  }
  std::vector<miras_cu_deviceptr> uploaded_;

  static miras_tensor view(const std::string &name, const void *data, const Tensor &shape,
                           int32_t dtype = MIRAS_DTYPE_F32) {
    miras_tensor v{};
    v.name = name.c_str();
    v.data = const_cast<void *>(data);
    v.dtype = dtype;
    v.rank = int32_t(shape.shape().size());
    std::copy(shape.shape().begin(), shape.shape().end(), v.shape);
    return v;
  }

  // forward_on over the maps; outputs are written in place.
  static miras_status forwardOn(miras::Library &lib, int32_t device, TensorMap &in,
                                TensorMap &out) {
    std::vector<miras_tensor> i, o;
    for (auto &[name, t] : in)
      i.push_back(view(name, t.data(), t));
    for (auto &[name, t] : out)
      o.push_back(view(name, t.data(), t));
    return miras_library_forward_on(lib.handle(), device, i.data(), int32_t(i.size()),
                                    o.data(), int32_t(o.size()));
  }

  static TensorMap outputsFor(int64_t b, int64_t t, int64_t h, float fill = 0.0f) {
    TensorMap out{{"o", Tensor({b, t, h, kDv})}, {"W", Tensor({b, h, kDv, kDk})}};
    for (auto &[name, x] : out)
      std::fill(x.values().begin(), x.values().end(), fill);
    return out;
  }

  static void expectMessage(std::initializer_list<const char *> fragments) {
    std::string msg = miras_last_error();
    for (const char *f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
};

TEST_F(Cuda, Float32MatchesCpuForward) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  EXPECT_TRUE(lib.hasCuda());
  TensorMap in = fakeInputs(B, T, H, true);
  TensorMap cpu = lib.forward(in);
  TensorMap gpu = lib.forward(in, MIRAS_DEVICE_CUDA);
  EXPECT_EQ(gpu["o"].values(), cpu["o"].values());
  EXPECT_EQ(gpu["W"].values(), cpu["W"].values());
  expectNear(gpu["o"], reference(in)["o"]);

  ASSERT_EQ(fakeCuda().launches.size(), 1u);
  const FakeLaunch &l = fakeCuda().launches[0];
  EXPECT_EQ(l.kernel, "fake_linear_f32");
  EXPECT_EQ(l.grid[0], unsigned(B * H));
  EXPECT_EQ(l.grid[1], 1u);
  EXPECT_EQ(l.grid[2], 1u);
  EXPECT_EQ(l.block[0], 128u);
  EXPECT_EQ(l.block[1], 1u);
  EXPECT_EQ(l.shared, 4096u);
  EXPECT_EQ(l.stream, nullptr);
  EXPECT_EQ((std::vector<int64_t>{l.B, l.T, l.H}), (std::vector<int64_t>{B, T, H}));
  EXPECT_EQ(fakeCuda().memsets, 0) << "the initial state was given";
  EXPECT_EQ(fakeCuda().funcAttributes.size(), 0u) << "4096 shared bytes need no opt-in";
  // Per call: the tensors in one allocation, freed; the workspace stays with the library.
  EXPECT_EQ(fakeCuda().allocations.size(), 1u);
  EXPECT_EQ(fakeCuda().liveBytes(), size_t(B * H * 64));
}

TEST_F(Cuda, Bfloat16InputsMatchCpuOnRoundedInputs) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(B, T, H, true);
  TensorMap gpu = lib.forward(in, MIRAS_DEVICE_CUDA, MIRAS_DTYPE_BF16);
  ASSERT_EQ(fakeCuda().launches.size(), 1u);
  EXPECT_EQ(fakeCuda().launches[0].kernel, "fake_linear_bf16");
  // The CPU on the same rounded inputs (the state stays float32) gives the same numbers.
  TensorMap rounded = in;
  for (auto &[name, t] : rounded)
    if (name != "W")
      for (float &x : t.values())
        x = miras::fromBfloat16(miras::toBfloat16(x));
  TensorMap cpu = lib.forward(rounded);
  EXPECT_EQ(gpu["o"].values(), cpu["o"].values());
  EXPECT_EQ(gpu["W"].values(), cpu["W"].values());
  // And the float32 result within bfloat16 rounding (8 bits of mantissa).
  TensorMap exact = reference(in);
  expectNear(gpu["o"], exact["o"], 5e-2f);
  expectNear(gpu["W"], exact["W"], 5e-2f);
}

TEST_F(Cuda, AbsentInitialStateIsZeroFilledOnTheDevice) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(B, T, H, false);
  TensorMap out = outputsFor(B, T, H, 7.0f);
  ASSERT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_OK) << miras_last_error();
  EXPECT_EQ(fakeCuda().memsets, 1);
  EXPECT_EQ(fakeCuda().dtodCopies, 0);
  TensorMap want = reference(in);
  expectNear(out["o"], want["o"]);
  expectNear(out["W"], want["W"]);
}

TEST_F(Cuda, InPlaceContinuationOnHostBuffers) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(B, T, H, true);
  TensorMap want = reference(in);
  TensorMap out = outputsFor(B, T, H);
  out["W"] = in["W"];
  std::vector<miras_tensor> i, o;
  for (auto &[name, t] : in)
    i.push_back(view(name, name == "W" ? out["W"].data() : t.data(), t)); // W aliases
  for (auto &[name, t] : out)
    o.push_back(view(name, t.data(), t));
  ASSERT_EQ(miras_library_forward_on(lib.handle(), MIRAS_DEVICE_CUDA, i.data(),
                                     int32_t(i.size()), o.data(), int32_t(o.size())),
            MIRAS_OK)
      << miras_last_error();
  expectNear(out["W"], want["W"]);
  expectNear(out["o"], want["o"]);
}

TEST_F(Cuda, CubinOnMatchingGpuLoadedOnceUnloadedAtClose) {
  {
    miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
    EXPECT_TRUE(fakeCuda().calls.empty()) << "opening must not touch the driver";
    TensorMap in = fakeInputs(1, 2, 1, true);
    lib.forward(in, MIRAS_DEVICE_CUDA);
    lib.forward(in, MIRAS_DEVICE_CUDA);
    EXPECT_EQ(fakeCuda().loadedImages, std::vector<std::string>{"cubin"});
    EXPECT_EQ(fakeCuda().count("cuInit"), 1);
    EXPECT_EQ(fakeCuda().count("cuModuleGetFunction"), 2); // f32 and bf16, once
    EXPECT_EQ(fakeCuda().unloads, 0);
  }
  EXPECT_EQ(fakeCuda().unloads, 1);
  EXPECT_EQ(fakeCuda().releases, 1);
}

TEST_F(Cuda, PtxOnOtherGpu) {
  fakeCuda().ccMajor = 8;
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  lib.forward(fakeInputs(1, 2, 1, true), MIRAS_DEVICE_CUDA);
  EXPECT_EQ(fakeCuda().loadedImages, std::vector<std::string>{"ptx"});
  EXPECT_EQ(fakeCuda().count("cuModuleLoadDataEx"), 1) << "the sm_90 cubin is not even tried";
}

TEST_F(Cuda, PtxFallbackWhenCubinIsRefused) {
  fakeCuda().failCubinLoad = true;
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(1, 3, 2, true);
  TensorMap gpu = lib.forward(in, MIRAS_DEVICE_CUDA);
  EXPECT_EQ(fakeCuda().count("cuModuleLoadDataEx"), 2);
  EXPECT_EQ(fakeCuda().loadedImages, std::vector<std::string>{"ptx"});
  expectNear(gpu["o"], reference(in)["o"]);
}

TEST_F(Cuda, ModuleLoadFailureIsReportedAndRetried) {
  fakeCuda().failures["cuModuleLoadDataEx"] = kCuErrorInvalidImage;
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(1, 2, 1, true);
  TensorMap out = outputsFor(1, 2, 1, 3.0f);
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_ERR_DEVICE);
  expectMessage({"cuModuleLoadDataEx", "PTX for sm_90",
                 "JIT log: ptxas fatal: the fake JIT refuses)", "CUDA_ERROR_INVALID_IMAGE",
                 "described by the fake driver"});
  fakeCuda().failures.clear(); // a later call loads again
  ASSERT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_OK) << miras_last_error();
  EXPECT_EQ(fakeCuda().loadedImages.size(), 1u);
}

TEST_F(Cuda, MissingKernelEntryIsReported) {
  fakeCuda().failures["cuModuleGetFunction"] = kCuErrorNotFound;
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(1, 2, 1, true);
  TensorMap out = outputsFor(1, 2, 1);
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_ERR_DEVICE);
  expectMessage({"cuModuleGetFunction('fake_linear_f32')", "CUDA_ERROR_NOT_FOUND"});
}

TEST_F(Cuda, LargeSharedMemoryOptsIn) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA_BIG_SHARED);
  lib.forward(fakeInputs(1, 2, 1, true), MIRAS_DEVICE_CUDA);
  std::vector<std::pair<int, int>> want(2, {MIRAS_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                            100000});
  EXPECT_EQ(fakeCuda().funcAttributes, want); // both kernels
  ASSERT_EQ(fakeCuda().launches.size(), 1u);
  EXPECT_EQ(fakeCuda().launches[0].shared, 100000u);
}

// A failing launch, wait or download reports the driver's error and leaves every buffer
// of the caller as it was.
TEST_F(Cuda, FailuresLeaveOutputsUntouched) {
  for (const char *call : {"cuLaunchKernel", "cuStreamSynchronize", "cuMemcpyDtoH",
                           "cuMemcpyHtoD", "cuMemAlloc", "cuCtxPushCurrent"}) {
    SCOPED_TRACE(call);
    fakeCuda().failures = {{call, kCuErrorLaunchFailed}};
    miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
    TensorMap in = fakeInputs(B, T, H, true);
    TensorMap before = in;
    TensorMap out = outputsFor(B, T, H, -3.0f);
    EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_ERR_DEVICE);
    expectMessage({call, "failed: CUDA_ERROR_LAUNCH_FAILED (described by the fake driver)"});
    for (const auto &[name, t] : out)
      for (float x : t.values())
        ASSERT_EQ(x, -3.0f) << name;
    for (const auto &[name, t] : in)
      EXPECT_EQ(t.values(), before[name].values()) << name;
  }
  fakeCuda().failures.clear();
}

TEST_F(Cuda, NoDriverFailsCleanlyAndCpuStillWorks) {
  miras_cuda_set_driver_for_testing(
      nullptr, "libcuda.so.1: cannot open shared object file: No such file or directory");
  EXPECT_EQ(miras_cuda_available(), MIRAS_ERR_DEVICE);
  expectMessage({"no CUDA driver", "libcuda.so.1"});
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(B, T, H, true);
  TensorMap out = outputsFor(B, T, H, 5.0f);
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_ERR_DEVICE);
  expectMessage({"no CUDA driver", "libcuda.so.1: cannot open"});
  EXPECT_EQ(out["o"].values()[0], 5.0f);
  ASSERT_EQ(forwardOn(lib, MIRAS_DEVICE_CPU, in, out), MIRAS_OK) << miras_last_error();
  expectNear(out["o"], reference(in)["o"]);
  std::string why;
  EXPECT_FALSE(miras::cudaAvailable(&why));
  EXPECT_NE(why.find("libcuda"), std::string::npos) << why;
}

TEST_F(Cuda, InitFailureAndNoDevice) {
  fakeCuda().initResult = kCuErrorNoDevice;
  EXPECT_EQ(miras_cuda_available(), MIRAS_ERR_DEVICE);
  expectMessage({"cuInit failed: CUDA_ERROR_NO_DEVICE"});
  // The outcome is kept for the process: no second cuInit.
  EXPECT_EQ(miras_cuda_available(), MIRAS_ERR_DEVICE);
  EXPECT_EQ(fakeCuda().count("cuInit"), 1);

  fakeCuda() = FakeCuda{};
  fakeCuda().deviceCount = 0;
  miras_cuda_set_driver_for_testing(fakeCudaDriver(), nullptr);
  EXPECT_EQ(miras_cuda_available(), MIRAS_ERR_DEVICE);
  expectMessage({"no CUDA device"});

  fakeCuda() = FakeCuda{};
  miras_cuda_set_driver_for_testing(fakeCudaDriver(), nullptr);
  EXPECT_EQ(miras_cuda_available(), MIRAS_OK) << miras_last_error();
  EXPECT_EQ(fakeCuda().retains, 0) << "availability does not create a context";
}

// The real path: without libcuda.so.1 (this machine) a clear error, never a crash.
TEST_F(Cuda, RealDriverPathWithoutGpu) {
  miras_cuda_set_driver_for_testing(nullptr, nullptr);
  miras_status st = miras_cuda_available();
  if (st == MIRAS_OK)
    GTEST_SKIP() << "a CUDA driver and GPU are present";
  EXPECT_EQ(st, MIRAS_ERR_DEVICE);
  std::string msg = miras_last_error();
  EXPECT_TRUE(msg.find("libcuda") != std::string::npos || msg.find("cuInit") != std::string::npos ||
              msg.find("no CUDA device") != std::string::npos)
      << msg;
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  try {
    lib.forward(fakeInputs(1, 2, 1, true), MIRAS_DEVICE_CUDA);
    FAIL() << "expected a device error";
  } catch (const miras::Error &e) {
    EXPECT_EQ(e.status(), MIRAS_ERR_DEVICE);
    EXPECT_EQ(std::string(e.what()), msg);
  }
}

// The device-pointer entry: state copies and zero fill on the caller's stream, the
// parameter layout, the workspace cache, validation.
TEST_F(Cuda, DevicePointerForward) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(B, T, H, true);
  const float *gates[2] = {upload(in["alpha"]), upload(in["beta"])};
  const float *stateIn[1] = {upload(in["W"])};
  float *stateOut[1] = {upload(Tensor({B, H, kDv, kDk}))};
  float *o = upload(Tensor({B, T, H, kDv}));
  miras_forward_args a{B, T, H, upload(in["q"]), upload(in["k"]), upload(in["v"]),
                       gates, stateIn, stateOut, o};
  void *stream = reinterpret_cast<void *>(0x5151);
  ASSERT_EQ(miras_library_forward_cuda(lib.handle(), &a, MIRAS_DTYPE_F32, stream), MIRAS_OK)
      << miras_last_error();
  ASSERT_EQ(fakeCuda().launches.size(), 1u);
  const FakeLaunch &l = fakeCuda().launches[0];
  EXPECT_EQ(l.stream, stream);
  std::vector<miras_cu_deviceptr> want = {
      miras_cu_deviceptr(a.q), miras_cu_deviceptr(a.k), miras_cu_deviceptr(a.v),
      miras_cu_deviceptr(gates[0]), miras_cu_deviceptr(gates[1]),
      miras_cu_deviceptr(stateOut[0]), miras_cu_deviceptr(o)};
  EXPECT_EQ(std::vector<miras_cu_deviceptr>(l.ptrs.begin(), l.ptrs.begin() + 7), want);
  EXPECT_NE(l.ptrs[7], 0u) << "workspace";
  EXPECT_EQ(fakeCuda().dtodCopies, 1) << "state_in copied to state_out";
  Tensor gotO({B, T, H, kDv});
  std::memcpy(gotO.data(), o, size_t(gotO.numel()) * 4);
  expectNear(gotO, reference(in)["o"]);

  // In place: nothing to copy. Zero state: a memset. Same size: the workspace is reused.
  stateIn[0] = stateOut[0];
  ASSERT_EQ(miras_library_forward_cuda(lib.handle(), &a, MIRAS_DTYPE_F32, nullptr), MIRAS_OK);
  EXPECT_EQ(fakeCuda().dtodCopies, 1);
  stateIn[0] = nullptr;
  ASSERT_EQ(miras_library_forward_cuda(lib.handle(), &a, MIRAS_DTYPE_F32, nullptr), MIRAS_OK);
  EXPECT_EQ(fakeCuda().memsets, 1);
  EXPECT_EQ(fakeCuda().launches[2].ptrs[7], fakeCuda().launches[0].ptrs[7]);
  EXPECT_EQ(fakeCuda().count("cuMemAlloc"), 8 + 1); // ours + one workspace

  // A smaller problem reuses the workspace; a larger one grows it.
  a.batch = 1;
  ASSERT_EQ(miras_library_forward_cuda(lib.handle(), &a, MIRAS_DTYPE_F32, nullptr), MIRAS_OK);
  EXPECT_EQ(fakeCuda().count("cuMemAlloc"), 9);
  size_t before = fakeCuda().liveBytes();
  Tensor big({4, T, H, kDk});
  a = {4, T, H, upload(big), upload(big), upload(Tensor({4, T, H, kDv})), gates, stateIn,
       stateOut, upload(Tensor({4, T, H, kDv}))};
  const float *bigGates[2] = {upload(Tensor({4, T, H})), upload(Tensor({4, T, H, kDv}))};
  float *bigState[1] = {upload(Tensor({4, H, kDv, kDk}))};
  a.gates = bigGates;
  a.state_out = bigState;
  size_t uploaded = fakeCuda().liveBytes() - before;
  ASSERT_EQ(miras_library_forward_cuda(lib.handle(), &a, MIRAS_DTYPE_F32, nullptr), MIRAS_OK)
      << miras_last_error();
  EXPECT_EQ(fakeCuda().liveBytes(), before + uploaded + size_t((4 - B) * H * 64));

  // Validation.
  EXPECT_EQ(miras_library_forward_cuda(nullptr, &a, MIRAS_DTYPE_F32, nullptr),
            MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_forward_cuda(lib.handle(), nullptr, MIRAS_DTYPE_F32, nullptr),
            MIRAS_ERR_NULL_POINTER);
  miras_forward_args bad = a;
  bad.o = nullptr;
  EXPECT_EQ(miras_library_forward_cuda(lib.handle(), &bad, MIRAS_DTYPE_F32, nullptr),
            MIRAS_ERR_NULL_POINTER);
  bad = a;
  bad.length = 0;
  EXPECT_EQ(miras_library_forward_cuda(lib.handle(), &bad, MIRAS_DTYPE_F32, nullptr),
            MIRAS_ERR_SHAPE);
  EXPECT_EQ(miras_library_forward_cuda(lib.handle(), &a, 7, nullptr), MIRAS_ERR_DTYPE);
  miras::Library cpuOnly = miras::Library::open(MIRAS_FAKE_MODULE);
  EXPECT_EQ(miras_library_forward_cuda(cpuOnly.handle(), &a, MIRAS_DTYPE_F32, nullptr),
            MIRAS_ERR_DEVICE);
  expectMessage({"no cuda kernels", "--target=cpu"});
  EXPECT_THROW(cpuOnly.forwardCuda(a), miras::Error);

}

// The backward on device pointers (ABI 7): against the CPU backward of the same library,
// the launch contract (grid, block, first_pair, the order of the pointers), the seeding of
// the running adjoint and of each pair's checkpoint slot 0, and the errors.
TEST_F(Cuda, DevicePointerBackward) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA_BACKWARD);
  ASSERT_NE(lib.metadata().cuda_backward, nullptr);
  auto download = [](const float *p, Tensor t) {
    std::memcpy(t.data(), p, size_t(t.numel()) * 4);
    return t;
  };
  // T = 5 with S = 4: two checkpoints per pair (slot 0 copied pair by pair); T = 3: one
  // (one copy for every pair).
  for (int64_t length : {int64_t(5), int64_t(3)}) {
    fakeCuda().launches.clear();
    TensorMap in = fakeInputs(B, length, H, true);
    TensorMap adj{{"o", randomTensor({B, length, H, kDv}, 11)},
                  {"W", randomTensor({B, H, kDv, kDk}, 12)}};
    // The CPU backward of the same library: the reference.
    TensorMap want;
    std::vector<miras_tensor> i, a, o;
    for (auto &[name, t] : in) {
      want.emplace(name, Tensor(t.shape()));
      i.push_back(view(name, t.data(), t));
    }
    for (auto &[name, t] : adj)
      a.push_back(view(name, t.data(), t));
    for (auto &[name, t] : want)
      o.push_back(view(name, t.data(), t));
    ASSERT_EQ(miras_library_backward(lib.handle(), i.data(), int32_t(i.size()), a.data(),
                                     int32_t(a.size()), o.data(), int32_t(o.size())),
              MIRAS_OK)
        << miras_last_error();

    const float *gates[2] = {upload(in["alpha"]), upload(in["beta"])};
    const float *stateIn[1] = {upload(in["W"])};
    const float *dStateOut[1] = {upload(adj["W"])};
    float *dGates[2] = {upload(Tensor({B, length, H})), upload(Tensor({B, length, H, kDv}))};
    float *dStateIn[1] = {upload(Tensor({B, H, kDv, kDk}))};
    miras_backward_args args{B, length, H, upload(in["q"]), upload(in["k"]), upload(in["v"]),
                             gates, stateIn, upload(adj["o"]), dStateOut,
                             upload(Tensor({B, length, H, kDk})),
                             upload(Tensor({B, length, H, kDk})),
                             upload(Tensor({B, length, H, kDv})), dGates, dStateIn};
    void *stream = reinterpret_cast<void *>(0x5252);
    ASSERT_EQ(miras_library_backward_cuda(lib.handle(), &args, stream), MIRAS_OK)
        << miras_last_error();
    ASSERT_EQ(fakeCuda().launches.size(), 1u);
    const FakeLaunch &l = fakeCuda().launches[0];
    EXPECT_EQ(l.kernel, "fake_linear_backward_f32");
    EXPECT_EQ(l.grid[0], unsigned(B * H));
    EXPECT_EQ(l.block[0], 64u);
    EXPECT_EQ(l.stream, stream);
    std::vector<miras_cu_deviceptr> head = {
        miras_cu_deviceptr(args.q),        miras_cu_deviceptr(args.k),
        miras_cu_deviceptr(args.v),        miras_cu_deviceptr(gates[0]),
        miras_cu_deviceptr(gates[1]),      miras_cu_deviceptr(args.d_o),
        miras_cu_deviceptr(dStateIn[0]),   miras_cu_deviceptr(args.d_q),
        miras_cu_deviceptr(args.d_k),      miras_cu_deviceptr(args.d_v),
        miras_cu_deviceptr(dGates[0]),     miras_cu_deviceptr(dGates[1])};
    EXPECT_EQ(std::vector<miras_cu_deviceptr>(l.ptrs.begin(), l.ptrs.begin() + 12), head);
    expectNear(download(args.d_q, Tensor({B, length, H, kDk})), want["q"]);
    expectNear(download(args.d_k, Tensor({B, length, H, kDk})), want["k"]);
    expectNear(download(args.d_v, Tensor({B, length, H, kDv})), want["v"]);
    expectNear(download(dGates[0], Tensor({B, length, H})), want["alpha"]);
    expectNear(download(dGates[1], Tensor({B, length, H, kDv})), want["beta"]);
    expectNear(download(dStateIn[0], Tensor({B, H, kDv, kDk})), want["W"]);

    // d_state_in may be d_state_out (the running adjoint in place).
    float *inPlace = upload(adj["W"]);
    dStateOut[0] = inPlace;
    dStateIn[0] = inPlace;
    ASSERT_EQ(miras_library_backward_cuda(lib.handle(), &args, nullptr), MIRAS_OK);
    expectNear(download(inPlace, Tensor({B, H, kDv, kDk})), want["W"]);
    // NULL initial state and final-state adjoint: zeros, as on the CPU.
    dStateOut[0] = nullptr;
    stateIn[0] = nullptr;
    ASSERT_EQ(miras_library_backward_cuda(lib.handle(), &args, nullptr), MIRAS_OK);
    std::vector<miras_tensor> zeroIn;
    for (miras_tensor &t : i)
      if (std::string(t.name) != "W")
        zeroIn.push_back(t);
    std::vector<miras_tensor> onlyO = {a[0].name == std::string("o") ? a[0] : a[1]};
    ASSERT_EQ(miras_library_backward(lib.handle(), zeroIn.data(), int32_t(zeroIn.size()),
                                     onlyO.data(), 1, o.data(), int32_t(o.size())),
              MIRAS_OK)
        << miras_last_error();
    expectNear(download(args.d_q, Tensor({B, length, H, kDk})), want["q"]);
    expectNear(download(dStateIn[0], Tensor({B, H, kDv, kDk})), want["W"]);
  }

  // Errors: NULL pointers, T = 0, a library with no cuda backward.
  miras_backward_args none{};
  EXPECT_EQ(miras_library_backward_cuda(lib.handle(), nullptr, nullptr), MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(miras_library_backward_cuda(lib.handle(), &none, nullptr), MIRAS_ERR_NULL_POINTER);
  expectMessage({"d_o", "must not be NULL"});
  miras::Library cpuBackward = miras::Library::open(MIRAS_FAKE_BACKWARD);
  miras::Library cudaForward = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(B, T, H, true);
  Tensor scratch({B, T, H, kDv});
  const float *g[2] = {in["alpha"].data(), in["beta"].data()};
  const float *si[1] = {nullptr};
  const float *dso[1] = {nullptr};
  float *dg[2] = {scratch.data(), scratch.data()};
  float *dsi[1] = {scratch.data()};
  miras_backward_args host{B, T, H, in["q"].data(), in["k"].data(), in["v"].data(), g, si,
                           scratch.data(), dso, scratch.data(), scratch.data(), scratch.data(),
                           dg, dsi};
  EXPECT_EQ(miras_library_backward_cuda(cpuBackward.handle(), &host, nullptr), MIRAS_ERR_DEVICE);
  expectMessage({"no cuda backward kernel", "--target=cpu,cuda"});
  EXPECT_EQ(miras_library_backward_cuda(cudaForward.handle(), &host, nullptr),
            MIRAS_ERR_UNSUPPORTED);
  host.length = 0;
  EXPECT_EQ(miras_library_backward_cuda(lib.handle(), &host, nullptr), MIRAS_ERR_SHAPE);

}

TEST_F(Cuda, DtypeRules) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(1, 2, 1, true);
  TensorMap out = outputsFor(1, 2, 1);
  std::vector<uint16_t> alpha16(size_t(in["alpha"].numel()));
  auto run = [&](int32_t device, const char *bf16Name) {
    std::vector<miras_tensor> i, o;
    for (auto &[name, t] : in)
      i.push_back(name == bf16Name ? view(name, alpha16.data(), t, MIRAS_DTYPE_BF16)
                                   : view(name, t.data(), t));
    for (auto &[name, t] : out)
      o.push_back(view(name, t.data(), t));
    return miras_library_forward_on(lib.handle(), device, i.data(), int32_t(i.size()),
                                    o.data(), int32_t(o.size()));
  };
  EXPECT_EQ(run(MIRAS_DEVICE_CUDA, "alpha"), MIRAS_ERR_DTYPE);
  expectMessage({"'alpha' is bfloat16", "float32", "share one dtype"});
  EXPECT_EQ(run(MIRAS_DEVICE_CPU, "alpha"), MIRAS_ERR_DTYPE);
  expectMessage({"'alpha' is bfloat16", "cpu forward takes float32 only"});
  EXPECT_EQ(run(MIRAS_DEVICE_CUDA, "W"), MIRAS_ERR_DTYPE);
  expectMessage({"'W' is bfloat16", "states and o are always float32"});
  EXPECT_EQ(run(7, ""), MIRAS_ERR_INVALID_ARGUMENT);
  expectMessage({"unknown device 7"});
  EXPECT_TRUE(fakeCuda().launches.empty());
  EXPECT_THROW(lib.forward(in, MIRAS_DEVICE_CPU, MIRAS_DTYPE_BF16), miras::Error);
}

// Names, shapes and missing tensors go through miras_library_forward's checks.
TEST_F(Cuda, SameValidationAsCpu) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA);
  TensorMap in = fakeInputs(B, T, H, true);
  in["k"] = randomTensor({B, T, H, kDv}, 3);
  TensorMap out = outputsFor(B, T, H);
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CPU, in, out), MIRAS_ERR_SHAPE);
  std::string cpu = miras_last_error();
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_ERR_SHAPE);
  EXPECT_EQ(cpu, miras_last_error());
  in.erase("k");
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_ERR_INVALID_ARGUMENT);
  expectMessage({"missing input tensor 'k'"});
  EXPECT_TRUE(fakeCuda().calls.empty()) << "validation fails before the driver is touched";
}

TEST_F(Cuda, CudaOnlyLibrary) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_CUDA_ONLY);
  EXPECT_TRUE(lib.hasCuda());
  TensorMap in = fakeInputs(B, T, H, true);
  TensorMap out = outputsFor(B, T, H);
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CPU, in, out), MIRAS_ERR_DEVICE);
  expectMessage({"was built for cuda only", "MIRAS_DEVICE_CUDA", "--target=cpu,cuda"});
  EXPECT_THROW(lib.forward(in), miras::Error);
  const float *gates[2] = {in["alpha"].data(), in["beta"].data()};
  const float *stateIn[1] = {in["W"].data()};
  float *stateOut[1] = {out["W"].data()};
  miras_forward_args a{B, T, H, in["q"].data(), in["k"].data(), in["v"].data(),
                       gates, stateIn, stateOut, out["o"].data()};
  EXPECT_EQ(miras_library_forward_args(lib.handle(), &a), MIRAS_ERR_DEVICE);
  TensorMap gpu = lib.forward(in, MIRAS_DEVICE_CUDA);
  TensorMap want = reference(in);
  expectNear(gpu["o"], want["o"]);
  expectNear(gpu["W"], want["W"]);
}

TEST_F(Cuda, CpuOnlyLibraryHasNoCudaKernels) {
  miras::Library lib = miras::Library::open(MIRAS_FAKE_MODULE);
  EXPECT_FALSE(lib.hasCuda());
  EXPECT_EQ(miras_library_has_cuda(nullptr), 0);
  TensorMap in = fakeInputs(1, 2, 1, true);
  TensorMap out = outputsFor(1, 2, 1);
  EXPECT_EQ(forwardOn(lib, MIRAS_DEVICE_CUDA, in, out), MIRAS_ERR_DEVICE);
  expectMessage({"has no cuda kernels", "--target=cpu", "--target=cpu,cuda"});
  EXPECT_TRUE(fakeCuda().calls.empty());
  EXPECT_EQ(miras_library_forward_on(nullptr, MIRAS_DEVICE_CUDA, nullptr, 0, nullptr, 0),
            MIRAS_ERR_NULL_POINTER);
}

struct BadCudaCase {
  const char *path;
  const char *fragment;
};

class CudaMetadata : public ::testing::TestWithParam<BadCudaCase> {};

TEST_P(CudaMetadata, IsRejected) {
  miras_library *lib = reinterpret_cast<miras_library *>(0x1);
  EXPECT_EQ(miras_library_open(GetParam().path, &lib), MIRAS_ERR_LOAD);
  EXPECT_EQ(lib, nullptr);
  std::string msg = miras_last_error();
  EXPECT_NE(msg.find(GetParam().fragment), std::string::npos) << msg;
}

INSTANTIATE_TEST_SUITE_P(
    EachField, CudaMetadata,
    ::testing::Values(
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_1, "targets names cuda but the cuda table is NULL"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_2, "a cuda table, but targets lacks cuda"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_3, "block_threads 0 is outside 1..1024"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_4, "block_threads 2048 is outside 1..1024"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_5, "cubin_size must be > 0 exactly when cubin is set"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_6, "arch and ptx must be non-empty"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_7, "kernel_f32 and kernel_bf16 must be non-empty"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_8, "targets names neither cpu nor cuda"},
        BadCudaCase{MIRAS_FAKE_BAD_CUDA_9, "targets names cpu but the entry table has a NULL"}));

TEST(Bfloat16, RoundsToNearestEven) {
  auto bits = [](uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return miras::toBfloat16(f);
  };
  EXPECT_EQ(miras::toBfloat16(1.0f), 0x3f80);
  EXPECT_EQ(bits(0x3f808000u), 0x3f80); // tie, even stays
  EXPECT_EQ(bits(0x3f818000u), 0x3f82); // tie, odd rounds up
  EXPECT_EQ(bits(0x3f808001u), 0x3f81); // above the tie
  EXPECT_EQ(bits(0x3f807fffu), 0x3f80); // below the tie
  EXPECT_EQ(bits(0xbf818000u), 0xbf82); // sign kept
  EXPECT_EQ(bits(0x7f800000u), 0x7f80); // infinity
  EXPECT_EQ(bits(0x7f7fffffu), 0x7f80); // largest float rounds to infinity
  uint16_t nan = bits(0x7f800001u);     // a NaN whose payload would round away
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0);
  EXPECT_EQ(miras::fromBfloat16(0x3f80), 1.0f);
  EXPECT_EQ(miras::fromBfloat16(miras::toBfloat16(-2.5f)), -2.5f);
}

// A per-step gate of a multistep module is [B, T, H, steps] although its dim is 1.
TEST(GateNumel, PerStepGatesCountSteps) {
  miras_gate_info gates[2] = {{"eta", MIRAS_GATE_SCALAR, MIRAS_AXIS_NONE, 1, 1},
                              {"beta", MIRAS_GATE_CHANNEL, MIRAS_AXIS_VALUE, 4, 0}};
  miras_module_metadata m{};
  m.steps = 3;
  m.num_gates = 2;
  m.gates = gates;
  EXPECT_EQ(miras_gate_numel(&m, 0, 2, 5, 7), 2 * 5 * 7 * 3);
  EXPECT_EQ(miras_gate_numel(&m, 1, 2, 5, 7), 2 * 5 * 7 * 4);
}

} // namespace
