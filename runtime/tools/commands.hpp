// commands.hpp: subcommands of the `miras` tool. Each takes the arguments after its
// name, writes its result to stdout and returns the exit status; failures are thrown
// (UsageError for bad command lines, miras::Error or std::exception otherwise) and
// reported by main in one line.
#ifndef MIRAS_TOOLS_COMMANDS_HPP
#define MIRAS_TOOLS_COMMANDS_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "miras/npy.hpp"
#include "miras/runtime.hpp"

namespace miras::cli {

// A malformed command line (exit status 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using Args = std::vector<std::string>;

// The option at args[i] as {name, value}: `--name=value`, or `--name value` (i then
// moves past the value). A non-option comes back as {arg, ""}.
inline std::pair<std::string, std::string> nextOption(const Args &args, size_t &i) {
  std::string arg = args[i];
  if (arg.rfind("--", 0) != 0)
    return {arg, ""};
  if (size_t eq = arg.find('='); eq != std::string::npos)
    return {arg.substr(0, eq), arg.substr(eq + 1)};
  if (i + 1 == args.size())
    throw UsageError("option " + arg + " needs a value");
  return {arg, args[++i]};
}

// Whether a module's target list (metadata targets, "cpu,cuda") names `target`.
/// `miras <command> <lib.so> --name VALUE ...` (or `--name=VALUE`): the library path,
/// each option's value into `options` (only those listed are accepted). A wrong
/// option or a second positional argument is a usage error naming the command.
/// `flags` are options without a value (`--check-finite`), set to true when given.
inline std::string parseLibraryCommand(
    const Args &args, const std::string &command,
    const std::vector<std::pair<std::string, std::optional<std::string> *>> &options,
    const std::vector<std::pair<std::string, bool *>> &flags = {}) {
  std::string library;
  for (size_t i = 0; i < args.size(); ++i) {
    auto flag = std::find_if(flags.begin(), flags.end(),
                             [&](const auto &f) { return f.first == args[i]; });
    if (flag != flags.end()) {
      *flag->second = true;
      continue;
    }
    auto [arg, value] = nextOption(args, i);
    auto known = std::find_if(options.begin(), options.end(),
                              [&](const auto &o) { return o.first == arg; });
    if (known != options.end())
      *known->second = value;
    else if (arg.rfind("-", 0) == 0)
      throw UsageError("unknown option '" + arg + "' for 'miras " + command + "'");
    else if (library.empty())
      library = arg;
    else
      throw UsageError("unexpected argument '" + arg + "'");
  }
  return library;
}

/// The value of --threads (`miras run`, `miras grad`): 0 (one per CPU) to 4096.
inline int32_t parseThreadCount(const std::string &text) {
  bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || text.size() > 6 || std::stoi(text) > 4096)
    throw UsageError("--threads expects an integer from 0 to 4096, got '" + text + "'");
  return std::stoi(text);
}

/// --device and --input-dtype of `miras run` and `miras bench`.
inline void checkDeviceOptions(const std::string &device, const std::string &inputDtype) {
  if (device != "cpu" && device != "cuda")
    throw UsageError("--device expects cpu or cuda, got '" + device + "'");
  if (inputDtype != "f32" && inputDtype != "bf16")
    throw UsageError("--input-dtype expects f32 or bf16, got '" + inputDtype + "'");
  if (inputDtype == "bf16" && device != "cuda")
    throw UsageError("--input-dtype bf16 needs --device cuda (the cpu forward takes f32 only)");
}

inline bool hasTarget(const char *targets, const std::string &target) {
  std::string list = targets ? targets : "";
  for (size_t start = 0; start <= list.size();) {
    size_t end = list.find(',', start);
    if (end == std::string::npos)
      end = list.size();
    std::string item = list.substr(start, end - start);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item == target)
      return true;
    start = end + 1;
  }
  return false;
}

/// Warns on stderr, one line per tensor, about every output that holds NaN or infinity:
/// how many, and the first by index ("miras: warning: output 'o' has 3 non-finite
/// values, the first nan at [0, 1, 0, 0]").
inline void warnNonFinite(const TensorMap &outputs, const std::string &prefix) {
  for (const auto &[name, tensor] : outputs) {
    int64_t count = 0, first = -1;
    float firstValue = 0;
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      float x = tensor.values()[i];
      if (std::isfinite(x))
        continue;
      if (count++ == 0) {
        first = i;
        firstValue = x;
      }
    }
    if (count == 0)
      continue;
    std::vector<int64_t> index(tensor.shape().size()); // C order: the last axis fastest
    for (size_t d = index.size(); d-- > 0; first /= tensor.shape()[d])
      index[d] = first % tensor.shape()[d];
    std::fprintf(stderr,
                 "miras: warning: output '%s%s' has %lld non-finite value%s, the first %s at "
                 "%s\n",
                 prefix.c_str(), name.c_str(), (long long)count, count == 1 ? "" : "s",
                 std::isnan(firstValue) ? "nan" : firstValue > 0 ? "inf" : "-inf",
                 formatShape(index).c_str());
  }
}

/// The outputs of `miras run` and `miras grad`, <prefix><name>.npy in `dir`: a warning
/// for each that is not finite, then all written as a unit (writeNpyFiles: a failure
/// leaves the directory as it was).
inline void writeOutputs(const TensorMap &outputs, const std::string &dir,
                         const std::string &prefix = "") {
  warnNonFinite(outputs, prefix);
  std::vector<std::pair<std::string, const Tensor *>> files;
  for (const auto &[name, tensor] : outputs)
    files.emplace_back(prefix + name + ".npy", &tensor);
  writeNpyFiles(dir, files);
}

extern const char kInfoHelp[];
int runInfo(const Args &args);

extern const char kRunHelp[];
int runRun(const Args &args);

extern const char kGradHelp[];
int runGrad(const Args &args);

extern const char kBenchHelp[];
int runBench(const Args &args);

} // namespace miras::cli

#endif // MIRAS_TOOLS_COMMANDS_HPP
