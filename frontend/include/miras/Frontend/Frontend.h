//===- Frontend.h - Parse and check .miras files ----------------*- C++ -*-===//
//
// Entry points of the frontend library (miras_frontend). Plain C++: no ANTLR,
// no LLVM/MLIR types cross this boundary, and no exception escapes it.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_FRONTEND_FRONTEND_H
#define MIRAS_FRONTEND_FRONTEND_H

#include "miras/Frontend/AST.h"

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace miras::frontend {

/// One located message. Errors make the load fail; notes add context to the
/// error before them.
struct Diagnostic {
  enum class Severity { Error, Warning, Note };
  Severity severity = Severity::Error;
  ast::SourceLoc loc;
  std::string message;
};

/// Prints `file:line:col: error: message`, then the source line and a caret
/// under the column, for each diagnostic. `source` is the text of `loc.file`
/// (diagnostics in built-in definitions print without a source line).
void printDiagnostics(std::ostream &os, const std::vector<Diagnostic> &diags,
                      const std::string &source);

/// Result of parsing and checking one file.
struct LoadResult {
  std::optional<ast::Module> syntax;           // set when the file parsed
  std::optional<ast::ResolvedModule> resolved; // set when it also checked
  std::vector<Diagnostic> diagnostics;         // all errors found (several per run)
  bool ok() const { return resolved.has_value(); }
};

/// Parses `source` (the contents of `path`) and runs semantic analysis.
/// `defines` are command-line overrides `-DNAME=VALUE` (VALUE as written); an
/// override of an undeclared param or an unparsable value is a diagnostic.
/// `chunk` replaces the module's chunk size (mirasc --chunk) before the rules
/// that depend on it are checked.
LoadResult loadModule(const std::string &path, const std::string &source,
                      const std::map<std::string, std::string> &defines = {},
                      std::optional<int64_t> chunk = std::nullopt);

/// Human-readable dump of the syntax tree (`mirasc --emit=ast`).
std::string dumpAST(const ast::Module &module);

/// Renders an expression in DSL syntax (used by the dump and by rule printing).
std::string printExpr(const ast::Expr &expr);

} // namespace miras::frontend

#endif // MIRAS_FRONTEND_FRONTEND_H
