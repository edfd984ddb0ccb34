// cli_test.cpp: the `miras` tool end to end (exit codes, JSON, run on .npy files).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include <elf.h>
#include <sys/wait.h>

#include "miras/npy.hpp"
#include "test_util.hpp"

namespace {

using namespace miras::test;
using miras::TensorMap;

struct Result {
  int code;
  std::string out, err;
};

class Cli : public ::testing::Test {
protected:
  // `env` prefixes the command, e.g. "LD_LIBRARY_PATH=dir ".
  Result tool(const std::string &args, const std::string &env = "") {
    std::string out = dir_.file("stdout"), err = dir_.file("stderr");
    int rc = std::system(
        (env + std::string(MIRAS_TOOL) + " " + args + " >" + out + " 2>" + err).c_str());
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read(out), read(err)};
  }

  static std::string read(const std::string &path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

  // Exactly one line, "miras: error: ...".
  static void expectOneErrorLine(const Result &r, const std::string &fragment) {
    EXPECT_EQ(r.err.rfind("miras: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
  }

  ScratchDir dir_;
};

TEST_F(Cli, Help) {
  Result r = tool("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: miras <command>"), std::string::npos);
  r = tool("run --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--inputs DIR"), std::string::npos);
}

TEST_F(Cli, UsageErrorsExitTwo) {
  for (const char *args : {"", "frobnicate", "info", "info a.so b.so", "run x.so --inputs d",
                           "run x.so --inputs d --outputs e --threads -1", "run x.so --bogus 1",
                           "grad", "grad x.so --inputs d --adjoints e", "grad x.so --bogus 1",
                           "grad x.so --inputs d --adjoints e --outputs f --threads x"}) {
    Result r = tool(args);
    EXPECT_EQ(r.code, 2) << args;
    expectOneErrorLine(r, "");
  }
}

// A library built without --backward: the one error line says how to get one, before
// any file is read (the directories do not exist).
TEST_F(Cli, GradWithoutBackwardPass) {
  Result r = tool(std::string("grad ") + MIRAS_FAKE_MODULE +
                  " --inputs /nonexistent --adjoints /nonexistent --outputs /nonexistent");
  EXPECT_EQ(r.code, 1) << r.err;
  expectOneErrorLine(r, "has no backward pass: rebuild module 'fake_linear' with mirasc --backward");
}

TEST_F(Cli, InfoPrintsJson) {
  Result r = tool(std::string("info ") + MIRAS_FAKE_MODULE);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char *fragment :
       {"\"name\": \"fake_linear\"", "\"abi_version\": 10", "\"backward_segment\": 0", "\"backward_flops_per_token\": 0", "\"algorithm\": \"sequential\"", "\"flops_per_token\": 52", "\"dk\": 3", "\"dv\": 4",
        "\"read\": \"after_write\"", "{\"name\": \"steps\", \"value\": 2, \"integer\": true}",
        "{\"name\": \"eta\", \"value\": 0.5, \"integer\": false}",
        "{\"name\": \"alpha\", \"kind\": \"scalar\", \"axis\": null, \"dim\": 1, \"per_step\": false, \"shape\": "
        "\"[B,T,H]\", \"range\": {\"text\": \"(0, 1]\", \"lo\": 0, \"hi\": 1, \"lo_closed\": false, "
        "\"hi_closed\": true}, \"sample\": [0, 1]}",
        "{\"name\": \"beta\", \"kind\": \"channel\", \"axis\": \"dv\", \"dim\": 4, \"per_step\": false, \"shape\": "
        "\"[B,T,H,Dv]\", \"range\": null, \"sample\": [0.1, 0.9]}",
        "{\"name\": \"W\", \"shape\": [4, 3], \"role\": \"carried\", \"init\": \"zeros\"}", "\"targets\": [\"cpu\"]",
        "\"rule\": \"W = alpha * W + (beta * v) k^T\""})
    EXPECT_NE(r.out.find(fragment), std::string::npos) << fragment << "\n" << r.out;
}

