//===- TargetTest.cpp - Tests of the library emitter (Target.h) -----------===//
//
// End to end: a hand-written toy kernel (W = alpha W + v k^T, o = W q) in
// func/memref/arith/scf is lowered to the LLVM dialect, turned into
// libtoy.so + toy.h by writeLibrary, dlopen'ed and called through the ABI.
//
//===----------------------------------------------------------------------===//

#include "miras/Compiler/Target.h"
#include "miras/miras_abi.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <dlfcn.h>
#include <vector>

using namespace miras;

namespace {

constexpr const char *kToyKernel = R"mlir(
func.func @toy_kernel(%begin: index, %end: index,
                      %q: memref<?x?x?x2xf32>, %k: memref<?x?x?x2xf32>,
                      %v: memref<?x?x?x2xf32>, %alpha: memref<?x?x?xf32>,
                      %W: memref<?x?x2x2xf32>, %o: memref<?x?x?x2xf32>)
    attributes {llvm.emit_c_interface} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %zero = arith.constant 0.0 : f32
  %B = memref.dim %q, %c0 : memref<?x?x?x2xf32>
  %T = memref.dim %q, %c1 : memref<?x?x?x2xf32>
  %H = memref.dim %q, %c2 : memref<?x?x?x2xf32>
  scf.for %pair = %begin to %end step %c1 {
    %b = arith.divui %pair, %H : index
    %h = arith.remui %pair, %H : index
      scf.for %t = %c0 to %T step %c1 {
        %a = memref.load %alpha[%b, %t, %h] : memref<?x?x?xf32>
        scf.for %i = %c0 to %c2 step %c1 {
          %vi = memref.load %v[%b, %t, %h, %i] : memref<?x?x?x2xf32>
          scf.for %j = %c0 to %c2 step %c1 {
            %w = memref.load %W[%b, %h, %i, %j] : memref<?x?x2x2xf32>
            %kj = memref.load %k[%b, %t, %h, %j] : memref<?x?x?x2xf32>
            %aw = arith.mulf %a, %w : f32
            %vk = arith.mulf %vi, %kj : f32
            %nw = arith.addf %aw, %vk : f32
            memref.store %nw, %W[%b, %h, %i, %j] : memref<?x?x2x2xf32>
          }
        }
        scf.for %i = %c0 to %c2 step %c1 {
          %acc = scf.for %j = %c0 to %c2 step %c1 iter_args(%s = %zero) -> (f32) {
            %w = memref.load %W[%b, %h, %i, %j] : memref<?x?x2x2xf32>
            %qj = memref.load %q[%b, %t, %h, %j] : memref<?x?x?x2xf32>
            %p = arith.mulf %w, %qj : f32
            %s2 = arith.addf %s, %p : f32
            scf.yield %s2 : f32
          }
          memref.store %acc, %o[%b, %t, %h, %i] : memref<?x?x?x2xf32>
        }
      }
  }
  return
}
)mlir";

KernelInterface toyInterface() {
  KernelInterface k;
  k.moduleName = "toy";
  k.sourcePath = "examples/\"toy\"\\dir/toy.miras"; // must survive C escaping
  k.dk = k.dv = 2;
  k.params = {{"D", 2, true}, {"gamma", 0.9, false}};
  // An unbounded end, so the generated C spells infinity (HUGE_VAL).
  k.gates = {{"alpha", false, "", 1, false,
              KernelInterface::Gate::Range{0.0, HUGE_VAL, true, false}}};
  k.states = {{"W", {2, 2}}};
  k.rule = "W_t = alpha_t * W_{t-1} + v_t k_t^T   /* \"hebb\" \\ ?\?/ */";
  return k;
}

