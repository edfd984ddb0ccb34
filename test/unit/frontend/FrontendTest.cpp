//===- FrontendTest.cpp - Resolution results and no-crash fuzz -------------===//
#include "miras/Frontend/Frontend.h"

#include <gtest/gtest.h>

#include <random>
#include <sstream>

using namespace miras;
using namespace miras::frontend;

namespace {

const char *kGatedDeltaNet = R"(/* Gated DeltaNet */
module gated_deltanet {
  param D = 64;
  gate eta   : scalar;
  gate alpha : channel(dk);
  gate beta  : channel(dv);
  memory    linear(dk = D, dv = D / 2);
  bias      l2;
  retention l2(decay = alpha, order = before_gradient);
  optimizer gd(lr = eta);
  read      before_write;
  chunk     D / 4;
}
)";

LoadResult load(const std::string &src,
                const std::map<std::string, std::string> &defines = {}) {
  return loadModule("t.miras", src, defines);
}

std::string errors(const LoadResult &r) {
  std::ostringstream os;
  printDiagnostics(os, r.diagnostics, "");
  return os.str();
}

/// A complete module around one bias line.
std::string withBias(const std::string &bias,
                     const std::string &optimizer = "gd(lr = eta)") {
  return "module m {\n  param D = 8;\n  gate eta : scalar;\n"
         "  gate w : channel(dv);\n  memory linear(D, D);\n  " +
         bias + "\n  retention none;\n  optimizer " + optimizer + ";\n}\n";
}

const ast::ResolvedBias &bias(const LoadResult &r) { return r.resolved->bias; }

} // namespace

TEST(Frontend, ResolvesGatedDeltaNet) {
  LoadResult r = load(kGatedDeltaNet);
  ASSERT_TRUE(r.ok()) << errors(r);
  const ast::ResolvedModule &m = *r.resolved;
  EXPECT_EQ(m.name, "gated_deltanet");
  EXPECT_EQ(m.loc.line, 2);
  EXPECT_EQ(m.loc.col, 8);
  EXPECT_EQ(m.dk, 64);
  EXPECT_EQ(m.dv, 32);
  ASSERT_EQ(m.gates.size(), 3u);
  EXPECT_EQ(m.gates[0].dim, 1);
  EXPECT_EQ(m.findGate("alpha")->dim, 64);
  EXPECT_EQ(m.findGate("beta")->dim, 32);
  EXPECT_EQ(m.findGate("beta")->axis, "dv");
  EXPECT_EQ(m.retention.name, "l2");
  EXPECT_EQ(m.retention.args.at("decay").kind, ast::ArgValue::Kind::Gate);
  EXPECT_EQ(m.retention.args.at("decay").name, "alpha");
  EXPECT_EQ(m.retention.args.at("order").kind, ast::ArgValue::Kind::Keyword);
  EXPECT_EQ(m.retention.args.at("order").name, "before_gradient");
  EXPECT_EQ(m.optimizer.args.at("lr").name, "eta");
  EXPECT_FALSE(m.readAfterWrite);
  EXPECT_EQ(m.chunk, 16);
  EXPECT_EQ(m.bias.name, "l2");
  EXPECT_EQ(m.bias.kind, ast::ResolvedBias::Kind::Loss);
  EXPECT_EQ(printExpr(*m.bias.expr), "0.5 * sum((y - v) ^ 2)");
  ASSERT_EQ(m.params.size(), 1u);
  EXPECT_TRUE(m.params[0].isInteger);
  EXPECT_FALSE(m.params[0].overridden);
}

TEST(Frontend, DefaultsAreFilled) {
  LoadResult r = load(withBias("bias lp(p = 3);"));
  ASSERT_TRUE(r.ok()) << errors(r);
  const auto &args = bias(r).args;
  EXPECT_EQ(args.at("p").number, 3);
  EXPECT_EQ(args.at("smooth").number, 0);
  EXPECT_EQ(args.at("kappa").number, 10);
  EXPECT_EQ(args.at("eps").number, 1e-6);
  EXPECT_EQ(r.resolved->chunk, 1);
  EXPECT_TRUE(r.resolved->readAfterWrite);
  EXPECT_TRUE(r.resolved->retention.args.empty());

  LoadResult ret = load(
      "module m { memory linear(2, 2); bias dot; retention l2(0.5);"
      " optimizer gd(0.1); }");
  ASSERT_TRUE(ret.ok()) << errors(ret);
  EXPECT_EQ(ret.resolved->retention.args.at("decay").number, 0.5);
  EXPECT_EQ(ret.resolved->retention.args.at("order").name, "decoupled");
  EXPECT_EQ(ret.resolved->optimizer.args.at("lr").kind,
            ast::ArgValue::Kind::Number);
}