TEST_F(Cli, InfoPrintsCudaTable) {
  Result r = tool(std::string("info ") + MIRAS_FAKE_CUDA);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char *fragment :
       {"\"targets\": [\"cpu\", \"cuda\"]",
        "\"cuda\": {\"arch\": \"sm_90\", \"cubin\": true, \"cubin_bytes\": 21, "
        "\"ptx_bytes\": 27, \"kernel_f32\": \"fake_linear_f32\", \"kernel_bf16\": "
        "\"fake_linear_bf16\", \"block_threads\": 128, \"shared_bytes\": 4096, "
        "\"workspace_bytes\": 64}"})
    EXPECT_NE(r.out.find(fragment), std::string::npos) << fragment << "\n" << r.out;
  r = tool(std::string("info ") + MIRAS_FAKE_MODULE);
  EXPECT_NE(r.out.find("\"cuda\": null"), std::string::npos) << r.out;
}

TEST_F(Cli, InfoOnBadModuleFails) {
  Result r = tool(std::string("info ") + MIRAS_FAKE_BAD_ENTRY_ABI);
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "ABI version 99");
}

TEST_F(Cli, RunWritesReferenceOutputs) {
  TensorMap in = fakeInputs(2, 4, 3, true, 11);
  std::filesystem::create_directory(dir_.file("in"));
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  Result r = tool(std::string("run ") + MIRAS_FAKE_MODULE + " --inputs " + dir_.file("in") +
                  " --outputs=" + dir_.file("out/nested") + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("fake_linear: B=2 T=4 H=3"), std::string::npos) << r.out;
  TensorMap want = reference(in);
  expectNear(miras::readNpy(dir_.file("out/nested/o.npy")), want["o"]);
  expectNear(miras::readNpy(dir_.file("out/nested/W.npy")), want["W"]);
}

TEST_F(Cli, RunWithoutStateStartsFromZeros) {
  TensorMap in = fakeInputs(1, 3, 2, false, 5);
  std::filesystem::create_directory(dir_.file("in"));
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  Result r = tool(std::string("run ") + MIRAS_FAKE_MODULE + " --inputs " + dir_.file("in") +
                  " --outputs " + dir_.file("out"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("starts from zeros"), std::string::npos) << r.err;
  expectNear(miras::readNpy(dir_.file("out/o.npy")), reference(in)["o"]);
}

// A module that declares its starts (fake_module.c, FAKE_INITS: W uniform 0.25): the
// tool passes no W, the runtime starts it from 0.25, and the note says so per state.
TEST_F(Cli, RunWithoutStateStartsFromTheDeclaredInit) {
  TensorMap in = fakeInputs(1, 3, 2, false, 5);
  std::filesystem::create_directory(dir_.file("in"));
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  Result r = tool(std::string("run ") + MIRAS_FAKE_INITS + " --inputs " + dir_.file("in") +
                  " --outputs " + dir_.file("out"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("state 'W' starts from its declared init uniform(0.25)"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("state 'N' starts from its declared init normal(0.5, seed = 42)"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("state 'Z' starts from zeros"), std::string::npos) << r.err;
  in["W"] = miras::Tensor({1, 2, kDv, kDk}, std::vector<float>(2 * kDv * kDk, 0.25f));
  expectNear(miras::readNpy(dir_.file("out/o.npy")), reference(in)["o"]);
}

TEST_F(Cli, RunReportsMissingAndInvalidInputs) {
  std::filesystem::create_directory(dir_.file("in"));
  std::string cmd = std::string("run ") + MIRAS_FAKE_MODULE + " --inputs " + dir_.file("in") +
                    " --outputs " + dir_.file("out");
  Result r = tool(cmd);
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "q.npy");

  TensorMap in = fakeInputs(1, 3, 2, true); // with W: no "starts from zeros" note
  in["k"] = randomTensor({1, 3, 2, kDv}, 9); // wrong Dk
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  r = tool(cmd);
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "input tensor 'k': expected shape [1, 3, 2, 3], got [1, 3, 2, 4]");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("out/o.npy")));

  // An empty sequence: every file holds zero tokens (no data at all).
  for (const auto &[name, t] : fakeInputs(1, 0, 2, true))
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  r = tool(cmd);
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "input tensor 'q' has T = 0 (shape [1, 0, 2, 3]): an empty sequence");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("out/o.npy")));
}