/// Compiles `source` with the C compiler Target.h would use.
::testing::AssertionResult compiles(const std::string &source,
                                    std::vector<std::string> flags) {
  auto cc = findCCompiler(LinkOptions{});
  if (!cc)
    return ::testing::AssertionFailure() << llvm::toString(cc.takeError());
  llvm::SmallString<128> path, log;
  llvm::sys::fs::createTemporaryFile("miras-target-test", "src", path);
  llvm::sys::fs::createTemporaryFile("miras-target-test", "log", log);
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    os << source;
  }
  std::vector<llvm::StringRef> args = {*cc};
  for (const auto &f : flags)
    args.push_back(f);
  args.push_back(path);
  std::optional<llvm::StringRef> redirects[] = {llvm::StringRef(""),
                                                llvm::StringRef(log),
                                                llvm::StringRef(log)};
  int rc = llvm::sys::ExecuteAndWait(*cc, args, std::nullopt, redirects);
  std::string out;
  if (auto buf = llvm::MemoryBuffer::getFile(log))
    out = (*buf)->getBuffer().str();
  llvm::sys::fs::remove(path);
  llvm::sys::fs::remove(log);
  if (rc != 0)
    return ::testing::AssertionFailure() << "rc " << rc << ":\n" << out;
  return ::testing::AssertionSuccess();
}

std::string readFile(llvm::StringRef path) {
  auto buf = llvm::MemoryBuffer::getFile(path);
  return buf ? (*buf)->getBuffer().str() : std::string("<missing>");
}

class TargetTest : public ::testing::Test {
protected:
  void SetUp() override {
    mlir::DialectRegistry registry;
    registry.insert<mlir::arith::ArithDialect, mlir::cf::ControlFlowDialect,
                    mlir::func::FuncDialect, mlir::LLVM::LLVMDialect,
                    mlir::memref::MemRefDialect, mlir::scf::SCFDialect>();
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("miras-target-test", dir));
  }
  void TearDown() override {
    if (!HasFailure())
      llvm::sys::fs::remove_directories(dir);
    else
      llvm::errs() << "test files kept in " << dir << "\n";
  }

  /// The toy kernel, lowered to the LLVM dialect (`lower` = false: as written).
  mlir::OwningOpRef<mlir::ModuleOp> toyModule(bool lower = true) {
    auto module = mlir::parseSourceString<mlir::ModuleOp>(kToyKernel, &context);
    if (!module || !lower)
      return module;
    mlir::PassManager pm(&context);
    pm.addPass(mlir::createSCFToControlFlowPass());
    pm.addPass(mlir::createFinalizeMemRefToLLVMConversionPass());
    pm.addPass(mlir::createArithToLLVMConversionPass());
    pm.addPass(mlir::createConvertFuncToLLVMPass());
    pm.addPass(mlir::createConvertControlFlowToLLVMPass());
    pm.addPass(mlir::createReconcileUnrealizedCastsPass());
    if (mlir::failed(pm.run(*module)))
      return nullptr;
    return module;
  }

  std::string path(llvm::StringRef name) {
    llvm::SmallString<256> p(dir);
    llvm::sys::path::append(p, name);
    return p.str().str();
  }

  mlir::MLIRContext context;
  llvm::SmallString<128> dir;
};

TEST_F(TargetTest, HeaderCompilesAsCAndCxxAndSpellsOutShapes) {
  KernelInterface iface = toyInterface();
  ASSERT_FALSE(llvm::errorToBool(validateInterface(iface)));
  std::string h = generateHeader(iface);
  EXPECT_NE(h.find("#ifndef MIRAS_MODULE_TOY_H"), std::string::npos);
  EXPECT_NE(h.find("#define MIRAS_ABI_VERSION 10u"), std::string::npos);
  EXPECT_NE(h.find("[B, T, H, 2]"), std::string::npos);
  EXPECT_NE(h.find("[B, T, H]"), std::string::npos);
  EXPECT_NE(h.find("[B, H, 2, 2]"), std::string::npos);
  EXPECT_NE(h.find("const miras_module_metadata *toy_metadata(void);"),
            std::string::npos);
  EXPECT_NE(h.find("int32_t toy_forward(const miras_forward_args *args);"),
            std::string::npos);
  EXPECT_NE(h.find("const float *alpha"), std::string::npos);
  EXPECT_NE(h.find("const float *W_in, float *W_out"), std::string::npos);
  EXPECT_NE(h.find("alpha_t * W_{t-1}"), std::string::npos);
  // Included twice: the guards must hold, and C++ hosts must see C linkage.
  std::string twice = h + h + "\nint main(void) { return toy_forward(0); }\n";
  EXPECT_TRUE(compiles(twice, {"-fsyntax-only", "-x", "c", "-std=c99",
                               "-Wall", "-Wextra", "-pedantic", "-Werror"}));
  EXPECT_TRUE(compiles(twice, {"-fsyntax-only", "-x", "c++", "-std=c++17",
                               "-Wall", "-Wextra", "-Werror"}));
}

