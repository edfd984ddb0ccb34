// commands.hpp: subcommands of the `miras` tool. Each takes the arguments after its
// name, writes its result to stdout and returns the exit status; failures are thrown
// (UsageError for bad command lines, miras::Error or std::exception otherwise) and
// reported by main in one line.
#ifndef MIRAS_TOOLS_COMMANDS_HPP
#define MIRAS_TOOLS_COMMANDS_HPP

#include <stdexcept>
#include <string>
#include <vector>

namespace miras::cli {

// A malformed command line (exit status 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using Args = std::vector<std::string>;

extern const char kInfoHelp[];
int runInfo(const Args &args);

extern const char kRunHelp[];
int runRun(const Args &args);

extern const char kBenchHelp[];
int runBench(const Args &args);

} // namespace miras::cli

#endif // MIRAS_TOOLS_COMMANDS_HPP