TEST(Frontend, LpExactVersusSmooth) {
  LoadResult exact = load(withBias("bias lp(3);"));
  ASSERT_TRUE(exact.ok()) << errors(exact);
  EXPECT_EQ(bias(exact).kind, ast::ResolvedBias::Kind::Loss);
  EXPECT_EQ(printExpr(*bias(exact).expr), "sum(abs(y - v) ^ 3)");

  LoadResult smooth = load(withBias("bias lp(3, smooth, kappa = 4);"));
  ASSERT_TRUE(smooth.ok()) << errors(smooth);
  EXPECT_EQ(bias(smooth).kind, ast::ResolvedBias::Kind::ErrorSignal);
  EXPECT_EQ(bias(smooth).args.at("smooth").number, 1);
  EXPECT_EQ(printExpr(*bias(smooth).expr),
            "3 * tanh(4 * (y - v)) * ((y - v) ^ 2 + 1e-06) ^ ((3 - 1) / 2)");

  LoadResult named = load(withBias("bias lp(p = 3, smooth = 1);"));
  ASSERT_TRUE(named.ok()) << errors(named);
  EXPECT_EQ(bias(named).kind, ast::ResolvedBias::Kind::ErrorSignal);

  // p < 2 is always smoothed (Sign is not differentiable at 0).
  LoadResult small = load(withBias("bias lp(p = 1.5);"));
  ASSERT_TRUE(small.ok()) << errors(small);
  EXPECT_EQ(bias(small).kind, ast::ResolvedBias::Kind::ErrorSignal);
}

TEST(Frontend, BuiltinBiasesExpandWithGates) {
  LoadResult r = load(withBias("bias huber(delta = eta);"));
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(bias(r).args.at("delta").kind, ast::ArgValue::Kind::Gate);
  EXPECT_EQ(printExpr(*bias(r).expr),
            "sum(min(max(y - v, -eta), eta) * (y - v - min(max(y - v, -eta), "
            "eta) / 2))");
  // Every built-in definition parses and type-checks.
  for (const char *b : {"bias dot;", "bias l2;", "bias lp(3);", "bias lp(1);",
                        "bias huber(0.5);", "bias huber_norm(eta);",
                        "bias value_shift(delta = 0.1);"}) {
    LoadResult x = load(withBias(b));
    EXPECT_TRUE(x.ok()) << b << "\n" << errors(x);
  }
}

TEST(Frontend, ExpressionBiasIsRenamedAndSubstituted) {
  LoadResult r = load(
      withBias("bias(pred, target) = sum(w * abs(pred - target)^D) / D;"));
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(bias(r).name, "expression");
  EXPECT_TRUE(bias(r).args.empty());
  EXPECT_EQ(printExpr(*bias(r).expr), "sum(w * abs(y - v) ^ 8) / 8");
  EXPECT_EQ(bias(r).expr->loc.line, 6);
}

TEST(Frontend, Overrides) {
  LoadResult r = load(kGatedDeltaNet, {{"D", "128"}});
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(r.resolved->dk, 128);
  EXPECT_EQ(r.resolved->dv, 64);
  EXPECT_EQ(r.resolved->chunk, 32);
  EXPECT_TRUE(r.resolved->params[0].overridden);
  // The syntax tree keeps what was written.
  EXPECT_EQ(printExpr(*r.syntax->params[0].value), "64");

  LoadResult bad = load(kGatedDeltaNet, {{"X", "1"}, {"D", "6x"}});
  EXPECT_FALSE(bad.ok());
  std::string e = errors(bad);
  EXPECT_NE(e.find("param 'X'"), std::string::npos) << e;
  EXPECT_NE(e.find("invalid value '6x' for -DD"), std::string::npos) << e;

  // A non-integer override cannot size a dimension.
  LoadResult frac = load(kGatedDeltaNet, {{"D", "64.0"}});
  EXPECT_FALSE(frac.ok());
}

