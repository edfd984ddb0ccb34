//===- Parser.cpp - ANTLR parse of .miras files into the syntax tree -------===//
//
// Runs the generated lexer/parser with our own error reporting (readable
// messages, 1-based columns, all into Diags), guards the recursive-descent
// parser against deep nesting, and converts the parse tree to ast::Module.
//
//===----------------------------------------------------------------------===//
#include "FrontendImpl.h"

#include "MirasLexer.h"
#include "MirasParser.h"
#include "antlr4-runtime.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <set>

using namespace miras;
using namespace miras::frontend;
using namespace miras::frontend::detail;
using miras_antlr::MirasLexer;
using miras_antlr::MirasParser;

namespace {

/// Parser recursion grows with parentheses, unary minus and `^`; beyond this
/// we report an error rather than risk the stack (an 8 MiB stack holds ~10x).
constexpr int kMaxNesting = 200;

ast::SourceLoc locOf(const std::string &file, const antlr4::Token *tok) {
  if (!tok)
    return {file, 0, 0};
  return {file, static_cast<int>(tok->getLine()),
          static_cast<int>(tok->getCharPositionInLine()) + 1};
}

std::string quoteToken(const antlr4::Token *tok) {
  if (!tok || tok->getType() == antlr4::Token::EOF)
    return "end of file";
  std::string text = tok->getText();
  if (text.size() > 24)
    text = text.substr(0, 21) + "...";
  return "'" + text + "'";
}

/// "';'", "';' or ','", "identifier, number or '('": readable expected sets.
std::string describeExpected(const antlr4::misc::IntervalSet &set,
                             const antlr4::dfa::Vocabulary &vocab) {
  std::vector<ssize_t> types = set.toList();
  auto has = [&](ssize_t t) {
    return std::find(types.begin(), types.end(), t) != types.end();
  };
  auto hasLiteral = [&](const char *lit) {
    return std::any_of(types.begin(), types.end(), [&](ssize_t t) {
      return t > 0 && vocab.getLiteralName(t) == lit;
    });
  };
  std::vector<std::string> parts;
  // Collapse the big sets into what a user thinks of.
  bool item = hasLiteral("'param'"); // only ever expected with all items
  bool expr = has(MirasParser::NUMBER) && has(MirasParser::ID) &&
              hasLiteral("'-'");
  if (item)
    parts.push_back("a module item (param, gate, memory, bias, retention, "
                    "optimizer, read, chunk, init)");
  if (expr)
    parts.push_back("an expression");
  for (ssize_t t : types) {
    std::string lit = t > 0 ? vocab.getLiteralName(t) : "";
    if (item && (lit == "'param'" || lit == "'gate'" || lit == "'memory'" ||
                 lit == "'bias'" || lit == "'retention'" ||
                 lit == "'optimizer'" || lit == "'read'" || lit == "'chunk'" ||
                 lit == "'init'"))
      continue;
    if (expr && (t == MirasParser::NUMBER || t == MirasParser::ID ||
                 lit == "'-'" || lit == "'('"))
      continue;
    if (t == static_cast<ssize_t>(antlr4::Token::EOF))
      parts.push_back("end of file");
    else if (t == MirasParser::ID)
      parts.push_back("identifier");
    else if (t == MirasParser::NUMBER)
      parts.push_back("number");
    else if (!lit.empty())
      parts.push_back(lit);
  }
  if (parts.empty())
    return "something else";
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i)
    out += (i + 1 == parts.size() ? " or " : ", ") + parts[i];
  return out;
}