std::vector<char> readBytes(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

void writeBytes(const std::string &path, const std::vector<char> &bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A NaN input: a warning on the outputs it spoils, or with --check-finite an error
// naming it, and then no output is written.
TEST_F(Cli, NonFiniteInputsWarnOrFail) {
  TensorMap in = fakeInputs(1, 3, 2, true, 7);
  in["q"].values()[1 * 2 * 3 + 2] = std::nanf(""); // [0, 1, 0, 2]
  std::filesystem::create_directory(dir_.file("in"));
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  std::string cmd = std::string("run ") + MIRAS_FAKE_MODULE + " --inputs " + dir_.file("in") +
                    " --outputs ";
  Result r = tool(cmd + dir_.file("warned"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("miras: warning: output 'o' has "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("non-finite values, the first nan at [0, 1, 0, 0]"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("output 'W'"), std::string::npos) << "q does not reach W: " << r.err;

  r = tool(cmd + dir_.file("checked") + " --check-finite");
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "input tensor 'q' holds nan at [0, 1, 0, 2]");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("checked/o.npy")));
  r = tool(cmd + dir_.file("checked"), "MIRAS_CHECK_FINITE=1 ");
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "input tensor 'q' holds nan at [0, 1, 0, 2]");
}

// Sizes beyond the machine's memory name the tensor and the bytes instead of
// std::bad_alloc; counts beyond 64 bits are shape errors.
TEST_F(Cli, ImpossibleSizesAreNamed) {
  Result r = tool(std::string("bench ") + MIRAS_FAKE_MODULE +
                  " --batch 100000 --length 1000000 --heads 64");
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "input 'q': cannot allocate 76800000000000 bytes (more than this "
                        "machine's");
  r = tool(std::string("bench ") + MIRAS_FAKE_MODULE +
           " --batch 1000000000 --length 1000000000 --heads 64");
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "more elements than a 64-bit count holds");
}

// A truncated module is an error before dlopen (where touching a page past the end of
// the file is a SIGBUS), whatever the cut.
TEST_F(Cli, TruncatedModuleFailsCleanly) {
  std::vector<char> whole = readBytes(MIRAS_FAKE_MODULE);
  ASSERT_GT(whole.size(), 8192u);
  for (size_t size : {size_t(0), size_t(10), size_t(64), size_t(700), whole.size() / 2,
                      whole.size() - 4096, whole.size() - 1}) {
    std::string cut = dir_.file("cut.so");
    writeBytes(cut, std::vector<char>(whole.begin(), whole.begin() + size));
    Result r = tool("info " + cut);
    EXPECT_EQ(r.code, 1) << size << " bytes: " << r.err;
    expectOneErrorLine(r, "cannot load");
    EXPECT_TRUE(r.err.find("truncated or damaged") != std::string::npos ||
                r.err.find("no ELF header") != std::string::npos) << r.err;
  }
}