TEST(Frontend, ImplicitNeedsLinearAndL2) {
  EXPECT_TRUE(load(withBias("bias l2;", "implicit(lr = eta)")).ok());
  LoadResult r = load(withBias("bias dot;", "implicit(lr = eta)"));
  EXPECT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("optimizer 'implicit' requires"), std::string::npos);
}

TEST(Frontend, ReportsEveryErrorInOneRun) {
  LoadResult r = load("module m {\n  param D = 4;\n  param D = 5;\n"
                      "  gate g : channel(dx);\n  memory linear(D, 0);\n"
                      "  bias(y, v) = (y - v)^2;\n  retention l2(2);\n"
                      "  optimizer sgd(1);\n  read later;\n  chunk -1;\n}\n");
  EXPECT_FALSE(r.ok());
  ASSERT_TRUE(r.syntax.has_value());
  int errorCount = 0;
  for (const Diagnostic &d : r.diagnostics)
    errorCount += d.severity == Diagnostic::Severity::Error;
  EXPECT_EQ(errorCount, 8) << errors(r);
  // Sorted by position.
  for (size_t i = 1; i < r.diagnostics.size(); ++i) {
    if (r.diagnostics[i].severity == Diagnostic::Severity::Error) {
      EXPECT_LE(r.diagnostics[i - 1].loc.line, r.diagnostics[i].loc.line);
    }
  }
}

TEST(Frontend, DiagnosticFormat) {
  std::string src = "module m {\n  param D = 64\n}\n";
  LoadResult r = load(src);
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(r.syntax.has_value());
  std::ostringstream os;
  printDiagnostics(os, r.diagnostics, src);
  EXPECT_EQ(os.str(), "t.miras:2:15: error: expected ';' before '}'\n"
                      "  param D = 64\n"
                      "              ^\n");
}

TEST(Frontend, SyntaxRecoveryFindsEveryStatementError) {
  LoadResult r = load("module m {\n  foo;\n  param D = (1 + ;\n  bias l2\n"
                      "  memory linear(4, 4) 5;\n  read 3;\n  chunk 4;\n}\n");
  ASSERT_FALSE(r.ok());
  std::vector<int> lines;
  for (const Diagnostic &d : r.diagnostics)
    lines.push_back(d.loc.line);
  EXPECT_EQ(lines, (std::vector<int>{2, 3, 4, 5, 6})) << errors(r);
}

TEST(Frontend, PrintExprRoundTrips) {
  for (const char *e :
       {"-x ^ 2", "(-x) ^ 2", "2 ^ 3 ^ 2", "(2 ^ 3) ^ 2", "2 ^ -1",
        "a - (b - c)", "a - b - c", "a / (b * c)", "-(a + b) * c",
        "min(a, b) ^ (1 / 2)", "--a", "1e-06 + 2500"}) {
    LoadResult r = load(std::string("module m { chunk ") + e + "; }");
    ASSERT_TRUE(r.syntax.has_value()) << e << errors(r);
    EXPECT_EQ(printExpr(*r.syntax->chunk), e);
  }
  LoadResult r = load("module m { chunk -x^2; }");
  ASSERT_TRUE(r.syntax.has_value());
  EXPECT_EQ(r.syntax->chunk->kind, ast::Expr::Kind::Unary);
}

TEST(Frontend, DumpAST) {
  LoadResult r = load(kGatedDeltaNet);
  ASSERT_TRUE(r.syntax.has_value());
  std::string dump = dumpAST(*r.syntax);
  EXPECT_NE(dump.find("module gated_deltanet <t.miras:2:8>"), std::string::npos);
  EXPECT_NE(dump.find("  memory linear(dk = D, dv = D / 2) <7:13>"),
            std::string::npos)
      << dump;
}

TEST(Frontend, HostileInputs) {
  for (const std::string &src :
       {std::string(), std::string("\0\0\0", 3), std::string("\xff\xfe{}"),
        std::string("module m { chunk 1e99999; }"),
        std::string("module m { chunk ") + std::string(5000, '(') + "1" +
            std::string(5000, ')') + "; }",
        std::string("module m { chunk ") + std::string(100000, '-') + "1; }",
        std::string(20000, '@'), std::string("/* never closed")}) {
    LoadResult r;
    EXPECT_NO_THROW(r = load(src));
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(r.diagnostics.empty());
    EXPECT_LE(r.diagnostics.size(), 40u); // error cap
  }
}

