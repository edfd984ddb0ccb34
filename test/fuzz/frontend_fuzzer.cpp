// frontend_fuzzer.cpp: libFuzzer target for the front end (parse, check, diagnostics).
//
// Every input must come back as a result, never a crash, a hang or a sanitizer report,
// and these must hold (a violation aborts, which libFuzzer reports with the input):
//   - a file that does not check has at least one error, and one that does has none;
//   - every error in the file itself is located: line >= 1 and col >= 1, a line that
//     exists in the source;
//   - printing the diagnostics (with the caret) and dumping the syntax tree work.
// Built by `make fuzz-smoke` (clang-22, ASan + UBSan, -DMIRAS_FUZZ=ON), which runs it
// for 60 s on the seed corpus of examples/ and the lit inputs.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "miras/Frontend/Frontend.h"

using namespace miras::frontend;

namespace {

constexpr const char *kPath = "fuzz.miras";

[[noreturn]] void violated(const char *what, const Diagnostic *d) {
  std::fprintf(stderr, "frontend_fuzzer: invariant violated: %s", what);
  if (d)
    std::fprintf(stderr, " (%s:%d:%d: %s)", d->loc.file.c_str(), d->loc.line, d->loc.col,
                 d->message.c_str());
  std::fprintf(stderr, "\n");
  std::abort();
}

int countLines(const std::string &source) {
  int lines = 1;
  for (char c : source)
    lines += c == '\n';
  return lines;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string source(reinterpret_cast<const char *>(data), size);
  LoadResult result = loadModule(kPath, source);
  int errors = 0;
  const int lines = countLines(source);
  for (const Diagnostic &d : result.diagnostics) {
    if (d.severity != Diagnostic::Severity::Error)
      continue;
    ++errors;
    if (d.loc.file != kPath)
      continue; // in a built-in definition
    if (d.loc.line < 1 || d.loc.col < 1 || d.loc.line > lines)
      violated("an error in the file without a valid location", &d);
    if (d.message.empty())
      violated("an empty error message", &d);
  }
  if (result.ok() != (errors == 0))
    violated(result.ok() ? "a module that checked carries errors"
                         : "a module that failed to check has no error",
             nullptr);
  std::ostringstream printed;
  printDiagnostics(printed, result.diagnostics, source);
  if (result.syntax)
    (void)dumpAST(*result.syntax);
  return 0;
}
