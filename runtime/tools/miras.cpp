// miras.cpp: entry point of the `miras` tool (inspect and run compiled modules).
// Dispatch and error reporting only; each subcommand lives in its own file.
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "commands.hpp"

namespace {

using namespace miras::cli;

const char kHelp[] =
    "usage: miras <command> [options]\n"
    "\n"
    "Inspect and run modules compiled by mirasc (lib<name>.so).\n"
    "\n"
    "commands:\n"
    "  info   print a module's metadata as JSON\n"
    "  run    run a module on .npy tensors from a directory (cpu or cuda)\n"
    "  grad   the backward pass of a module built with mirasc --backward, on .npy tensors\n"
    "  bench  time a module on random inputs: on the cpu against the machine's peak, a\n"
    "         scalar reference and a hand-fused baseline; on cuda against the GPU's\n"
    "         copy bandwidth\n"
    "\n"
    "Run 'miras <command> --help' for the options of a command.\n";

struct Command {
  const char *name;
  const char *help;
  int (*run)(const Args &);
};

// New subcommands are added here.
const Command kCommands[] = {
    {"info", kInfoHelp, runInfo},
    {"run", kRunHelp, runRun},
    {"grad", kGradHelp, runGrad},
    {"bench", kBenchHelp, runBench},
};

bool isHelp(const std::string &arg) { return arg == "--help" || arg == "-h"; }

int dispatch(const Args &args) {
  if (args.empty())
    throw UsageError("no command given (run 'miras --help')");
  if (isHelp(args[0]) || args[0] == "help") {
    std::fputs(kHelp, stdout);
    return 0;
  }
  for (const Command &cmd : kCommands) {
    if (args[0] != cmd.name)
      continue;
    Args rest(args.begin() + 1, args.end());
    for (const std::string &arg : rest) {
      if (isHelp(arg)) {
        std::fputs(cmd.help, stdout);
        return 0;
      }
    }
    return cmd.run(rest);
  }
  throw UsageError("unknown command '" + args[0] + "' (run 'miras --help')");
}

} // namespace

int main(int argc, char **argv) {
  try {
    return dispatch(Args(argv + 1, argv + argc));
  } catch (const UsageError &e) {
    std::fprintf(stderr, "miras: error: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "miras: error: out of memory\n");
    return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "miras: error: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "miras: error: unexpected failure\n");
    return 1;
  }
}