/// Truncations at every offset and random byte flips: must never throw or
/// crash, and a failed load always says why.
TEST(Frontend, FuzzNoCrash) {
  std::string base = std::string(kGatedDeltaNet) +
                     "// bias(y, v) = sum(log(cosh(y - v))) + 2^-x;\n";
  std::vector<std::string> inputs;
  for (size_t n = 0; n <= base.size(); ++n)
    inputs.push_back(base.substr(0, n));
  std::mt19937 rng(1234);
  const std::string alphabet = "(){};:=,+-*/^.eE0123456789xyzv_ \n\t@#\"\\";
  for (int i = 0; i < 1500; ++i) {
    std::string s = base;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      size_t pos = rng() % s.size();
      s[pos] = rng() % 3 ? alphabet[rng() % alphabet.size()]
                         : static_cast<char>(rng() % 256);
    }
    inputs.push_back(s);
  }
  for (const std::string &s : inputs) {
    LoadResult r;
    EXPECT_NO_THROW(r = load(s, {{"D", "32"}}));
    if (!r.ok()) {
      bool hasError = false;
      for (const Diagnostic &d : r.diagnostics)
        hasError |= d.severity == Diagnostic::Severity::Error;
      EXPECT_TRUE(hasError) << s;
    }
    std::ostringstream sink;
    printDiagnostics(sink, r.diagnostics, s);
    if (r.syntax)
      (void)dumpAST(*r.syntax);
  }
}

//===----------------------------------------------------------------------===//
// MIRAS components: mlp, momentum, lq, kl, yaad_mix, where/comparisons
//===----------------------------------------------------------------------===//

namespace {

/// A module with an mlp memory and the given bias/retention/optimizer lines.
std::string mirasModule(const std::string &memory, const std::string &bias,
                        const std::string &retention,
                        const std::string &optimizer) {
  return "module m {\n  param D = 16;\n  gate eta : scalar;\n"
         "  gate alpha : scalar;\n  gate mu : scalar;\n  memory " +
         memory + ";\n  bias " + bias + ";\n  retention " + retention +
         ";\n  optimizer " + optimizer + ";\n}\n";
}

} // namespace

TEST(Frontend, MlpDefaultsAndDims) {
  LoadResult r = load(mirasModule("mlp(dim = D)", "l2", "none", "gd(eta)"));
  ASSERT_TRUE(r.ok()) << errors(r);
  const ast::ResolvedModule &m = *r.resolved;
  EXPECT_EQ(m.memory.name, "mlp");
  EXPECT_EQ(m.dk, 16);
  EXPECT_EQ(m.dv, 16);
  const auto &a = m.memory.args;
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a.at("dim").number, 16);
  EXPECT_EQ(a.at("depth").number, 2);
  EXPECT_EQ(a.at("expansion").number, 4);
  EXPECT_EQ(a.at("act").kind, ast::ArgValue::Kind::Keyword);
  EXPECT_EQ(a.at("act").name, "gelu");
  EXPECT_EQ(a.at("residual").number, 0);
  EXPECT_EQ(a.at("layernorm").number, 0);

  LoadResult full = load(mirasModule(
      "mlp(D * 2, 3, expansion = 2, act = gelu_tanh, residual, layernorm = 1)",
      "l2", "none", "gd(eta)"));
  ASSERT_TRUE(full.ok()) << errors(full);
  const auto &b = full.resolved->memory.args;
  EXPECT_EQ(full.resolved->dk, 32);
  EXPECT_EQ(full.resolved->dv, 32);
  EXPECT_EQ(b.at("depth").number, 3);
  EXPECT_EQ(b.at("expansion").number, 2);
  EXPECT_EQ(b.at("act").name, "gelu_tanh");
  EXPECT_EQ(b.at("residual").number, 1);
  EXPECT_EQ(b.at("layernorm").number, 1);

  for (const char *act : {"silu", "relu", "identity"}) {
    LoadResult x = load(mirasModule(std::string("mlp(D, act = ") + act + ")",
                                    "l2", "none", "gd(eta)"));
    EXPECT_TRUE(x.ok()) << act << "\n" << errors(x);
  }
  for (const char *bad : {"mlp(D, depth = 1)", "mlp(D, expansion = 0)",
                          "mlp(D, act = tanh)", "mlp(D, depth = 2.5)",
                          "mlp(dim = 0)", "mlp(depth = 2)"}) {
    LoadResult x = load(mirasModule(bad, "l2", "none", "gd(eta)"));
    EXPECT_FALSE(x.ok()) << bad;
  }
}