TEST_F(TargetTest, GlueCompilesForChannelGatesAndSeveralStates) {
  KernelInterface iface;
  iface.moduleName = "rich";
  iface.sourcePath = "C:\\odd \"path\"\n/*x*/.miras";
  iface.dk = 8;
  iface.dv = 4;
  iface.chunk = 16;
  iface.readAfterWrite = false;
  iface.params = {{"p", 3, true}, {"eps", 1e-6, false}, {"big", HUGE_VAL, false}};
  iface.gates = {{"eta", false, "", 1}, {"float", true, "dk", 8},
                 {"g", true, "dv", 4}};
  iface.states = {{"W1", {32, 8}}, {"W2", {4, 32}}, {"S", {4}}};
  iface.rule = "A = B\nS_t = mu S - theta g ?\?= \"q\" \\n */";
  ASSERT_FALSE(llvm::errorToBool(validateInterface(iface)));
  std::string h = generateHeader(iface);
  EXPECT_NE(h.find("[B, T, H, 8]"), std::string::npos);
  EXPECT_NE(h.find("[B, H, 32, 8]"), std::string::npos);
  EXPECT_NE(h.find("[B, H, 4]"), std::string::npos);
  EXPECT_NE(h.find("const float *float_"), std::string::npos) << h; // keyword
  // The kernel is only declared; compiling (not linking) checks the glue.
  EXPECT_TRUE(compiles(generateGlue(iface),
                       {"-fsyntax-only", "-x", "c", "-std=c99", "-Wall",
                        "-Wextra", "-Werror"}));
}

/// The toy interface built for `targets` with a CUDA table whose PTX and
/// cubin exercise the escaping (quotes, backslashes, NUL and high bytes).
KernelInterface cudaInterface(std::vector<std::string> targets) {
  KernelInterface k = toyInterface();
  k.targets = std::move(targets);
  KernelInterface::CudaKernels cuda;
  cuda.arch = "sm_90";
  cuda.ptx = "//\n.version 8.0\n.target sm_90\n// \"quoted\" \\ */ ?\?=\n";
  cuda.cubin = std::string("\x7f" "ELF\0\xff\x80\n", 8);
  cuda.kernelF32 = "toy_f32";
  cuda.kernelBF16 = "toy_bf16";
  cuda.blockThreads = 128;
  cuda.sharedBytes = 70000;
  cuda.workspaceBytes = 48;
  k.cuda = cuda;
  return k;
}

