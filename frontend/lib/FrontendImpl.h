//===- FrontendImpl.h - Internals shared by the frontend's sources -*- C++ -*-===//
//
// Private to miras_frontend (compiled with exceptions and RTTI).
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_FRONTEND_LIB_FRONTENDIMPL_H
#define MIRAS_FRONTEND_LIB_FRONTENDIMPL_H

#include "miras/Frontend/Frontend.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace miras::frontend::detail {

/// Thrown by Diags once the error cap is hit: garbage input must end quickly
/// instead of producing one error per byte. Caught in loadModule.
struct TooManyErrors {};

/// Collects diagnostics; every phase reports here and keeps going.
struct Diags {
  static constexpr int kMaxErrors = 30;
  std::vector<Diagnostic> list;
  int errors = 0;

  void error(const ast::SourceLoc &loc, std::string msg) {
    if (errors == kMaxErrors)
      throw TooManyErrors{};
    ++errors;
    list.push_back({Diagnostic::Severity::Error, loc, std::move(msg)});
  }
  void note(const ast::SourceLoc &loc, std::string msg) {
    list.push_back({Diagnostic::Severity::Note, loc, std::move(msg)});
  }
};

/// Parses a whole file into the syntax tree; nullopt after a syntax error.
std::optional<ast::Module> parseModule(const std::string &path,
                                       const std::string &source, Diags &diags);

/// Parses one expression with the same grammar (built-in bias definitions).
/// Every node gets `file` and the 1-based column inside `text`.
ast::ExprPtr parseExpression(const std::string &file, const std::string &text,
                             Diags &diags);

/// Semantic analysis. Returns a module only if it found no error.
std::optional<ast::ResolvedModule>
resolveModule(const ast::Module &module,
              const std::map<std::string, std::string> &defines,
              std::optional<int64_t> chunk, Diags &diags);

/// Parses a number as the lexer spells it (`64`, `-0.5`, `1e-6`), with an
/// optional leading '-'. Returns false on anything else or an infinite value.
bool parseNumber(const std::string &text, double &value, bool &isInteger);

/// Shortest round-trip spelling of a double (`64`, `0.96875`, `1e-06`).
std::string formatNumber(double value);

} // namespace miras::frontend::detail

#endif // MIRAS_FRONTEND_LIB_FRONTENDIMPL_H