TEST(Frontend, MlpRejectsChannelGates) {
  LoadResult r = load("module m { gate a : channel(dk); memory mlp(8); "
                      "bias l2; retention l2(decay = a); optimizer gd(1); }");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("channel gate 'a' needs a linear memory"),
            std::string::npos)
      << errors(r);
}

TEST(Frontend, MomentumArgs) {
  LoadResult r = load(mirasModule("mlp(D)", "l2", "l2(decay = alpha)",
                                  "momentum(lr = eta, beta = mu)"));
  ASSERT_TRUE(r.ok()) << errors(r);
  const auto &a = r.resolved->optimizer.args;
  EXPECT_EQ(r.resolved->optimizer.name, "momentum");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a.at("lr").kind, ast::ArgValue::Kind::Gate);
  EXPECT_EQ(a.at("lr").name, "eta");
  EXPECT_EQ(a.at("beta").kind, ast::ArgValue::Kind::Gate);
  EXPECT_EQ(a.at("beta").name, "mu");

  LoadResult n = load(mirasModule("mlp(D)", "l2", "none", "momentum(0.1, 0)"));
  ASSERT_TRUE(n.ok()) << errors(n);
  EXPECT_EQ(n.resolved->optimizer.args.at("lr").number, 0.1);
  EXPECT_EQ(n.resolved->optimizer.args.at("beta").number, 0);
  EXPECT_TRUE(load(mirasModule("mlp(D)", "l2", "none", "momentum(0.1, 1)")).ok());

  for (const char *bad : {"momentum(lr = 0, beta = 0.5)",
                          "momentum(lr = 1, beta = 1.5)",
                          "momentum(lr = 1, beta = -0.1)", "momentum(lr = 1)"})
    EXPECT_FALSE(load(mirasModule("mlp(D)", "l2", "none", bad)).ok()) << bad;
}

TEST(Frontend, MirrorRetentions) {
  LoadResult lq = load(mirasModule("mlp(D)", "lp(p = 3)",
                                   "lq(q = 4, decay = alpha)", "gd(eta)"));
  ASSERT_TRUE(lq.ok()) << errors(lq);
  const auto &a = lq.resolved->retention.args;
  EXPECT_EQ(lq.resolved->retention.name, "lq");
  EXPECT_EQ(a.at("q").number, 4);
  EXPECT_EQ(a.at("decay").kind, ast::ArgValue::Kind::Gate);
  EXPECT_EQ(a.at("decay").name, "alpha");

  LoadResult lqDefault = load(mirasModule("mlp(D)", "l2", "lq(2.5)", "gd(eta)"));
  ASSERT_TRUE(lqDefault.ok()) << errors(lqDefault);
  EXPECT_EQ(lqDefault.resolved->retention.args.at("q").number, 2.5);
  EXPECT_EQ(lqDefault.resolved->retention.args.at("decay").kind,
            ast::ArgValue::Kind::Number);
  EXPECT_EQ(lqDefault.resolved->retention.args.at("decay").number, 1);

  LoadResult kl = load(mirasModule("mlp(D)", "l2", "kl", "gd(eta)"));
  ASSERT_TRUE(kl.ok()) << errors(kl);
  ASSERT_EQ(kl.resolved->retention.args.size(), 1u);
  EXPECT_EQ(kl.resolved->retention.args.at("decay").number, 1);
  LoadResult klGate =
      load(mirasModule("mlp(D)", "l2", "kl(decay = alpha)", "gd(eta)"));
  ASSERT_TRUE(klGate.ok()) << errors(klGate);
  EXPECT_EQ(klGate.resolved->retention.args.at("decay").name, "alpha");

  for (const char *bad : {"lq(q = 1)", "lq(q = 4, decay = 0)", "lq",
                          "kl(decay = 1.5)", "kl(decay = 0)"})
    EXPECT_FALSE(load(mirasModule("mlp(D)", "l2", bad, "gd(eta)")).ok()) << bad;
}