// Every pointer of the metadata and entry table moved elsewhere, one at a time (the
// addend of each relative relocation into .data.rel.ro and .data): an error or a
// module that still checks out, never a crash.
TEST_F(Cli, DamagedMetadataPointersFailCleanly) {
  std::vector<char> image = readBytes(MIRAS_FAKE_MODULE);
  auto *eh = reinterpret_cast<const Elf64_Ehdr *>(image.data());
  auto *sections = reinterpret_cast<const Elf64_Shdr *>(image.data() + eh->e_shoff);
  const char *names = image.data() + sections[eh->e_shstrndx].sh_offset;
  const Elf64_Shdr *rela = nullptr;
  std::vector<const Elf64_Shdr *> data;
  for (int i = 0; i < eh->e_shnum; ++i) {
    std::string name = names + sections[i].sh_name;
    if (name == ".rela.dyn")
      rela = &sections[i];
    if (name == ".data.rel.ro" || name == ".data")
      data.push_back(&sections[i]);
  }
  ASSERT_NE(rela, nullptr);
  ASSERT_FALSE(data.empty());
  int damaged = 0, refused = 0;
  for (size_t at = rela->sh_offset; at + sizeof(Elf64_Rela) <= rela->sh_offset + rela->sh_size;
       at += sizeof(Elf64_Rela)) {
    auto *r = reinterpret_cast<const Elf64_Rela *>(image.data() + at);
    bool intoData = std::any_of(data.begin(), data.end(), [&](const Elf64_Shdr *d) {
      return r->r_offset >= d->sh_addr && r->r_offset < d->sh_addr + d->sh_size;
    });
    if (ELF64_R_TYPE(r->r_info) != R_X86_64_RELATIVE || !intoData)
      continue;
    for (int64_t shift : {int64_t(1) << 32, -int64_t(r->r_addend) + 8, int64_t(3)}) {
      std::vector<char> copy = image;
      reinterpret_cast<Elf64_Rela *>(copy.data() + at)->r_addend += shift;
      std::string path = dir_.file("damaged.so");
      writeBytes(path, copy);
      Result res = tool("info " + path);
      ++damaged;
      ASSERT_TRUE(res.code == 0 || res.code == 1)
          << "relocation at " << r->r_offset << " moved by " << shift << ": exit " << res.code
          << "\n" << res.err;
      if (res.code == 1) {
        ++refused;
        expectOneErrorLine(res, "damaged.so");
      }
    }
  }
  EXPECT_GT(damaged, 20);
  EXPECT_GT(refused, damaged / 2) << "most moved pointers must be caught";
}

// A run that cannot write one output changes none; two runs into one directory at once
// leave the outputs of one of them, never o of one and W of the other.
TEST_F(Cli, RunOutputsAreWrittenAsAUnit) {
  TensorMap first = fakeInputs(2, 4, 3, true, 21), second = fakeInputs(2, 4, 3, true, 22);
  for (const auto &[dir, in] : {std::pair{"a", &first}, std::pair{"b", &second}}) {
    std::filesystem::create_directory(dir_.file(dir));
    for (const auto &[name, t] : *in)
      miras::writeNpy(dir_.file(std::string(dir) + "/" + name + ".npy"), t);
  }
  auto run = [&](const char *in) {
    return std::string(MIRAS_TOOL) + " run " + MIRAS_FAKE_MODULE + " --inputs " +
           dir_.file(in) + " --outputs " + dir_.file("out");
  };
  ASSERT_EQ(tool(std::string("run ") + MIRAS_FAKE_MODULE + " --inputs " + dir_.file("a") +
                 " --outputs " + dir_.file("out")).code, 0);
  std::filesystem::create_directory(dir_.file("out/o.npy.blocked"));
  std::filesystem::rename(dir_.file("out/o.npy"), dir_.file("out/o.npy.keep"));
  std::filesystem::rename(dir_.file("out/o.npy.blocked"), dir_.file("out/o.npy"));
  Result r = tool(std::string("run ") + MIRAS_FAKE_MODULE + " --inputs " + dir_.file("b") +
                  " --outputs " + dir_.file("out"));
  EXPECT_EQ(r.code, 1);
  expectOneErrorLine(r, "exists and is not a regular file");
  expectNear(miras::readNpy(dir_.file("out/W.npy")), reference(first)["W"]);
  std::filesystem::remove(dir_.file("out/o.npy"));

  TensorMap wantA = reference(first), wantB = reference(second);
  auto same = [](const miras::Tensor &x, const miras::Tensor &y) {
    if (x.shape() != y.shape())
      return false;
    for (int64_t i = 0; i < x.numel(); ++i)
      if (std::fabs(x.values()[i] - y.values()[i]) > 1e-5f)
        return false;
    return true;
  };
  for (int round = 0; round < 32; ++round) {
    std::string both = "(" + run("a") + " & " + run("b") + " & wait) >/dev/null 2>&1";
    ASSERT_EQ(std::system(both.c_str()), 0);
    miras::Tensor o = miras::readNpy(dir_.file("out/o.npy"));
    miras::Tensor w = miras::readNpy(dir_.file("out/W.npy"));
    bool fromA = same(o, wantA["o"]) && same(w, wantA["W"]);
    bool fromB = same(o, wantB["o"]) && same(w, wantB["W"]);
    ASSERT_TRUE(fromA || fromB) << "round " << round << ": o and W of different runs";
  }
}