/// Reports straight into Diags with reworded messages. A missing token is
/// located just after the previous token (where the user forgot it), not at the
/// next token, which is often on the following line.
class ErrorStrategy : public antlr4::DefaultErrorStrategy {
public:
  ErrorStrategy(Diags &diags, std::string file)
      : diags(diags), file(std::move(file)) {}

protected:
  void reportNoViableAlternative(antlr4::Parser *p,
                                 const antlr4::NoViableAltException &e) override {
    diags.error(locOf(file, e.getOffendingToken()),
                "unexpected " + quoteToken(e.getOffendingToken()));
    (void)p;
  }
  void reportInputMismatch(antlr4::Parser *p,
                           const antlr4::InputMismatchException &e) override {
    antlr4::Token *found = e.getOffendingToken();
    antlr4::Token *prev = p->getTokenStream()->LT(-1);
    // A statement that stops at the end of its line almost always lacks ';'.
    if (found && prev && found->getLine() > prev->getLine() &&
        e.getExpectedTokens().contains(semicolon(p))) {
      ast::SourceLoc loc = locOf(file, prev);
      loc.col += static_cast<int>(prev->getText().size());
      diags.error(loc, "expected ';' after " + quoteToken(prev));
      return;
    }
    diags.error(locOf(file, found),
                "expected " +
                    describeExpected(e.getExpectedTokens(), p->getVocabulary()) +
                    ", found " + quoteToken(found));
  }
  /// Between module items a statement has been recovered: report errors
  /// again, and skip junk items instead of giving up on the whole module
  /// (ANTLR throws out of the rule when the first item is bad).
  void sync(antlr4::Parser *p) override {
    if (p->getContext()->getRuleIndex() != MirasParser::RuleModuleDecl)
      return DefaultErrorStrategy::sync(p);
    if (inErrorRecoveryMode(p))
      endErrorCondition(p);
    antlr4::atn::ATNState *state = p->getATN().states[p->getState()];
    size_t type = state->getStateType();
    if (type != antlr4::atn::ATNState::STAR_LOOP_ENTRY &&
        type != antlr4::atn::ATNState::STAR_LOOP_BACK)
      return DefaultErrorStrategy::sync(p);
    size_t la = p->getTokenStream()->LA(1);
    antlr4::misc::IntervalSet next = p->getATN().nextTokens(state);
    if (next.contains(la) || next.contains(antlr4::Token::EPSILON))
      return;
    reportUnwantedToken(p);
    consumeUntil(p, p->getExpectedTokens().Or(getErrorRecoverySet(p)));
  }

  /// Like ANTLR's recovery, but a broken statement ends at its ';' too:
  /// ANTLR alone skips to the next item keyword and swallows what lies
  /// between (`bias = 3; foo;` would hide the second error).
  void recover(antlr4::Parser *p, std::exception_ptr) override {
    antlr4::TokenStream *in = p->getTokenStream();
    if (in->index() != lastIndex) {
      lastIndex = in->index();
      lastStates.clear();
    } else if (!lastStates.insert(p->getState()).second) {
      p->consume(); // no progress since the last error here: force some
    }
    lastStates.insert(p->getState());
    antlr4::misc::IntervalSet stop = getErrorRecoverySet(p);
    ssize_t semi = semicolon(p);
    stop.add(semi);
    consumeUntil(p, stop);
    if (static_cast<ssize_t>(in->LA(1)) == semi)
      p->consume();
  }
  void reportFailedPredicate(antlr4::Parser *,
                             const antlr4::FailedPredicateException &e) override {
    diags.error(locOf(file, e.getOffendingToken()), "syntax error");
  }
  void reportUnwantedToken(antlr4::Parser *p) override {
    if (inErrorRecoveryMode(p))
      return;
    beginErrorCondition(p);
    antlr4::Token *t = p->getCurrentToken();
    diags.error(locOf(file, t),
                "unexpected " + quoteToken(t) + " (expected " +
                    describeExpected(getExpectedTokens(p), p->getVocabulary()) +
                    ")");
  }
  void reportMissingToken(antlr4::Parser *p) override {
    if (inErrorRecoveryMode(p))
      return;
    beginErrorCondition(p);
    antlr4::Token *cur = p->getCurrentToken();
    antlr4::Token *prev = p->getTokenStream()->LT(-1);
    ast::SourceLoc loc = locOf(file, cur);
    if (prev) {
      loc = locOf(file, prev);
      loc.col += static_cast<int>(prev->getText().size());
    }
    diags.error(loc, "expected " +
                         describeExpected(getExpectedTokens(p),
                                          p->getVocabulary()) +
                         (cur && cur->getType() != antlr4::Token::EOF
                              ? " before " + quoteToken(cur)
                              : std::string()));
  }

private:
  static ssize_t semicolon(antlr4::Parser *p) {
    const antlr4::dfa::Vocabulary &vocab = p->getVocabulary();
    for (size_t t = 1; t <= vocab.getMaxTokenType(); ++t)
      if (vocab.getLiteralName(t) == "';'")
        return static_cast<ssize_t>(t);
    return 0;
  }