TEST_F(TargetTest, CudaTableIsEmbeddedAsData) {
  for (auto targets : {std::vector<std::string>{"cpu", "cuda"},
                       std::vector<std::string>{"cuda"}}) {
    KernelInterface iface = cudaInterface(targets);
    ASSERT_FALSE(llvm::errorToBool(validateInterface(iface)));
    EXPECT_TRUE(compiles(generateGlue(iface),
                         {"-fsyntax-only", "-x", "c", "-std=c99", "-Wall", "-Wextra",
                          "-pedantic", "-Werror"}));
    std::string h = generateHeader(iface);
    EXPECT_EQ(h.find("toy_forward(") != std::string::npos, targets.size() == 2) << h;
  }

  // A cuda-only library has no host kernel: no object file, the table is data.
  KernelInterface iface = cudaInterface({"cuda"});
  std::string lib = path("libtoy_cuda.so");
  llvm::Error err = writeLibrary(nullptr, iface, lib, CodegenOptions{});
  ASSERT_FALSE(err) << llvm::toString(std::move(err));
  void *handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << dlerror();
  auto *entry = static_cast<const miras_module_entry *>(
      dlsym(handle, MIRAS_MODULE_ENTRY_SYMBOL));
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->forward, nullptr);
  EXPECT_EQ(entry->forward_range, nullptr);
  const miras_module_metadata *meta = entry->metadata();
  EXPECT_STREQ(meta->targets, "cuda");
  ASSERT_NE(meta->cuda, nullptr);
  const miras_cuda_binary *cuda = meta->cuda;
  EXPECT_STREQ(cuda->arch, "sm_90");
  EXPECT_EQ(std::string(cuda->ptx), iface.cuda->ptx);
  ASSERT_EQ(cuda->cubin_size, iface.cuda->cubin.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char *>(cuda->cubin), cuda->cubin_size),
            iface.cuda->cubin);
  EXPECT_STREQ(cuda->kernel_f32, "toy_f32");
  EXPECT_STREQ(cuda->kernel_bf16, "toy_bf16");
  EXPECT_EQ(cuda->block_threads, 128u);
  EXPECT_EQ(cuda->shared_bytes, 70000u);
  EXPECT_EQ(cuda->workspace_bytes, 48u);
  dlclose(handle);
}

TEST_F(TargetTest, ValidateInterfaceRejectsBadInterfaces) {
  auto bad = [](auto mutate) {
    KernelInterface k = toyInterface();
    mutate(k);
    return llvm::errorToBool(validateInterface(k));
  };
  EXPECT_TRUE(bad([](KernelInterface &k) { k.moduleName = "9lives"; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.moduleName = "a-b"; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.moduleName = "int"; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.dk = 0; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.gates.push_back({"c", true, "dq", 2}); }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.gates.push_back({"c", true, "dk", 3}); }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.gates.push_back(k.gates[0]); }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.gates[0].range->lo = 2 * HUGE_VAL; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.gates[0].range->hiClosed = true; })); // [0, inf]
  EXPECT_TRUE(bad([](KernelInterface &k) { k.gates[0].range = {{1.0, 1.0, true, false}}; }));
  EXPECT_FALSE(bad([](KernelInterface &k) { k.gates[0].range = {{1.0, 1.0, true, true}}; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.states[0].shape = {1, 1, 1, 1, 1}; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.states[0].shape = {2, 0}; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.targets = {}; }));
  EXPECT_TRUE(bad([](KernelInterface &k) { k.targets = {"cpu", "cuda"}; })); // no table
  EXPECT_TRUE(bad([](KernelInterface &k) { k.cuda = cudaInterface({"cuda"}).cuda; }));
  EXPECT_TRUE(bad([](KernelInterface &k) {
    k = cudaInterface({"cuda"});
    k.cuda->blockThreads = 2048;
  }));
  EXPECT_TRUE(bad([](KernelInterface &k) {
    k = cudaInterface({"cuda"});
    k.cuda->ptx.clear();
  }));
  EXPECT_FALSE(bad([](KernelInterface &k) { k = cudaInterface({"cuda"}); }));
  EXPECT_FALSE(bad([](KernelInterface &) {}));
}

