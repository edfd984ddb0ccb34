//===- Print.cpp - Diagnostics printer, expression printer, AST dump -------===//
#include "FrontendImpl.h"

#include <cmath>
#include <sstream>

using namespace miras;
using namespace miras::frontend;
using namespace miras::frontend::detail;
using ast::Expr;

namespace {

/// Binding strength, loosest first: comparisons < <= > >= (0), + - (1),
/// * / (2), unary - (3), ^ (4), atoms (5). A negative number prints like a
/// unary minus.
bool isComparison(const std::string &op) {
  return op == "<" || op == "<=" || op == ">" || op == ">=";
}

int precedence(const Expr &e) {
  switch (e.kind) {
  case Expr::Kind::Number:
    return e.number < 0 || std::signbit(e.number) ? 3 : 5;
  case Expr::Kind::Name:
  case Expr::Kind::Call:
    return 5;
  case Expr::Kind::Unary:
    return 3;
  case Expr::Kind::Binary:
    if (isComparison(e.op))
      return 0;
    return e.op == "^" ? 4 : (e.op == "*" || e.op == "/") ? 2 : 1;
  }
  return 5;
}

std::string wrapIf(bool cond, const std::string &s) {
  return cond ? "(" + s + ")" : s;
}

std::string locSuffix(const ast::SourceLoc &loc) {
  return " <" + std::to_string(loc.line) + ":" + std::to_string(loc.col) + ">";
}

std::string printComponent(const ast::Component &c) {
  std::string out = c.name;
  if (c.args.empty())
    return out;
  out += "(";
  for (size_t i = 0; i < c.args.size(); ++i) {
    if (i)
      out += ", ";
    if (!c.args[i].name.empty())
      out += c.args[i].name + " = ";
    out += c.args[i].value ? printExpr(*c.args[i].value) : "?";
  }
  return out + ")";
}

} // namespace

/// Minimal parentheses: the output re-parses to the same tree.
std::string frontend::printExpr(const Expr &e) {
  switch (e.kind) {
  case Expr::Kind::Number:
    return formatNumber(e.number);
  case Expr::Kind::Name:
    return e.name;
  case Expr::Kind::Call: {
    std::string out = e.name + "(";
    for (size_t i = 0; i < e.operands.size(); ++i)
      out += (i ? ", " : "") + (e.operands[i] ? printExpr(*e.operands[i]) : "?");
    return out + ")";
  }
  case Expr::Kind::Unary: {
    if (e.operands.empty() || !e.operands[0])
      return "-?";
    const Expr &x = *e.operands[0];
    return "-" + wrapIf(precedence(x) < 3, printExpr(x));
  }
  case Expr::Kind::Binary: {
    if (e.operands.size() != 2 || !e.operands[0] || !e.operands[1])
      return "?";
    const Expr &l = *e.operands[0], &r = *e.operands[1];
    int p = precedence(e);
    bool power = e.op == "^";
    // `^` is right-associative and takes a unary exponent (`2 ^ -1`);
    // comparisons do not associate at all.
    bool wrapL = power ? precedence(l) <= 4
                 : p == 0 ? precedence(l) <= 0
                          : precedence(l) < p;
    bool wrapR = power ? precedence(r) < 3 : precedence(r) <= p;
    return wrapIf(wrapL, printExpr(l)) + " " + e.op + " " +
           wrapIf(wrapR, printExpr(r));
  }
  }
  return "?";
}

std::string frontend::dumpAST(const ast::Module &m) {
  std::ostringstream os;
  os << "module " << m.name << " <" << m.loc.file << ":" << m.loc.line << ":"
     << m.loc.col << ">\n";
  for (const ast::ParamDecl &p : m.params)
    os << "  param " << p.name << " = "
       << (p.value ? printExpr(*p.value) : "?") << locSuffix(p.loc) << "\n";
  for (const ast::GateDecl &g : m.gates) {
    os << "  gate " << g.name << " : "
       << (g.channel ? "channel(" + g.axis + ")" : "scalar");
    if (g.range)
      os << " in " << (g.range->loClosed ? "[" : "(")
         << (g.range->lo ? printExpr(*g.range->lo) : "?") << ", "
         << (g.range->hi ? printExpr(*g.range->hi) : "?")
         << (g.range->hiClosed ? "]" : ")");
    os << locSuffix(g.loc) << "\n";
  }
  if (m.memory)
    os << "  memory " << printComponent(*m.memory) << locSuffix(m.memory->loc)
       << "\n";
  if (m.bias) {
    const ast::BiasDecl &b = *m.bias;
    if (b.isExpression)
      os << "  bias(" << b.predictionName << ", " << b.targetName
         << ") = " << (b.expr ? printExpr(*b.expr) : "?");
    else
      os << "  bias " << printComponent(b.builtin);
    os << locSuffix(b.loc) << "\n";
  }
  if (m.retention)
    os << "  retention " << printComponent(*m.retention)
       << locSuffix(m.retention->loc) << "\n";
  if (m.optimizer)
    os << "  optimizer " << printComponent(*m.optimizer)
       << locSuffix(m.optimizer->loc) << "\n";
  if (m.read)
    os << "  read " << *m.read << locSuffix(m.readLoc) << "\n";
  if (m.chunk)
    os << "  chunk " << printExpr(*m.chunk) << locSuffix(m.chunkLoc) << "\n";
  for (const ast::InitDecl &init : m.inits)
    os << "  init " << init.state << " = " << printComponent(init.value)
       << locSuffix(init.loc) << "\n";
  return os.str();
}

void frontend::printDiagnostics(std::ostream &os,
                                const std::vector<Diagnostic> &diags,
                                const std::string &source) {
  // Split once; diagnostics index lines directly.
  std::vector<std::string> lines;
  std::string cur;
  for (char c : source) {
    if (c == '\n') {
      lines.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  lines.push_back(cur);

  for (const Diagnostic &d : diags) {
    const char *sev = d.severity == Diagnostic::Severity::Error     ? "error"
                      : d.severity == Diagnostic::Severity::Warning ? "warning"
                                                                    : "note";
    os << (d.loc.file.empty() ? "<input>" : d.loc.file);
    if (d.loc.line > 0)
      os << ":" << d.loc.line << ":" << d.loc.col;
    os << ": " << sev << ": " << d.message << "\n";
    // Built-in definitions ("<builtin lp>") have no source text here.
    bool builtin = !d.loc.file.empty() && d.loc.file[0] == '<';
    if (builtin || d.loc.line < 1 || d.loc.line > static_cast<int>(lines.size()))
      continue;
    std::string line = lines[d.loc.line - 1];
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    std::string caret;
    for (size_t i = 0; i < line.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(line[i]);
      if (c < 0x20 && c != '\t')
        line[i] = '?'; // keep control bytes of garbage input off the terminal
      if (static_cast<int>(i) + 1 < d.loc.col)
        caret += c == '\t' ? '\t' : ' '; // tabs keep the caret aligned
    }
    while (static_cast<int>(caret.size()) + 1 < d.loc.col)
      caret += ' ';
    os << line << "\n" << caret << "^\n";
  }
}

std::string ast::GateRange::str() const {
  auto end = [](double x) {
    return std::isinf(x) ? std::string(x < 0 ? "-inf" : "inf") : formatNumber(x);
  };
  return (loClosed ? "[" : "(") + end(lo) + ", " + end(hi) + (hiClosed ? "]" : ")");
}