  Diags &diags;
  std::string file;
  size_t lastIndex = static_cast<size_t>(-1);
  std::set<size_t> lastStates;
};

/// Lexer errors: one "unexpected character" per bad character (the lexer's own
/// message quotes the whole failed prefix, which is noise).
class LexerListener : public antlr4::BaseErrorListener {
public:
  LexerListener(Diags &diags, std::string file, const std::string &original,
                std::vector<size_t> lineStarts)
      : diags(diags), file(std::move(file)), original(original),
        lineStarts(std::move(lineStarts)) {}

  void syntaxError(antlr4::Recognizer *, antlr4::Token *, size_t line,
                   size_t col, const std::string &,
                   std::exception_ptr) override {
    size_t off = std::string::npos;
    if (line >= 1 && line <= lineStarts.size())
      off = lineStarts[line - 1] + col;
    unsigned char c = off < original.size() ? original[off] : 0;
    // A multi-byte UTF-8 character fails once per byte; report it once.
    if (c >= 0x80 && off > 0 && (c & 0xC0) == 0x80 &&
        static_cast<unsigned char>(original[off - 1]) >= 0x80)
      return;
    std::string what;
    if (c >= 0x80)
      what = "non-ASCII character";
    else if (c >= 0x20 && c < 0x7f)
      what = std::string("character '") + static_cast<char>(c) + "'";
    else {
      char buf[32];
      std::snprintf(buf, sizeof buf, "character '\\x%02x'", c);
      what = buf;
    }
    diags.error({file, static_cast<int>(line), static_cast<int>(col) + 1},
                "unexpected " + what);
  }

private:
  Diags &diags;
  std::string file;
  const std::string &original;
  std::vector<size_t> lineStarts;
};

/// Converts the (error-free) parse tree into the syntax tree.
class Builder {
public:
  Builder(Diags &diags, std::string file) : diags(diags), file(std::move(file)) {}

  ast::Module buildModule(MirasParser::ModuleDeclContext *ctx) {
    ast::Module m;
    m.name = ctx->ID()->getText();
    m.loc = loc(ctx->ID()->getSymbol());
    for (auto *item : ctx->item())
      addItem(m, item);
    return m;
  }

  /// Comparisons do not associate: `a < b < c` is reported at the second
  /// operator and only `a < b` is kept (no follow-up errors from Sema).
  ast::ExprPtr buildExpr(MirasParser::ExprContext *ctx) {
    std::vector<antlr4::tree::ParseTree *> kids = ctx->children;
    if (kids.size() > 3) {
      auto *second =
          static_cast<antlr4::tree::TerminalNode *>(kids[3])->getSymbol();
      diags.error(loc(second),
                  "comparisons cannot be chained: write a single comparison "
                  "such as 'a <= b'");
      kids.resize(3);
    }
    return buildChain(kids, [&](antlr4::tree::ParseTree *t) {
      return buildSum(static_cast<MirasParser::SumContext *>(t));
    });
  }

private:
  ast::SourceLoc loc(const antlr4::Token *tok) const { return locOf(file, tok); }

  /// Reports a second `memory`/`bias`/... and keeps the first.
  template <typename T>
  bool setOnce(std::optional<T> &slot, const ast::SourceLoc &first,
               const ast::SourceLoc &here, const char *what) {
    if (!slot)
      return true;
    diags.error(here, std::string("duplicate ") + what + " declaration");
    diags.note(first, std::string("first ") + what + " declaration is here");
    return false;
  }