TEST_F(TargetTest, ToyLibraryComputesTheRecurrence) {
  auto module = toyModule();
  ASSERT_TRUE(module);
  KernelInterface iface = toyInterface();
  std::string lib = path("out/libtoy.so");
  CodegenOptions options;
  llvm::Error err = writeLibrary(*module, iface, lib, options);
  ASSERT_FALSE(err) << llvm::toString(std::move(err));
  ASSERT_TRUE(llvm::sys::fs::exists(path("out/toy.h")));
  EXPECT_EQ(readFile(path("out/toy.h")), generateHeader(iface));

  void *handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << dlerror();
  auto *entry = static_cast<const miras_module_entry *>(
      dlsym(handle, MIRAS_MODULE_ENTRY_SYMBOL));
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->abi_version, MIRAS_ABI_VERSION);
  // The kernel itself is internal; only the ABI is exported.
  EXPECT_EQ(dlsym(handle, "_mlir_ciface_toy_kernel"), nullptr);

  const miras_module_metadata *md = entry->metadata();
  ASSERT_NE(md, nullptr);
  EXPECT_EQ(md, reinterpret_cast<const miras_module_metadata *(*)(void)>(
                    dlsym(handle, "toy_metadata"))());
  EXPECT_EQ(md->abi_version, MIRAS_ABI_VERSION);
  EXPECT_STREQ(md->name, "toy");
  EXPECT_EQ(std::string(md->source), iface.sourcePath);
  EXPECT_STREQ(md->compiler, "mirasc 0.1");
  EXPECT_EQ(md->dk, 2);
  EXPECT_EQ(md->dv, 2);
  EXPECT_EQ(md->chunk, 1);
  EXPECT_EQ(md->read_after_write, 1);
  ASSERT_EQ(md->num_params, 2);
  EXPECT_STREQ(md->params[1].name, "gamma");
  EXPECT_EQ(md->params[1].value, 0.9);
  EXPECT_EQ(md->params[1].is_integer, 0);
  EXPECT_EQ(md->params[0].is_integer, 1);
  ASSERT_EQ(md->num_gates, 1);
  EXPECT_STREQ(md->gates[0].name, "alpha");
  EXPECT_EQ(md->gates[0].kind, MIRAS_GATE_SCALAR);
  EXPECT_EQ(md->gates[0].axis, MIRAS_AXIS_NONE);
  EXPECT_EQ(md->gates[0].dim, 1);
  EXPECT_EQ(md->gates[0].has_range, 1);
  EXPECT_EQ(md->gates[0].range_lo, 0.0);
  EXPECT_EQ(md->gates[0].range_hi, HUGE_VAL);
  EXPECT_EQ(md->gates[0].range_lo_closed, 1);
  EXPECT_EQ(md->gates[0].range_hi_closed, 0);
  ASSERT_EQ(md->num_states, 1);
  EXPECT_STREQ(md->states[0].name, "W");
  EXPECT_EQ(md->states[0].rank, 2);
  EXPECT_EQ(md->states[0].shape[0], 2);
  EXPECT_EQ(md->states[0].shape[1], 2);
  EXPECT_STREQ(md->targets, "cpu");
  EXPECT_EQ(std::string(md->rule), iface.rule);

  // Random inputs, reference recurrence in plain C++.
  const int64_t B = 2, T = 5, H = 3, D = 2;
  uint32_t seed = 12345;
  auto rnd = [&] {
    seed = seed * 1664525u + 1013904223u;
    return static_cast<float>(seed >> 8) / 16777216.0f - 0.5f;
  };
  std::vector<float> q(B * T * H * D), k(q.size()), v(q.size()), alpha(B * T * H),
      w0(B * H * D * D);
  for (auto *vec : {&q, &k, &v, &w0})
    for (float &x : *vec)
      x = rnd();
  for (float &a : alpha)
    a = 0.5f + rnd();
  std::vector<float> refW = w0, refO(q.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        float a = alpha[(b * T + t) * H + h];
        const int64_t x = ((b * T + t) * H + h) * D;
        float *W = &refW[(b * H + h) * D * D];
        for (int i = 0; i < D; ++i)
          for (int j = 0; j < D; ++j)
            W[i * D + j] = a * W[i * D + j] + v[x + i] * k[x + j];
        for (int i = 0; i < D; ++i)
          refO[x + i] = W[i * D] * q[x] + W[i * D + 1] * q[x + 1];
      }

  std::vector<float> o(q.size(), -1.0f), w(w0.size(), -1.0f);
  const float *gates[] = {alpha.data()};
  const float *stateIn[] = {w0.data()};
  float *stateOut[] = {w.data()};
  miras_forward_args args{B, T, H, q.data(), k.data(), v.data(), gates,
                          stateIn, stateOut, o.data()};
  ASSERT_EQ(entry->forward(&args), MIRAS_OK);
  for (size_t i = 0; i < o.size(); ++i)
    EXPECT_NEAR(o[i], refO[i], 1e-5) << "o[" << i << "]";
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_NEAR(w[i], refW[i], 1e-5) << "W[" << i << "]";

  // In-place continuation (state_in == state_out) through the explicit form.
  using Explicit = int32_t (*)(int64_t, int64_t, int64_t, const float *,
                               const float *, const float *, const float *,
                               const float *, float *, float *);
  auto fwdExplicit = reinterpret_cast<Explicit>(dlsym(handle, "toy_forward_explicit"));
  ASSERT_NE(fwdExplicit, nullptr);
  std::vector<float> wInPlace = w0, o2(q.size());
  ASSERT_EQ(fwdExplicit(B, T, H, q.data(), k.data(), v.data(), alpha.data(),
                        wInPlace.data(), wInPlace.data(), o2.data()),
            MIRAS_OK);
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_NEAR(wInPlace[i], refW[i], 1e-5);

  // NULL state_in array means a zero initial state: with T = 1 the final
  // state of (b, h) = (0, 0) is exactly v k^T, whatever state_out held.
  std::vector<float> wZero(w0.size(), 7.0f), o3(q.size());
  float *zeroOut[] = {wZero.data()};
  miras_forward_args zargs = args;
  zargs.length = 1;
  zargs.state_in = nullptr;
  zargs.state_out = zeroOut;
  zargs.o = o3.data();
  ASSERT_EQ(entry->forward(&zargs), MIRAS_OK);
  for (int i = 0; i < D; ++i)
    for (int j = 0; j < D; ++j)
      EXPECT_FLOAT_EQ(wZero[i * D + j], v[i] * k[j]);

  // forward_range: disjoint pair ranges, run out of order, add up to the
  // whole forward; each range initialises only its own pairs' states.
  ASSERT_NE(entry->forward_range, nullptr);
  std::vector<float> oRange(q.size(), -1.0f), wRange(w0.size(), -1.0f);
  float *rangeOut[] = {wRange.data()};
  miras_forward_args rargs = args;
  rargs.state_out = rangeOut;
  rargs.o = oRange.data();
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{4, 6}, {0, 1}, {1, 4}, {2, 2}})
    ASSERT_EQ(entry->forward_range(&rargs, begin, end), MIRAS_OK) << begin << ".." << end;
  EXPECT_EQ(oRange, o);
  EXPECT_EQ(wRange, w);
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{-1, 2}, {3, 2}, {0, B * H + 1}})
    EXPECT_EQ(entry->forward_range(&rargs, begin, end), MIRAS_ERR_INVALID_ARGUMENT)
        << begin << ".." << end;
  EXPECT_EQ(entry->forward_range(nullptr, 0, 1), MIRAS_ERR_NULL_POINTER);

  // Rejected calls change nothing.
  std::vector<float> untouched = w;
  EXPECT_EQ(entry->forward(nullptr), MIRAS_ERR_NULL_POINTER);
  miras_forward_args bad = args;
  bad.batch = 0;
  EXPECT_EQ(entry->forward(&bad), MIRAS_ERR_SHAPE);
  bad = args;
  bad.length = -1;
  EXPECT_EQ(entry->forward(&bad), MIRAS_ERR_SHAPE);
  bad = args;
  bad.heads = INT64_MAX;
  EXPECT_EQ(entry->forward(&bad), MIRAS_ERR_SHAPE); // overflowing element count
  bad = args;
  bad.q = nullptr;
  EXPECT_EQ(entry->forward(&bad), MIRAS_ERR_NULL_POINTER);
  bad = args;
  bad.gates = nullptr;
  EXPECT_EQ(entry->forward(&bad), MIRAS_ERR_NULL_POINTER);
  const float *nullGate[] = {nullptr};
  bad = args;
  bad.gates = nullGate;
  EXPECT_EQ(entry->forward(&bad), MIRAS_ERR_NULL_POINTER);
  float *nullOut[] = {nullptr};
  bad = args;
  bad.state_out = nullOut;
  EXPECT_EQ(entry->forward(&bad), MIRAS_ERR_NULL_POINTER);
  EXPECT_EQ(w, untouched);
  dlclose(handle);
}

