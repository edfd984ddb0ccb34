//===- Frontend.cpp - loadModule: parse + check, never throwing ------------===//
#include "FrontendImpl.h"

#include <algorithm>
#include <new>

using namespace miras;
using namespace miras::frontend;
using namespace miras::frontend::detail;

namespace {

/// Orders errors by position, each keeping the notes that follow it, so the
/// output reads top to bottom whatever phase found them.
std::vector<Diagnostic> sortByLocation(std::vector<Diagnostic> diags) {
  std::vector<std::vector<Diagnostic>> groups;
  for (Diagnostic &d : diags) {
    if (d.severity == Diagnostic::Severity::Note && !groups.empty())
      groups.back().push_back(std::move(d));
    else
      groups.push_back({std::move(d)});
  }
  std::stable_sort(groups.begin(), groups.end(), [](const auto &a, const auto &b) {
    const ast::SourceLoc &x = a.front().loc, &y = b.front().loc;
    return std::make_pair(x.line, x.col) < std::make_pair(y.line, y.col);
  });
  std::vector<Diagnostic> out;
  for (auto &g : groups)
    for (Diagnostic &d : g)
      out.push_back(std::move(d));
  return out;
}

} // namespace

LoadResult frontend::loadModule(const std::string &path,
                                const std::string &source,
                                const std::map<std::string, std::string> &defines,
                                std::optional<int64_t> chunk) {
  LoadResult result;
  Diags diags;
  std::optional<Diagnostic> trailer;
  try {
    if (auto module = parseModule(path, source, diags)) {
      result.syntax = std::move(*module);
      auto resolved = resolveModule(*result.syntax, defines, chunk, diags);
      if (resolved && diags.errors == 0)
        result.resolved = std::move(*resolved);
    }
  } catch (const TooManyErrors &) {
    trailer = Diagnostic{Diagnostic::Severity::Note, {path, 0, 0},
                         "too many errors, stopping"};
  } catch (const std::bad_alloc &) {
    trailer = Diagnostic{Diagnostic::Severity::Error, {path, 0, 0},
                         "out of memory while reading this file"};
  } catch (const std::exception &e) {
    trailer = Diagnostic{Diagnostic::Severity::Error, {path, 0, 0},
                         std::string("internal error in the frontend: ") + e.what()};
  } catch (...) {
    trailer = Diagnostic{Diagnostic::Severity::Error, {path, 0, 0},
                         "internal error in the frontend"};
  }
  if (trailer)
    result.resolved.reset();
  try {
    result.diagnostics = sortByLocation(std::move(diags.list));
    if (trailer)
      result.diagnostics.push_back(*trailer);
  } catch (...) {
    result.resolved.reset(); // out of memory while sorting: stay non-ok
  }
  return result;
}