  void addItem(ast::Module &m, MirasParser::ItemContext *item) {
    if (auto *p = item->paramDecl()) {
      m.params.push_back({p->ID()->getText(), buildExpr(p->expr()),
                          loc(p->ID()->getSymbol())});
    } else if (auto *g = item->gateDecl()) {
      ast::GateDecl gate;
      gate.name = g->ID(0)->getText();
      gate.loc = loc(g->ID(0)->getSymbol());
      std::string kind = g->kind->getText();
      if (kind == "channel") {
        gate.channel = true;
        if (g->axis) {
          gate.axis = g->axis->getText();
          gate.axisLoc = loc(g->axis);
        } else {
          diags.error(loc(g->kind), "channel gate needs an axis: "
                                    "'channel(dk)' or 'channel(dv)'");
        }
      } else if (kind == "scalar") {
        if (g->axis)
          diags.error(loc(g->axis), "a scalar gate takes no axis");
      } else {
        diags.error(loc(g->kind), "unknown gate kind '" + kind +
                                      "': expected 'scalar' or "
                                      "'channel(dk)' / 'channel(dv)'");
      }
      if (g->inWord) {
        if (g->inWord->getText() != "in")
          diags.error(loc(g->inWord), "expected 'in' before the range of gate '" +
                                          gate.name + "', found '" +
                                          g->inWord->getText() + "'");
        MirasParser::GateRangeContext *rc = g->gateRange();
        ast::GateRangeDecl range;
        range.loClosed = rc->open->getText() == "[";
        range.hiClosed = rc->close->getText() == "]";
        range.lo = buildExpr(rc->lo);
        range.hi = buildExpr(rc->hi);
        range.loc = loc(rc->open);
        range.closeLoc = loc(rc->close);
        gate.range = range;
      }
      m.gates.push_back(gate);
    } else if (auto *d = item->memoryDecl()) {
      ast::Component c = buildComponent(d->component());
      if (setOnce(m.memory, m.memory ? m.memory->loc : c.loc, c.loc, "memory"))
        m.memory = c;
    } else if (auto *d = item->retentionDecl()) {
      ast::Component c = buildComponent(d->component());
      if (setOnce(m.retention, m.retention ? m.retention->loc : c.loc, c.loc,
                  "retention"))
        m.retention = c;
    } else if (auto *d = item->optimizerDecl()) {
      ast::Component c = buildComponent(d->component());
      if (setOnce(m.optimizer, m.optimizer ? m.optimizer->loc : c.loc, c.loc,
                  "optimizer"))
        m.optimizer = c;
    } else if (auto *d = item->biasDecl()) {
      ast::BiasDecl b;
      b.loc = loc(d->getStart());
      if (d->component()) {
        b.builtin = buildComponent(d->component());
      } else {
        b.isExpression = true;
        b.predictionName = d->pred->getText();
        b.targetName = d->target->getText();
        b.expr = buildExpr(d->expr());
      }
      if (setOnce(m.bias, m.bias ? m.bias->loc : b.loc, b.loc, "bias"))
        m.bias = b;
    } else if (auto *d = item->readDecl()) {
      ast::SourceLoc here = loc(d->ID()->getSymbol());
      if (setOnce(m.read, m.readLoc, here, "read")) {
        m.read = d->ID()->getText();
        m.readLoc = here;
      }
    } else if (auto *d = item->initDecl()) {
      // Duplicates are Sema's: it reports them with the first one's place.
      m.inits.push_back({d->state->getText(), buildComponent(d->component()),
                         loc(d->state)});
    } else if (auto *d = item->chunkDecl()) {
      ast::SourceLoc here = loc(d->getStart());
      if (m.chunk) {
        diags.error(here, "duplicate chunk declaration");
        diags.note(m.chunkLoc, "first chunk declaration is here");
      } else {
        m.chunk = buildExpr(d->expr());
        m.chunkLoc = here;
      }
    }
  }

  ast::Component buildComponent(MirasParser::ComponentContext *ctx) {
    ast::Component c;
    c.name = ctx->ID()->getText();
    c.loc = loc(ctx->ID()->getSymbol());
    for (auto *a : ctx->arg()) {
      ast::Arg arg;
      if (a->fn) {
        arg.name = a->fn->getText();
        arg.boundName = a->bound->getText();
      } else if (a->name) {
        arg.name = a->name->getText();
      }
      arg.value = buildExpr(a->value);
      arg.loc = loc(a->getStart());
      c.args.push_back(std::move(arg));
    }
    return c;
  }