TEST_F(TargetTest, FailedLinkLeavesExistingLibraryUntouched) {
  auto module = toyModule();
  ASSERT_TRUE(module);
  std::string lib = path("libtoy.so");
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(lib, ec);
    os << "previous library";
  }
  CodegenOptions options;
  options.link.compiler = "/bin/false";
  llvm::Error err = writeLibrary(*module, toyInterface(), lib, options);
  ASSERT_TRUE(bool(err));
  std::string message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("exit status 1"), std::string::npos) << message;
  EXPECT_EQ(readFile(lib), "previous library");
  EXPECT_FALSE(llvm::sys::fs::exists(path("toy.h")));

  // Same through $MIRAS_CC, and with a compiler that reports errors.
  const char *oldCC = getenv("MIRAS_CC");
  std::string savedCC = oldCC ? oldCC : "";
  setenv("MIRAS_CC", "/bin/false", 1);
  err = writeLibrary(*module, toyInterface(), lib, CodegenOptions{});
  if (oldCC)
    setenv("MIRAS_CC", savedCC.c_str(), 1);
  else
    unsetenv("MIRAS_CC");
  EXPECT_TRUE(bool(err));
  llvm::consumeError(std::move(err));
  options.link.compiler = "";
  options.link.extraArgs = {"-lmiras_no_such_library"};
  err = writeLibrary(*module, toyInterface(), lib, options);
  ASSERT_TRUE(bool(err));
  message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("miras_no_such_library"), std::string::npos) << message;
  EXPECT_EQ(readFile(lib), "previous library");

  // No temporaries are left next to the output.
  std::error_code ec;
  int entries = 0;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec))
    ++entries;
  EXPECT_EQ(entries, 1);
}