TEST(Frontend, ElasticRetentions) {
  using Kind = ast::ArgValue::Kind;
  // ftrl_elastic: eta and a are numbers, decay a number or a scalar gate.
  LoadResult f =
      load(mirasModule("linear(D, D)", "l2",
                       "ftrl_elastic(0.5, a = 8, decay = alpha)", "gd(eta)"));
  ASSERT_TRUE(f.ok()) << errors(f);
  const ast::ResolvedComponent &fr = f.resolved->retention;
  EXPECT_EQ(fr.name, "ftrl_elastic");
  ASSERT_EQ(fr.args.size(), 3u);
  EXPECT_EQ(fr.args.at("eta").kind, Kind::Number);
  EXPECT_EQ(fr.args.at("eta").number, 0.5);
  EXPECT_EQ(fr.args.at("a").kind, Kind::Number);
  EXPECT_EQ(fr.args.at("a").number, 8);
  EXPECT_EQ(fr.args.at("decay").kind, Kind::Gate);
  EXPECT_EQ(fr.args.at("decay").name, "alpha");

  // decay defaults to 1; constant expressions fold; mlp memories are fine.
  LoadResult fd = load(mirasModule(
      "mlp(D)", "l2", "ftrl_elastic(a = D / 4, eta = 1e-3)", "gd(eta)"));
  ASSERT_TRUE(fd.ok()) << errors(fd);
  const auto &fa = fd.resolved->retention.args;
  EXPECT_EQ(fa.at("eta").number, 1e-3);
  EXPECT_EQ(fa.at("a").number, 4);
  EXPECT_EQ(fa.at("decay").kind, Kind::Number);
  EXPECT_EQ(fa.at("decay").number, 1);
  LoadResult fn = load(
      mirasModule("linear(D, D)", "l2", "ftrl_elastic(1, 2, 0.9)", "gd(eta)"));
  ASSERT_TRUE(fn.ok()) << errors(fn);
  EXPECT_EQ(fn.resolved->retention.args.at("decay").number, 0.9);

  // elastic_net: a and b, each a number > 0 or a scalar gate.
  LoadResult p = load(mirasModule(
      "linear(D, D)", "l2", "elastic_net(a = alpha, b = 0.25)", "gd(eta)"));
  ASSERT_TRUE(p.ok()) << errors(p);
  const ast::ResolvedComponent &pr = p.resolved->retention;
  EXPECT_EQ(pr.name, "elastic_net");
  ASSERT_EQ(pr.args.size(), 2u);
  EXPECT_EQ(pr.args.at("a").kind, Kind::Gate);
  EXPECT_EQ(pr.args.at("a").name, "alpha");
  EXPECT_EQ(pr.args.at("b").kind, Kind::Number);
  EXPECT_EQ(pr.args.at("b").number, 0.25);
  LoadResult pp =
      load(mirasModule("mlp(D)", "l2", "elastic_net(2, mu)", "gd(eta)"));
  ASSERT_TRUE(pp.ok()) << errors(pp);
  EXPECT_EQ(pp.resolved->retention.args.at("a").number, 2);
  EXPECT_EQ(pp.resolved->retention.args.at("b").name, "mu");

  struct Bad {
    const char *retention, *message;
  };
  for (const Bad &b : std::vector<Bad>{
           {"ftrl_elastic", "requires argument 'eta'"},
           {"ftrl_elastic(eta = 1)", "requires argument 'a'"},
           {"ftrl_elastic(0, 1)", "'eta' of retention 'ftrl_elastic' must be"},
           {"ftrl_elastic(1, -1)", "'a' of retention 'ftrl_elastic' must be"},
           {"ftrl_elastic(alpha, 1)", "found scalar gate 'alpha'"},
           {"ftrl_elastic(1, 1, 0)", "'decay' of retention 'ftrl_elastic'"},
           {"ftrl_elastic(1, 1, 1.5)", "'decay' of retention 'ftrl_elastic'"},
           {"ftrl_elastic(1, 1, order = before_gradient)",
            "has no argument 'order'"},
           {"ftrl_elastic(1, 1, 1, 1)", "too many arguments"},
           {"elastic_net", "requires argument 'a'"},
           {"elastic_net(1)", "requires argument 'b'"},
           {"elastic_net(0, 1)", "'a' of retention 'elastic_net' must be"},
           {"elastic_net(1, -2)", "'b' of retention 'elastic_net' must be"},
           {"elastic_net(1, 1, order = before_gradient)",
            "has no argument 'order'"},
           {"elastic_net(1, 1, 1)", "too many arguments"}}) {
    LoadResult x =
        load(mirasModule("linear(D, D)", "l2", b.retention, "gd(eta)"));
    ASSERT_FALSE(x.ok()) << b.retention;
    EXPECT_NE(errors(x).find(b.message), std::string::npos)
        << b.retention << "\n"
        << errors(x);
  }
  // Channel gates are rejected for every gate-taking argument.
  LoadResult ch =
      load("module m { gate w : channel(dv); memory linear(4, 4); "
           "bias l2; retention elastic_net(w, w); optimizer gd(1); }");
  ASSERT_FALSE(ch.ok());
  EXPECT_NE(errors(ch).find("found channel gate 'w'"), std::string::npos)
      << errors(ch);

  // Both combine with gd only: an error at the retention, a note at the
  // optimizer.
  for (const char *ret : {"ftrl_elastic(1, 1)", "elastic_net(1, 1)"})
    for (const char *opt : {"momentum(eta, mu)", "implicit(eta)"}) {
      LoadResult x = load(mirasModule("linear(D, D)", "l2", ret, opt));
      ASSERT_FALSE(x.ok()) << ret << " + " << opt;
      ASSERT_EQ(x.diagnostics.size(), 2u) << errors(x);
      EXPECT_EQ(x.diagnostics[0].severity, Diagnostic::Severity::Error);
      EXPECT_EQ(x.diagnostics[1].severity, Diagnostic::Severity::Note);
      EXPECT_EQ(x.diagnostics[0].loc.line, 8) << errors(x);
      EXPECT_EQ(x.diagnostics[0].loc.col, 13) << errors(x);
      EXPECT_EQ(x.diagnostics[1].loc.line, 9) << errors(x);
      EXPECT_EQ(x.diagnostics[1].loc.col, 13) << errors(x);
      EXPECT_NE(errors(x).find(
                    "but the optimizer is '" +
                    std::string(opt).substr(0, std::string(opt).find('(')) +
                    "'"),
                std::string::npos)
          << errors(x);
      EXPECT_NE(errors(x).find("note: optimizer"), std::string::npos)
          << errors(x);
    }
}