  /// `x (op x)*` as a left-associative chain; children alternate operand and
  /// operator token.
  template <typename F>
  ast::ExprPtr buildChain(const std::vector<antlr4::tree::ParseTree *> &kids,
                          F operand) {
    ast::ExprPtr lhs = operand(kids.at(0));
    for (size_t i = 1; i + 1 < kids.size(); i += 2) {
      auto *opTok = static_cast<antlr4::tree::TerminalNode *>(kids[i])->getSymbol();
      auto e = std::make_shared<ast::Expr>();
      e->kind = ast::Expr::Kind::Binary;
      e->op = opTok->getText();
      e->loc = loc(opTok);
      e->operands = {lhs, operand(kids[i + 1])};
      lhs = e;
    }
    return lhs;
  }

  ast::ExprPtr buildSum(MirasParser::SumContext *ctx) {
    return buildChain(ctx->children, [&](antlr4::tree::ParseTree *t) {
      return buildTerm(static_cast<MirasParser::TermContext *>(t));
    });
  }

  ast::ExprPtr buildTerm(MirasParser::TermContext *ctx) {
    return buildChain(ctx->children, [&](antlr4::tree::ParseTree *t) {
      return buildUnary(static_cast<MirasParser::UnaryContext *>(t));
    });
  }

  ast::ExprPtr buildUnary(MirasParser::UnaryContext *ctx) {
    if (ctx->power())
      return buildPower(ctx->power());
    auto e = std::make_shared<ast::Expr>();
    e->kind = ast::Expr::Kind::Unary;
    e->op = "-";
    e->loc = loc(ctx->getStart());
    e->operands = {buildUnary(ctx->unary())};
    return e;
  }

  ast::ExprPtr buildPower(MirasParser::PowerContext *ctx) {
    ast::ExprPtr base = buildAtom(ctx->atom());
    if (!ctx->unary())
      return base;
    auto e = std::make_shared<ast::Expr>();
    e->kind = ast::Expr::Kind::Binary;
    e->op = "^";
    e->loc = loc(static_cast<antlr4::tree::TerminalNode *>(ctx->children.at(1))
                     ->getSymbol());
    e->operands = {base, buildUnary(ctx->unary())};
    return e;
  }

  ast::ExprPtr buildAtom(MirasParser::AtomContext *ctx) {
    if (ctx->ID() == nullptr && ctx->NUMBER() == nullptr)
      return buildExpr(ctx->expr(0)); // parenthesised
    auto e = std::make_shared<ast::Expr>();
    if (auto *num = ctx->NUMBER()) {
      e->kind = ast::Expr::Kind::Number;
      e->loc = loc(num->getSymbol());
      std::string text = num->getText();
      if (!parseNumber(text, e->number, e->isInteger)) {
        diags.error(e->loc, "number '" + text + "' is out of range");
        e->number = 1; // placeholder that passes later checks: no cascade
        e->isInteger = true;
      }
      return e;
    }
    e->name = ctx->ID()->getText();
    e->loc = loc(ctx->ID()->getSymbol());
    // A call has '(' after the name, even with no arguments.
    if (ctx->children.size() > 1) {
      e->kind = ast::Expr::Kind::Call;
      for (auto *arg : ctx->expr())
        e->operands.push_back(buildExpr(arg));
    } else {
      e->kind = ast::Expr::Kind::Name;
    }
    return e;
  }

  Diags &diags;
  std::string file;
};

/// Everything one parse needs, kept alive together (the tree points into the
/// token stream, which points into the input).
struct ParseSession {
  std::string original;
  std::vector<size_t> lineStarts;
  antlr4::ANTLRInputStream input;
  MirasLexer lexer;
  antlr4::CommonTokenStream tokens;
  MirasParser parser;
  LexerListener lexerListener;