TEST_F(TargetTest, ErrorsAreValues) {
  // Not lowered to LLVM: no _mlir_ciface_ wrapper yet.
  auto raw = toyModule(/*lower=*/false);
  ASSERT_TRUE(raw);
  llvm::Error err = writeLibrary(*raw, toyInterface(), path("libtoy.so"), {});
  ASSERT_TRUE(bool(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("_mlir_ciface_toy_kernel"),
            std::string::npos);

  // Translation of non-LLVM dialects fails with the diagnostic in the error.
  llvm::LLVMContext llvmContext;
  auto translated = translateToLLVMIR(*raw, llvmContext);
  ASSERT_FALSE(bool(translated));
  EXPECT_NE(llvm::toString(translated.takeError()).find("func.func"),
            std::string::npos);

  // Invalid interface.
  auto module = toyModule();
  ASSERT_TRUE(module);
  KernelInterface iface = toyInterface();
  iface.moduleName = "not a name";
  err = writeLibrary(*module, iface, path("libtoy.so"), {});
  EXPECT_TRUE(bool(err));
  llvm::consumeError(std::move(err));

  // Unknown CPU.
  auto good = translateToLLVMIR(*module, llvmContext);
  ASSERT_TRUE(bool(good)) << llvm::toString(good.takeError());
  EXPECT_FALSE((*good)->getTargetTriple().str().empty());
  CodegenOptions options;
  options.cpu = "no-such-cpu";
  err = emitObjectFile(**good, path("k.o"), options);
  ASSERT_TRUE(bool(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("no-such-cpu"), std::string::npos);
  EXPECT_FALSE(llvm::sys::fs::exists(path("k.o")));

  // Portable code generation works.
  options.cpu = "generic";
  err = emitObjectFile(**good, path("k.o"), options);
  EXPECT_FALSE(bool(err)) << llvm::toString(std::move(err));
  EXPECT_TRUE(llvm::sys::fs::exists(path("k.o")));
}

} // namespace