// Without a GPU (or a module without cuda kernels) the cuda device fails with one line
// that names cuda and the reason, before any output.
TEST_F(Cli, CudaDeviceFailsWithOneLine) {
  TensorMap in = fakeInputs(1, 3, 2, true);
  std::filesystem::create_directory(dir_.file("in"));
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  std::string io = " --inputs " + dir_.file("in") + " --outputs " + dir_.file("out");
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    return s;
  };
  for (const std::string &args :
       {std::string("run ") + MIRAS_FAKE_CUDA + io + " --device cuda",
        std::string("run ") + MIRAS_FAKE_CUDA + io + " --device=cuda --input-dtype bf16",
        std::string("bench ") + MIRAS_FAKE_CUDA + " --device cuda --length 4",
        std::string("bench ") + MIRAS_FAKE_CUDA + " --device cuda --input-dtype=bf16 --json"}) {
    SCOPED_TRACE(args);
    Result r = tool(args);
    EXPECT_EQ(r.code, 1);
    expectOneErrorLine(r, "");
    EXPECT_NE(lower(r.err).find("cuda"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.file("out/o.npy")));
  for (const std::string &args : {std::string("run ") + MIRAS_FAKE_MODULE + io + " --device cuda",
                                  std::string("bench ") + MIRAS_FAKE_MODULE + " --device cuda"}) {
    Result r = tool(args);
    EXPECT_EQ(r.code, 1) << args;
    expectOneErrorLine(r, "has no cuda kernels (built with --target=cpu)");
    EXPECT_EQ(r.out, "");
  }
  for (const std::string &args : {std::string("run ") + MIRAS_FAKE_CUDA_ONLY + io,
                                  std::string("bench ") + MIRAS_FAKE_CUDA_ONLY}) {
    Result r = tool(args);
    EXPECT_EQ(r.code, 1) << args;
    expectOneErrorLine(r, "was built for cuda only; use --device cuda");
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(Cli, DeviceAndDtypeUsageErrors) {
  std::string lib = MIRAS_FAKE_CUDA;
  for (const std::string &args :
       {"run " + lib + " --inputs d --outputs e --input-dtype bf16",
        "run " + lib + " --inputs d --outputs e --device cpu --input-dtype bf16",
        "run " + lib + " --inputs d --outputs e --device gpu",
        "run " + lib + " --inputs d --outputs e --device cuda --input-dtype f16",
        "bench " + lib + " --input-dtype bf16", "bench " + lib + " --device tpu"}) {
    Result r = tool(args);
    EXPECT_EQ(r.code, 2) << args;
    expectOneErrorLine(r, "");
  }
  Result r = tool("run --help");
  EXPECT_NE(r.out.find("--device DEV"), std::string::npos);
  EXPECT_NE(r.out.find("--input-dtype D"), std::string::npos);
  r = tool("bench --help");
  EXPECT_NE(r.out.find("copy bandwidth"), std::string::npos);
}

// With the fake libcuda.so.1 on the library path, the real dlopen path and the tool's
// cuda commands run end to end: same numbers as the cpu kernel.
TEST_F(Cli, CudaCommandsThroughFakeDriver) {
  const std::string env = std::string("LD_LIBRARY_PATH=") + MIRAS_FAKE_DRIVER_DIR + " ";
  TensorMap in = fakeInputs(2, 4, 3, true, 8);
  std::filesystem::create_directory(dir_.file("in"));
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  std::string run = std::string("run ") + MIRAS_FAKE_CUDA + " --inputs " + dir_.file("in");
  Result r = tool(run + " --outputs " + dir_.file("cpu"), "");
  ASSERT_EQ(r.code, 0) << r.err;
  r = tool(run + " --outputs " + dir_.file("gpu") + " --device cuda", env);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("(cuda, f32 inputs)"), std::string::npos) << r.out;
  for (const char *name : {"o", "W"})
    EXPECT_EQ(miras::readNpy(dir_.file(std::string("gpu/") + name + ".npy")).values(),
              miras::readNpy(dir_.file(std::string("cpu/") + name + ".npy")).values())
        << name;
  r = tool(run + " --outputs " + dir_.file("bf16") + " --device cuda --input-dtype bf16", env);
  ASSERT_EQ(r.code, 0) << r.err;
  expectNear(miras::readNpy(dir_.file("bf16/o.npy")), reference(in)["o"], 5e-2f);

  for (const char *dtype : {"f32", "bf16"}) {
    r = tool(std::string("bench ") + MIRAS_FAKE_CUDA +
                 " --device cuda --json --length 8 --repeat 2 --threads 1 --input-dtype " + dtype,
             env);
    ASSERT_EQ(r.code, 0) << r.err;
    for (const std::string &fragment :
         {std::string("\"device\": \"cuda\""), std::string("\"device_name\": \"Fake GPU\""),
          std::string("\"compute_capability\": \"9.0\""),
          "\"input_dtype\": \"" + std::string(dtype) + "\"", std::string("\"block_threads\": 128"),
          std::string("\"max_abs_diff_vs_cpu\": 0,"), std::string("\"output_finite\": true")})
      EXPECT_NE(r.out.find(fragment), std::string::npos) << fragment << "\n" << r.out;
    // 2 * 8 * 8 tokens: f32 inputs 4 bytes, bf16 2, state read + written, o written.
    const double tok = 2 * 8 * 8, in = tok * (3 + 3 + 4 + 1 + 4), state = 2 * 8 * 12 * 4;
    const double bytes = in * (std::string(dtype) == "bf16" ? 2 : 4) + 2 * state + tok * 4 * 4;
    char want[64];
    std::snprintf(want, sizeof want, "\"bytes_per_forward\": %.6g,", bytes);
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
    EXPECT_EQ(r.out.find("null"), std::string::npos) << r.out;
  }
}

// `miras bench --device cuda --backward`: the backward through the runtime's cuda launch
// (the fake driver runs it as the module's cpu backward, on the checkpoints the runtime
// seeded), against the cpu backward: equal.
TEST_F(Cli, CudaBackwardBenchThroughFakeDriver) {
  const std::string env = std::string("LD_LIBRARY_PATH=") + MIRAS_FAKE_DRIVER_DIR + " ";
  Result r = tool(std::string("bench ") + MIRAS_FAKE_CUDA_BACKWARD +
                      " --device cuda --backward --json --length 9 --repeat 2 --threads 1",
                  env);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char *fragment : {"\"backward_ms\": ", "\"backward_max_rel_diff_vs_cpu\": 0,",
                               "\"backward_worst_output\": \"d"})
    EXPECT_NE(r.out.find(fragment), std::string::npos) << fragment << "\n" << r.out;
  r = tool(std::string("bench ") + MIRAS_FAKE_CUDA + " --device cuda --backward", env);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no cuda backward kernel"), std::string::npos) << r.err;
}

// The cpu device of a cpu,cuda module is the plain forward.
TEST_F(Cli, RunOnCpuDeviceOfCudaModule) {
  TensorMap in = fakeInputs(2, 3, 2, true, 4);
  std::filesystem::create_directory(dir_.file("in"));
  for (const auto &[name, t] : in)
    miras::writeNpy(dir_.file("in/" + name + ".npy"), t);
  Result r = tool(std::string("run ") + MIRAS_FAKE_CUDA + " --inputs " + dir_.file("in") +
                  " --outputs " + dir_.file("out") + " --device cpu");
  ASSERT_EQ(r.code, 0) << r.err;
  expectNear(miras::readNpy(dir_.file("out/o.npy")), reference(in)["o"]);
}

} // namespace