  ParseSession(const std::string &file, const std::string &source, Diags &diags)
      : original(source), lineStarts(computeLineStarts(source)),
        input(sanitize(source)), lexer(&input), tokens(&lexer),
        parser(&tokens), lexerListener(diags, file, original, lineStarts) {
    lexer.removeErrorListeners();
    lexer.addErrorListener(&lexerListener);
    parser.removeErrorListeners();
    parser.setErrorHandler(std::make_shared<ErrorStrategy>(diags, file));
  }

  /// The runtime decodes UTF-8 and throws on invalid bytes. The language is
  /// ASCII, so map every other byte to DEL (one byte each, keeping columns);
  /// it is legal inside comments and an "unexpected character" elsewhere.
  static std::string sanitize(std::string s) {
    if (s.compare(0, 3, "\xEF\xBB\xBF") == 0)
      s.replace(0, 3, "   "); // UTF-8 byte-order mark
    for (char &c : s) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u >= 0x80 || u == 0)
        c = '\x7f';
    }
    return s;
  }

  static std::vector<size_t> computeLineStarts(const std::string &s) {
    std::vector<size_t> starts{0};
    for (size_t i = 0; i < s.size(); ++i)
      if (s[i] == '\n')
        starts.push_back(i + 1);
    return starts;
  }

  /// Lexes everything up front: reports unterminated comments and nesting
  /// that would overflow the parser's stack. Returns false to skip parsing.
  bool prescan(const std::string &file, Diags &diags) {
    tokens.fill();
    int depth = 0, statementNesting = 0;
    for (antlr4::Token *t : tokens.getTokens()) {
      size_t type = t->getType();
      if (type == MirasLexer::UNTERMINATED_COMMENT) {
        diags.error(locOf(file, t), "unterminated '/*' comment");
        return false;
      }
      std::string text = type == antlr4::Token::EOF ? "" : t->getText();
      if (text == "(")
        ++depth;
      else if (text == ")")
        depth = std::max(0, depth - 1);
      else if (text == ";" || text == "{" || text == "}")
        statementNesting = 0;
      else if (text == "-" || text == "^")
        ++statementNesting;
      if (depth + statementNesting > kMaxNesting) {
        diags.error(locOf(file, t), "expression is nested too deeply (more than " +
                                        std::to_string(kMaxNesting) + " levels)");
        return false;
      }
    }
    return true;
  }
};

} // namespace

bool detail::parseNumber(const std::string &text, double &value,
                         bool &isInteger) {
  const char *b = text.data(), *e = b + text.size();
  bool negative = b != e && *b == '-';
  if (negative)
    ++b;
  // Only the lexer's spellings: digits, '.', exponent (from_chars alone would
  // also take "inf" and "nan").
  if (b == e || !(std::isdigit(static_cast<unsigned char>(*b)) || *b == '.'))
    return false;
  for (const char *p = b; p != e; ++p)
    if (!std::isdigit(static_cast<unsigned char>(*p)) &&
        !std::strchr(".eE+-", *p))
      return false;
  double v = 0;
  auto res = std::from_chars(b, e, v);
  if (res.ec != std::errc() || res.ptr != e || !std::isfinite(v))
    return false;
  value = negative ? -v : v;
  isInteger = std::none_of(b, e, [](char c) { return c == '.' || c == 'e' || c == 'E'; });
  return true;
}

std::string detail::formatNumber(double value) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, res.ptr);
}

std::optional<ast::Module> detail::parseModule(const std::string &path,
                                               const std::string &source,
                                               Diags &diags) {
  ParseSession s(path, source, diags);
  int before = diags.errors;
  if (!s.prescan(path, diags))
    return std::nullopt;
  auto *tree = s.parser.file();
  if (diags.errors != before)
    return std::nullopt;
  Builder builder(diags, path);
  return builder.buildModule(tree->moduleDecl());
}

ast::ExprPtr detail::parseExpression(const std::string &file,
                                     const std::string &text, Diags &diags) {
  ParseSession s(file, text, diags);
  int before = diags.errors;
  if (!s.prescan(file, diags))
    return nullptr;
  auto *tree = s.parser.exprOnly();
  if (diags.errors != before)
    return nullptr;
  Builder builder(diags, file);
  return builder.buildExpr(tree->expr());
}