TEST(Frontend, RejectedCombinations) {
  struct Case {
    const char *memory, *retention, *optimizer, *message;
  };
  for (const Case &c : std::vector<Case>{
           {"mlp(D)", "lq(4)", "momentum(eta, mu)",
            "mirror retentions combine with gd only for now"},
           {"mlp(D)", "kl", "momentum(eta, mu)",
            "mirror retentions combine with gd only for now"},
           {"linear(D, D)", "kl", "implicit(eta)",
            "mirror retentions combine with gd only for now"},
           {"mlp(D)", "l2_coupled(alpha)", "momentum(eta, mu)",
            "does not combine with optimizer 'momentum'"},
           {"mlp(D)", "l2(alpha, order = before_gradient)", "gd(eta)",
            "before_gradient needs a linear memory"},
           {"mlp(D)", "none", "implicit(eta)",
            "optimizer 'implicit' requires a linear memory"}}) {
    LoadResult r = load(mirasModule(c.memory, "l2", c.retention, c.optimizer));
    ASSERT_FALSE(r.ok()) << c.retention << " + " << c.optimizer;
    EXPECT_NE(errors(r).find(c.message), std::string::npos) << errors(r);
  }
  // The same components on supported pairs are fine.
  EXPECT_TRUE(load(mirasModule("linear(D, D)", "l2", "l2(alpha, order = "
                               "before_gradient)", "gd(eta)"))
                  .ok());
  EXPECT_TRUE(
      load(mirasModule("linear(D, D)", "l2", "l2_coupled(alpha)", "gd(eta)"))
          .ok());
}

