// cmd_grad.cpp: `miras grad lib.so --inputs DIR --adjoints DIR --outputs DIR` runs the
// backward pass of a module built with `mirasc --backward` on .npy files.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.hpp"
#include "metadata_json.hpp"
#include "miras/npy.hpp"
#include "miras/runtime.hpp"

namespace miras::cli {

const char kGradHelp[] =
    "usage: miras grad <lib.so> --inputs DIR --adjoints DIR --outputs DIR [--threads N]\n"
    "                  [--check-finite]\n"
    "\n"
    "The backward pass of a module built with mirasc --backward: the adjoints of a loss\n"
    "L with respect to every input of the forward. Reads the forward's inputs from\n"
    "--inputs as 'miras run' does (q, k, v, every gate; <state>.npy when present, else\n"
    "the state's declared init, zeros without one), o.npy (dL/do, required) and\n"
    "<state>.npy (dL/d final state, optional: zero) from --adjoints, and writes dq.npy,\n"
    "dk.npy, dv.npy, d<gate>.npy and d<state>.npy (the initial state's adjoint) to\n"
    "--outputs (created if missing), all or, on any failure, none (as miras run).\n"
    "\n"
    "options:\n"
    "  --inputs DIR    directory of the forward's input .npy files\n"
    "  --adjoints DIR  directory of o.npy and the final states' adjoints\n"
    "  --outputs DIR   directory for the d<name>.npy files\n"
    "  --check-finite  fail on the first NaN or infinity in an input or adjoint, or in\n"
    "                  an output after the run (as MIRAS_CHECK_FINITE=1); without it a\n"
    "                  non-finite output is a warning\n"
    "  --threads N     CPU threads the (batch, head) pairs are split over; 0 = one\n"
    "                  per CPU (default: MIRAS_NUM_THREADS, else 1)\n";

namespace fs = std::filesystem;

namespace {

struct GradOptions {
  std::string library, inputs, adjoints, outputs;
  int32_t threads = -1;
  bool checkFinite = false;
};

GradOptions parseOptions(const Args &args) {
  GradOptions opts;
  std::optional<std::string> inputs, adjoints, outputs, threads;
  opts.library = parseLibraryCommand(args, "grad",
                                     {{"--inputs", &inputs},
                                      {"--adjoints", &adjoints},
                                      {"--outputs", &outputs},
                                      {"--threads", &threads}},
                                     {{"--check-finite", &opts.checkFinite}});
  opts.inputs = inputs.value_or("");
  opts.adjoints = adjoints.value_or("");
  opts.outputs = outputs.value_or("");
  if (opts.library.empty() || opts.inputs.empty() || opts.adjoints.empty() ||
      opts.outputs.empty())
    throw UsageError("usage: miras grad <lib.so> --inputs DIR --adjoints DIR --outputs DIR "
                     "[--threads N]");
  if (threads)
    opts.threads = parseThreadCount(*threads);
  return opts;
}

std::string npyPath(const std::string &dir, const std::string &name) {
  return (fs::path(dir) / (name + ".npy")).string();
}

/// `required` names must exist; the states are read when present. An absent initial
/// state (`initial`) is the runtime's declared init, an absent adjoint zero.
TensorMap readNamed(const Library &lib, const std::string &dir,
                    const std::vector<std::string> &required, const char *stateRole,
                    bool initial) {
  const miras_module_metadata &m = lib.metadata();
  TensorMap tensors;
  for (const std::string &name : required)
    tensors[name] = readNpy(npyPath(dir, name));
  for (int32_t i = 0; i < m.num_states; ++i) {
    std::string path = npyPath(dir, m.states[i].name);
    std::error_code ec;
    if (fs::exists(path, ec))
      tensors[m.states[i].name] = readNpy(path);
    else
      std::fprintf(stderr, "miras: note: %s not found; %s '%s' is %s\n", path.c_str(),
                   stateRole, m.states[i].name,
                   initial ? initialStateText(m.states[i]).c_str() : "zero");
  }
  return tensors;
}

} // namespace

int runGrad(const Args &args) {
  GradOptions opts = parseOptions(args);
  Library lib = Library::open(opts.library);
  const miras_module_metadata &m = lib.metadata();
  // What the library cannot do is the error, before any file is read.
  if (!hasTarget(m.targets, "cpu"))
    throw Error(MIRAS_ERR_DEVICE, "'" + opts.library + "' was built for cuda only; the "
                                  "backward pass runs on the cpu");
  if (m.backward_segment <= 0)
    throw Error(MIRAS_ERR_UNSUPPORTED, "'" + opts.library + "' has no backward pass: "
                                       "rebuild module '" + m.name + "' with mirasc --backward");
  if (opts.threads >= 0)
    lib.setNumThreads(opts.threads);
  if (opts.checkFinite)
    lib.setCheckFinite(true);
  std::vector<std::string> inputNames{"q", "k", "v"};
  for (int32_t i = 0; i < m.num_gates; ++i)
    inputNames.push_back(m.gates[i].name);
  TensorMap inputs = readNamed(lib, opts.inputs, inputNames, "initial state", true);
  TensorMap adjoints = readNamed(lib, opts.adjoints, {"o"}, "the adjoint of final state", false);
  auto start = std::chrono::steady_clock::now();
  TensorMap grads = lib.backward(inputs, adjoints);
  std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
  writeOutputs(grads, opts.outputs, "d");
  const std::vector<int64_t> &q = inputs.at("q").shape(); // validated by backward
  std::printf("%s: B=%lld T=%lld H=%lld backward %.3f ms (%d thread%s, segment %lld), "
              "wrote %zu tensors to %s\n",
              m.name, (long long)q[0], (long long)q[1], (long long)q[2], ms.count(),
              (int)lib.numThreads(), lib.numThreads() == 1 ? "" : "s",
              (long long)m.backward_segment, grads.size(), opts.outputs.c_str());
  return 0;
}

} // namespace miras::cli
