// cmd_run.cpp: `miras run lib.so --inputs DIR --outputs DIR` runs a module on .npy files.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.hpp"
#include "metadata_json.hpp"
#include "miras/npy.hpp"
#include "miras/runtime.hpp"

namespace miras::cli {

const char kRunHelp[] =
    "usage: miras run <lib.so> --inputs DIR --outputs DIR [--threads N]\n"
    "                 [--device cpu|cuda] [--input-dtype f32|bf16] [--check-finite]\n"
    "\n"
    "Read q.npy, k.npy, v.npy and <gate>.npy for every gate from --inputs, plus\n"
    "<state>.npy for every state when present (a missing state starts from the\n"
    "module's declared init, `init` in the .miras file; zeros without one).\n"
    "Run the module and write o.npy and the final <state>.npy files to --outputs\n"
    "(created if missing) as one unit: all are replaced or, on any failure, none,\n"
    "and concurrent runs into one directory take turns. Arrays are float32 (float64\n"
    "is converted), C order.\n"
    "\n"
    "options:\n"
    "  --inputs DIR    directory of input .npy files\n"
    "  --outputs DIR   directory for the output .npy files\n"
    "  --check-finite  fail on the first NaN or infinity in an input, or in an output\n"
    "                  after the run, naming the tensor and index (as MIRAS_CHECK_FINITE=1);\n"
    "                  without it a non-finite output is a warning\n"
    "  --threads N     CPU threads the (batch, head) pairs are split over; 0 = one\n"
    "                  per CPU (default: MIRAS_NUM_THREADS, else 1)\n"
    "  --device DEV    cpu (default) or cuda: GPU 0, for a module built with\n"
    "                  --target=cuda or cpu,cuda (the arrays are copied to the GPU and\n"
    "                  back; the reported time includes the copies)\n"
    "  --input-dtype D f32 (default) or bf16: q, k, v and the gates are rounded to\n"
    "                  bfloat16 (to nearest even) before the call; states and o stay\n"
    "                  float32 (cuda only)\n";

namespace fs = std::filesystem;

namespace {

struct RunOptions {
  std::string library, inputs, outputs;
  int32_t threads = -1; // -1: the library's default (MIRAS_NUM_THREADS, else 1)
  std::string device = "cpu", inputDtype = "f32";
  bool checkFinite = false;
};

RunOptions parseOptions(const Args &args) {
  RunOptions opts;
  std::optional<std::string> inputs, outputs, device, inputDtype, threads;
  opts.library = parseLibraryCommand(args, "run",
                                     {{"--inputs", &inputs},
                                      {"--outputs", &outputs},
                                      {"--device", &device},
                                      {"--input-dtype", &inputDtype},
                                      {"--threads", &threads}},
                                     {{"--check-finite", &opts.checkFinite}});
  opts.inputs = inputs.value_or("");
  opts.outputs = outputs.value_or("");
  opts.device = device.value_or(opts.device);
  opts.inputDtype = inputDtype.value_or(opts.inputDtype);
  if (opts.library.empty() || opts.inputs.empty() || opts.outputs.empty())
    throw UsageError("usage: miras run <lib.so> --inputs DIR --outputs DIR [--threads N]");
  checkDeviceOptions(opts.device, opts.inputDtype);
  if (threads)
    opts.threads = parseThreadCount(*threads);
  return opts;
}

std::string npyPath(const std::string &dir, const std::string &name) {
  return (fs::path(dir) / (name + ".npy")).string();
}

// q, k, v and gates are required; a state file is optional: the runtime starts an
// absent state from its declared init (zeros without one).
TensorMap readInputs(const Library &lib, const std::string &dir) {
  const miras_module_metadata &m = lib.metadata();
  TensorMap inputs;
  for (const char *name : {"q", "k", "v"})
    inputs[name] = readNpy(npyPath(dir, name));
  for (int32_t i = 0; i < m.num_gates; ++i)
    inputs[m.gates[i].name] = readNpy(npyPath(dir, m.gates[i].name));
  for (int32_t i = 0; i < m.num_states; ++i) {
    std::string path = npyPath(dir, m.states[i].name);
    std::error_code ec;
    if (fs::exists(path, ec))
      inputs[m.states[i].name] = readNpy(path);
    else
      std::fprintf(stderr, "miras: note: %s not found; state '%s' starts from %s\n",
                   path.c_str(), m.states[i].name, initialStateText(m.states[i]).c_str());
  }
  return inputs;
}

} // namespace

int runRun(const Args &args) {
  RunOptions opts = parseOptions(args);
  Library lib = Library::open(opts.library);
  const bool cuda = opts.device == "cuda";
  // The device is checked before any input is read, so that its absence is the error.
  std::string why;
  if (cuda && !lib.hasCuda())
    throw Error(MIRAS_ERR_DEVICE, "device cuda: '" + opts.library +
                                      "' has no cuda kernels (built with --target=" +
                                      lib.metadata().targets +
                                      "); rebuild it with --target=cpu,cuda");
  if (cuda && !cudaAvailable(&why))
    throw Error(MIRAS_ERR_DEVICE, "device cuda: " + why);
  if (!cuda && !hasTarget(lib.metadata().targets, "cpu"))
    throw Error(MIRAS_ERR_DEVICE, "device cpu: '" + opts.library +
                                      "' was built for cuda only; use --device cuda");
  if (opts.threads >= 0)
    lib.setNumThreads(opts.threads);
  if (opts.checkFinite)
    lib.setCheckFinite(true);
  TensorMap inputs = readInputs(lib, opts.inputs);
  auto start = std::chrono::steady_clock::now();
  TensorMap outputs =
      lib.forward(inputs, cuda ? MIRAS_DEVICE_CUDA : MIRAS_DEVICE_CPU,
                  opts.inputDtype == "bf16" ? MIRAS_DTYPE_BF16 : MIRAS_DTYPE_F32);
  std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
  writeOutputs(outputs, opts.outputs);
  const std::vector<int64_t> &q = inputs.at("q").shape(); // validated by forward
  std::string where = cuda ? "cuda, " + opts.inputDtype + " inputs"
                           : std::to_string(lib.numThreads()) + " thread" +
                                 (lib.numThreads() == 1 ? "" : "s");
  std::printf("%s: B=%lld T=%lld H=%lld forward %.3f ms (%s), wrote %zu tensors to %s\n",
              lib.metadata().name, (long long)q[0], (long long)q[1], (long long)q[2], ms.count(),
              where.c_str(), outputs.size(), opts.outputs.c_str());
  return 0;
}

} // namespace miras::cli