TEST(Frontend, YaadMixExpands) {
  LoadResult r = load(mirasModule("mlp(D, residual, layernorm)",
                                  "yaad_mix(delta = 1.0)", "l2(decay = alpha)",
                                  "gd(eta)"));
  ASSERT_TRUE(r.ok()) << errors(r);
  const ast::ResolvedBias &b = bias(r);
  EXPECT_EQ(b.name, "yaad_mix");
  EXPECT_EQ(b.kind, ast::ResolvedBias::Kind::ErrorSignal);
  EXPECT_EQ(b.args.at("delta").number, 1);
  EXPECT_EQ(b.args.at("kappa").number, 10);
  EXPECT_EQ(printExpr(*b.expr),
            "where(norm(y - v) <= 1, y - v, 1 * tanh(10 * (y - v)))");
  ASSERT_EQ(b.expr->kind, ast::Expr::Kind::Call);
  ASSERT_EQ(b.expr->operands.size(), 3u);
  EXPECT_EQ(b.expr->operands[0]->kind, ast::Expr::Kind::Binary);
  EXPECT_EQ(b.expr->operands[0]->op, "<=");

  LoadResult g = load(withBias("bias yaad_mix(eta, kappa = 4);"));
  ASSERT_TRUE(g.ok()) << errors(g);
  EXPECT_EQ(bias(g).args.at("delta").kind, ast::ArgValue::Kind::Gate);
  EXPECT_EQ(printExpr(*bias(g).expr),
            "where(norm(y - v) <= eta, y - v, eta * tanh(4 * (y - v)))");

  for (const char *bad : {"bias yaad_mix;", "bias yaad_mix(0);",
                          "bias yaad_mix(w);", "bias yaad_mix(1, kappa = 0);"})
    EXPECT_FALSE(load(withBias(bad)).ok()) << bad;
}

TEST(Frontend, WhereAndComparisonShapes) {
  // where(scalar cond, vector, scalar) is a vector: sum() makes it a loss.
  LoadResult r = load(withBias(
      "bias(y, v) = sum(where(norm(y - v) > 2, (y - v)^2, 1));"));
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(printExpr(*bias(r).expr),
            "sum(where(norm(y - v) > 2, (y - v) ^ 2, 1))");

  // Scalar branches give a scalar loss directly; every operator parses.
  for (const char *op : {"<", "<=", ">", ">="}) {
    LoadResult s = load(withBias(std::string("bias(y, v) = where(sum(y) ") +
                                 op + " eta, norm(y - v), sum(v));"));
    ASSERT_TRUE(s.ok()) << op << "\n" << errors(s);
    const ast::Expr &cond = *bias(s).expr->operands.at(0);
    EXPECT_EQ(cond.kind, ast::Expr::Kind::Binary);
    EXPECT_EQ(cond.op, op);
  }
  // A vector where() is not a loss.
  LoadResult v = load(withBias("bias(y, v) = where(1 < 2, y - v, w);"));
  ASSERT_FALSE(v.ok());
  EXPECT_NE(errors(v).find("wrap it in sum"), std::string::npos) << errors(v);

  struct Bad {
    const char *bias, *message;
  };
  for (const Bad &b : std::vector<Bad>{
           {"bias(y, v) = sum(where(y < v, y, v));", "must compare scalars"},
           {"bias(y, v) = where(sum(y), 1, 2);", "must be a comparison"},
           {"bias(y, v) = sum(y) < 1;", "only be used as the condition"},
           {"bias(y, v) = (sum(y) < 1) * 2;", "only be used as the condition"},
           {"bias(y, v) = where(1 < 2, 1 < 2, 1);",
            "only be used as the condition"},
           {"bias(y, v) = where(1 < 2, 1);", "takes 3 arguments"},
           {"bias(y, v) = sum(where(1 < 2 < 3, y, v));", "cannot be chained"}}) {
    LoadResult x = load(withBias(b.bias));
    ASSERT_FALSE(x.ok()) << b.bias;
    EXPECT_NE(errors(x).find(b.message), std::string::npos)
        << b.bias << "\n" << errors(x);
  }
  LoadResult chunk = load("module m { chunk 1 < 2; }");
  EXPECT_NE(errors(chunk).find("only be used as the condition"),
            std::string::npos);
}

TEST(Frontend, PrintComparisons) {
  for (const char *e : {"a < b", "a + 1 <= b * 2", "(a < b) < c",
                        "a >= (b > c)", "-(a < b)", "where(a > b, -a, b ^ 2)"}) {
    LoadResult r = load(std::string("module m { chunk ") + e + "; }");
    ASSERT_TRUE(r.syntax.has_value()) << e << errors(r);
    EXPECT_EQ(printExpr(*r.syntax->chunk), e);
  }
  LoadResult r = load("module m { chunk a - b < c * d; }");
  ASSERT_TRUE(r.syntax.has_value());
  EXPECT_EQ(r.syntax->chunk->op, "<");
  EXPECT_EQ(r.syntax->chunk->operands[0]->op, "-");
}
