//===- Sema.cpp - Semantic analysis: ast::Module -> ast::ResolvedModule ----===//
//
// Substitutes params, checks every component against its definition in the
// ChoiceRegistry (dialect/lib/Miras/Choices: the one table the dialect's
// verifier also asks), runs the definitions' combination rules, expands
// built-in biases from their DSL definitions, and type-checks bias
// expressions (scalar vs vector). Reports every error it can find and keeps
// going; the result is returned only when there were none.
//
//===----------------------------------------------------------------------===//
#include "FrontendImpl.h"

#include "miras/Dialect/Miras/Choices/Choice.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

using namespace miras;
using namespace miras::frontend;
using namespace miras::frontend::detail;
using ast::Expr;
using ast::ExprPtr;

namespace {

using namespace miras::choices;

/// A number in a message; says why a whole number is not an integer here.
std::string showNumber(double v, bool isInteger) {
  if (!isInteger && v == std::floor(v))
    return formatNumber(v) + " (from a non-integer value: write 64, not 64.0)";
  return formatNumber(v);
}

ExprPtr makeNumber(double value, bool isInteger, const ast::SourceLoc &loc) {
  auto e = std::make_shared<Expr>();
  e->kind = Expr::Kind::Number;
  e->number = value;
  e->isInteger = isInteger;
  e->loc = loc;
  return e;
}

ExprPtr makeName(const std::string &name, const ast::SourceLoc &loc) {
  auto e = std::make_shared<Expr>();
  e->kind = Expr::Kind::Name;
  e->name = name;
  e->loc = loc;
  return e;
}

/// Bias functions: name -> arity and whether it reduces a vector to a scalar.
/// `where(cond, a, b)` selects per token: cond is a comparison of scalars.
struct FunctionSpec {
  int arity;
  bool reduces;
};
const std::map<std::string, FunctionSpec> &functions() {
  static const std::map<std::string, FunctionSpec> fns = {
      {"abs", {1, false}},  {"sign", {1, false}}, {"tanh", {1, false}},
      {"sqrt", {1, false}}, {"exp", {1, false}},  {"log", {1, false}},
      {"cosh", {1, false}}, {"min", {2, false}},  {"max", {2, false}},
      {"sum", {1, true}},   {"norm", {1, true}},  {"where", {3, false}},
  };
  return fns;
}

std::string functionNames() {
  std::vector<std::string> names;
  for (const auto &[name, spec] : functions())
    names.push_back(name);
  return quotedList(names);
}

/// Shapes in a bias expression. Bool is the result of comparing scalars,
/// legal only as the condition of where(...); VectorBool (comparing vectors)
/// is never legal, but tells the two mistakes apart.
enum class Shape { Scalar, Vector, Bool, VectorBool };

bool isBool(Shape s) { return s == Shape::Bool || s == Shape::VectorBool; }

bool isComparison(const std::string &op) {
  return op == "<" || op == "<=" || op == ">" || op == ">=";
}

const char *kComparisonMisuse =
    "a comparison can only be used as the condition of where(...)";

//===----------------------------------------------------------------------===//
// The analysis
//===----------------------------------------------------------------------===//

class Sema {
public:
  Sema(const ast::Module &m, Diags &diags) : m(m), diags(diags) {}

  std::optional<ast::ResolvedModule>
  run(const std::map<std::string, std::string> &defines,
      std::optional<int64_t> chunkOverride) {
    int before = diags.errors;
    r.name = m.name;
    r.loc = m.loc;
    resolveParams(defines);
    checkBiasNames();
    resolveGateNames();

    const ChoiceRegistry &registry = ChoiceRegistry::get();
    if (!m.memory)
      missing("memory", "memory linear(dk = 64, dv = 64);");
    else if (auto c = resolveComponent(*m.memory, Role::Memory)) {
      r.memory = *c;
      memory = registry.findMemory(c->name);
      std::tie(r.dk, r.dv) = memory->widths(lookup(r.memory));
    }
    resolveGateDims();
    bool biasOk = false;
    if (!m.bias)
      missing("bias", "bias l2;");
    else
      biasOk = resolveBias(*m.bias);
    if (!m.retention)
      missing("retention", "retention none;");
    else if (auto c = resolveComponent(*m.retention, Role::Retention)) {
      r.retention = *c;
      retention = registry.findRetention(c->name);
    }
    if (!m.optimizer)
      missing("optimizer", "optimizer gd(lr = eta);");
    else if (auto c = resolveComponent(*m.optimizer, Role::Optimizer)) {
      r.optimizer = *c;
      optimizer = registry.findOptimizer(c->name);
    }

    if (m.read) {
      if (*m.read == "after_write" || *m.read == "before_write")
        r.readAfterWrite = *m.read == "after_write";
      else
        diags.error(m.readLoc, "unknown read mode '" + *m.read +
                                   "': expected 'after_write' or "
                                   "'before_write'");
    }
    r.chunkLoc = m.chunk ? m.chunkLoc : m.loc;
    if (m.chunk) {
      if (auto v = evalConstant(*m.chunk, "chunk")) {
        if (!v->second || v->first < 1)
          diags.error(m.chunk->loc, "chunk must be a positive integer, got " +
                                        showNumber(v->first, v->second));
        else if (v->first > kMaxChunk)
          diags.error(m.chunk->loc, "chunk must be at most " +
                                        std::to_string(kMaxChunk) + ", got " +
                                        formatNumber(v->first));
        else
          r.chunk = static_cast<int64_t>(v->first);
      }
    }
    if (chunkOverride)
      r.chunk = *chunkOverride;
    resolveInits();
    if (memory && biasOk && retention && optimizer)
      checkCombinations(chunkOverride.has_value());
    if (diags.errors != before)
      return std::nullopt;
    return r;
  }

private:
  /// A resolved component's arguments as the choice definitions read them.
  ArgLookup lookup(const ast::ResolvedComponent &component) const {
    return ArgLookup([this, &component](const std::string &name) {
      choices::ArgValue value;
      auto it = component.args.find(name);
      if (it == component.args.end())
        return value;
      const ast::ArgValue &arg = it->second;
      switch (arg.kind) {
      case ast::ArgValue::Kind::Number:
        value.kind = choices::ArgValue::Kind::Number;
        value.number = arg.number;
        break;
      case ast::ArgValue::Kind::Gate:
        value.kind = choices::ArgValue::Kind::Gate;
        value.name = arg.name;
        if (const ast::ResolvedGate *g = r.findGate(arg.name)) {
          value.channelGate = g->channel;
          value.axis = g->axis;
        }
        break;
      case ast::ArgValue::Kind::Keyword:
        value.kind = choices::ArgValue::Kind::Keyword;
        value.name = arg.name;
        break;
      case ast::ArgValue::Kind::Function:
        value.kind = choices::ArgValue::Kind::Function;
        break;
      }
      return value;
    });
  }

  const ast::ResolvedComponent &component(Role role) const {
    switch (role) {
    case Role::Memory:
      return r.memory;
    case Role::Retention:
      return r.retention;
    case Role::Optimizer:
      return r.optimizer;
    case Role::Bias:
      break;
    }
    static const ast::ResolvedComponent none;
    return none;
  }

  /// The definitions' combination rules (the verifier runs the same ones),
  /// each message located at the component or argument it names; then what
  /// the optimizer makes of the gates and the chunk.
  void checkCombinations(bool chunkFromCommandLine) {
    auto locate = [&](Role role, const std::string &arg) {
      if (role == Role::Bias)
        return r.bias.loc;
      const ast::ResolvedComponent &c = component(role);
      auto it = arg.empty() ? c.args.end() : c.args.find(arg);
      return it == c.args.end() ? c.loc : it->second.loc;
    };
    ChoiceReporter reporter{
        [&](Role at, const std::string &arg, const std::string &message) {
          diags.error(locate(at, arg), message);
        },
        [&](Role at, const std::string &message) {
          diags.note(locate(at, ""), message);
        }};
    ArgLookup memoryArgs = lookup(r.memory), retentionArgs = lookup(r.retention),
              optimizerArgs = lookup(r.optimizer);
    checkCombination({*memory, memoryArgs, registry().findBias(r.bias.name),
                      r.bias.name, *retention, retentionArgs, *optimizer,
                      optimizerArgs, r.chunk},
                     reporter);

    r.steps = optimizer->stepsPerToken(optimizerArgs);
    std::string chunk = chunkProblem(*optimizer, optimizerArgs, r.chunk);
    if (!chunk.empty())
      diags.error(chunkFromCommandLine ? m.loc : r.chunkLoc,
                  chunkFromCommandLine
                      ? "--chunk=" + std::to_string(r.chunk) + ": " + chunk
                      : chunk);
    markPerStepGate();
  }

  static const ChoiceRegistry &registry() { return ChoiceRegistry::get(); }

  /// multistep(n): the lr gate (if any) has one value per step, and cannot
  /// also be one of the retention's arguments.
  void markPerStepGate() {
    const char *perStep = optimizer->perStepArg();
    auto it = perStep && r.steps > 1 ? r.optimizer.args.find(perStep)
                                     : r.optimizer.args.end();
    if (it == r.optimizer.args.end() || it->second.kind != ast::ArgValue::Kind::Gate)
      return;
    const std::string &gate = it->second.name;
    for (ast::ResolvedGate &g : r.gates)
      if (g.name == gate)
        g.perStep = true;
    for (const auto &[name, value] : r.retention.args)
      if (value.kind == ast::ArgValue::Kind::Gate && value.name == gate)
        diags.error(value.loc, "gate '" + gate + "' is " + optimizer->name() +
                                   "'s per-step learning rate and cannot also "
                                   "be the retention's '" +
                                   name + "'");
  }

  void missing(const char *what, const char *example) {
    diags.error(m.loc, std::string("module '") + m.name + "' has no " + what +
                           " declaration (e.g. '" + example + "')");
  }

  //--- params and names -----------------------------------------------------

  void resolveParams(const std::map<std::string, std::string> &defines) {
    for (const ast::ParamDecl &p : m.params) {
      if (const ast::ResolvedParam *first = findParam(p.name)) {
        diags.error(p.loc, "duplicate param '" + p.name + "'");
        diags.note(first->loc, "first declaration of '" + p.name + "' is here");
        continue;
      }
      ast::ResolvedParam rp;
      rp.name = p.name;
      rp.loc = p.loc;
      const Expr *e = p.value.get();
      bool negate = false;
      if (e && e->kind == Expr::Kind::Unary && e->operands.size() == 1) {
        negate = true;
        e = e->operands[0].get();
      }
      if (!e || e->kind != Expr::Kind::Number) {
        diags.error(p.value ? p.value->loc : p.loc,
                    "value of param '" + p.name +
                        "' must be a number literal (e.g. 64, -0.5, 1e-6)");
      } else {
        rp.value = negate ? -e->number : e->number;
        rp.isInteger = e->isInteger;
      }
      r.params.push_back(rp);
    }
    for (const auto &[name, text] : defines) {
      ast::ResolvedParam *p = nullptr;
      for (ast::ResolvedParam &rp : r.params)
        if (rp.name == name)
          p = &rp;
      if (!p) {
        diags.error(m.loc, "-D" + name + "=" + text +
                               " overrides param '" + name +
                               "', which module '" + m.name +
                               "' does not declare");
        continue;
      }
      double value;
      bool isInteger;
      if (!parseNumber(text, value, isInteger)) {
        diags.error(p->loc, "invalid value '" + text + "' for -D" + name +
                                ": expected a number");
        continue;
      }
      p->value = value;
      p->isInteger = isInteger;
      p->overridden = true;
    }
  }

  const ast::ResolvedParam *findParam(const std::string &name) const {
    for (const ast::ResolvedParam &p : r.params)
      if (p.name == name)
        return &p;
    return nullptr;
  }

  void checkBiasNames() {
    if (!m.bias || !m.bias->isExpression)
      return;
    const ast::BiasDecl &b = *m.bias;
    if (b.predictionName == b.targetName)
      diags.error(b.loc, "the bias's prediction and target need different "
                         "names, both are '" +
                             b.predictionName + "'");
    for (const std::string &n : std::set<std::string>{b.predictionName, b.targetName})
      if (const ast::ResolvedParam *p = findParam(n)) {
        diags.error(b.loc, "bias argument '" + n + "' has the same name as a param");
        diags.note(p->loc, "param '" + n + "' is declared here");
      }
  }

  void resolveGateNames() {
    std::set<std::string> reserved = {"y", "v"};
    if (m.bias && m.bias->isExpression)
      reserved.insert({m.bias->predictionName, m.bias->targetName});
    for (const ast::GateDecl &g : m.gates) {
      if (const ast::ResolvedGate *first = r.findGate(g.name)) {
        diags.error(g.loc, "duplicate gate '" + g.name + "'");
        diags.note(first->loc, "first declaration of '" + g.name + "' is here");
        continue;
      }
      if (const ast::ResolvedParam *p = findParam(g.name)) {
        diags.error(g.loc, "gate '" + g.name + "' has the same name as a param");
        diags.note(p->loc, "param '" + g.name + "' is declared here");
      } else if (reserved.count(g.name)) {
        diags.error(g.loc, "gate name '" + g.name +
                               "' is reserved for the bias's prediction and "
                               "target");
      }
      if (g.channel && g.axis != "dk" && g.axis != "dv" && !g.axis.empty())
        diags.error(g.axisLoc, "unknown channel axis '" + g.axis +
                                   "': expected 'dk' (keys) or 'dv' (values)");
      ast::ResolvedGate rg;
      rg.name = g.name;
      if (g.range)
        rg.range = resolveGateRange(g);
      rg.channel = g.channel;
      rg.axis = g.channel ? g.axis : "";
      rg.loc = g.loc;
      r.gates.push_back(rg);
    }
  }

  /// `inf` or `-inf` written as a whole end of a range (a param named `inf`
  /// would take precedence).
  std::optional<double> infiniteEnd(const Expr &e) {
    auto isInf = [&](const Expr &x) {
      return x.kind == Expr::Kind::Name && x.name == "inf" && !findParam("inf");
    };
    if (isInf(e))
      return HUGE_VAL;
    if (e.kind == Expr::Kind::Unary && isInf(*e.operands.at(0)))
      return -HUGE_VAL;
    return std::nullopt;
  }

  /// `in (lo, hi]`: each end a constant expression or +-inf; an infinite end
  /// must be open, and the interval must hold at least one value. nullopt
  /// after an error.
  std::optional<ast::GateRange> resolveGateRange(const ast::GateDecl &g) {
    const ast::GateRangeDecl &d = *g.range;
    const std::string what = "the range of gate '" + g.name + "'";
    int before = diags.errors;
    auto end = [&](const ExprPtr &e, bool closed, bool upper) -> double {
      if (std::optional<double> inf = infiniteEnd(*e)) {
        if (closed)
          diags.error(upper ? d.closeLoc : d.loc,
                      "an infinite end of " + what + " must be open: write '" +
                          (upper ? printExpr(*e) + ")'" : "(" + printExpr(*e) + "'"));
        return *inf;
      }
      auto value = evalConstant(*e, what);
      return value ? value->first : 0.0;
    };
    ast::GateRange range;
    range.loClosed = d.loClosed;
    range.hiClosed = d.hiClosed;
    range.lo = end(d.lo, d.loClosed, /*upper=*/false);
    range.hi = end(d.hi, d.hiClosed, /*upper=*/true);
    if (diags.errors != before)
      return std::nullopt;
    if (range.lo > range.hi) {
      diags.error(d.loc, what + " " + range.str() + " is empty: its lower end " +
                             "is above its upper end");
      return std::nullopt;
    }
    if (range.lo == range.hi && !(range.loClosed && range.hiClosed)) {
      diags.error(d.loc, what + " " + range.str() + " is empty" +
                             (std::isinf(range.lo)
                                  ? std::string()
                                  : " (an open end excludes the only value; '[" +
                                        formatNumber(range.lo) + ", " +
                                        formatNumber(range.hi) +
                                        "]' is the single value)"));
      return std::nullopt;
    }
    return range;
  }

  void resolveGateDims() {
    for (ast::ResolvedGate &g : r.gates) {
      g.dim = !g.channel || !memory ? 1 : g.axis == "dk" ? r.dk : r.dv;
      if (memory && g.channel && !memory->acceptsChannelGates()) {
        diags.error(g.loc, "channel gate '" + g.name +
                               "' needs a linear memory: memory '" +
                               r.memory.name +
                               "' takes only scalar gates for now");
        diags.note(r.memory.loc, "memory '" + r.memory.name +
                                     "' is declared here");
      }
    }
  }

  //--- inits ------------------------------------------------------------------

  /// `init S = kind(args);`: each state once, a known kind, its arguments
  /// (zeros: none; identity, uniform: an optional non-zero `scale`; normal: a
  /// positive `scale` and an integer `seed`, both required). Whether S is a
  /// state of the module is the dialect's check: it owns the state names.
  void resolveInits() {
    for (const ast::InitDecl &d : m.inits) {
      if (const ast::ResolvedInit *first = findInit(d.state)) {
        diags.error(d.loc, "state '" + d.state + "' is initialised twice");
        diags.note(first->loc, "first init of '" + d.state + "' is here");
        continue;
      }
      if (auto init = resolveInit(d))
        r.inits.push_back(*init);
    }
  }

  const ast::ResolvedInit *findInit(const std::string &state) const {
    for (const ast::ResolvedInit &i : r.inits)
      if (i.state == state)
        return &i;
    return nullptr;
  }

  std::optional<ast::ResolvedInit> resolveInit(const ast::InitDecl &d) {
    const ast::Component &c = d.value;
    std::optional<StateInit::Kind> kind = StateInit::parse(c.name);
    if (!kind) {
      diags.error(c.loc, "unknown init '" + c.name + "' for state '" + d.state +
                             "': expected 'zeros', 'identity', 'uniform' or 'normal'");
      return std::nullopt;
    }
    const bool normal = *kind == StateInit::Kind::Normal;
    std::vector<std::string> names;
    if (*kind != StateInit::Kind::Zeros)
      names.push_back("scale");
    if (normal)
      names.push_back("seed");
    const std::string title = "init '" + c.name + "'";
    int before = diags.errors;
    std::map<std::string, const ast::Arg *> bound;
    size_t positional = 0;
    for (const ast::Arg &a : c.args) {
      std::string name = a.name;
      if (!a.boundName.empty()) {
        diags.error(a.loc, "argument '" + a.name + "' of " + title +
                               " is not a function: write '" + a.name + " = value'");
        continue;
      }
      if (name.empty()) {
        if (positional >= names.size()) {
          diags.error(a.loc, title + " takes " +
                                 (names.empty() ? std::string("no arguments")
                                                : "at most " + std::to_string(names.size()) +
                                                      " (" + quotedList(names) + ")"));
          continue;
        }
        name = names[positional++];
      } else if (std::find(names.begin(), names.end(), name) == names.end()) {
        diags.error(a.loc, title + " has no argument '" + name + "'" +
                               (names.empty() ? " (it takes none)"
                                              : "; expected " + quotedList(names)));
        continue;
      }
      if (!bound.emplace(name, &a).second)
        diags.error(a.loc, "argument '" + name + "' of " + title + " is given twice");
    }
    ast::ResolvedInit out{d.state, c.name, std::nullopt, std::nullopt, d.loc};
    if (auto it = bound.find("scale"); it != bound.end()) {
      const ast::Arg &a = *it->second;
      if (auto v = evalConstant(*a.value, "the scale of " + title)) {
        if (normal && v->first <= 0)
          diags.error(a.loc, "the scale of " + title + " is a standard deviation and "
                             "must be > 0, got " + formatNumber(v->first));
        else if (v->first == 0)
          diags.error(a.loc, "a scale of 0 makes " + title + " all zeros: write 'init " +
                                 d.state + " = zeros;'");
        else
          out.scale = v->first;
      }
    } else if (normal) {
      diags.error(c.loc, title + " requires its standard deviation 'scale' (e.g. 'init " +
                             d.state + " = normal(0.02, seed = 1);')");
    }
    if (auto it = bound.find("seed"); it != bound.end()) {
      const ast::Arg &a = *it->second;
      // Seeds are exact integers: a double holds every one up to 2^53.
      constexpr double kMaxSeed = 9007199254740992.0;
      if (auto v = evalConstant(*a.value, "the seed of " + title)) {
        if (!v->second || v->first < 0 || v->first > kMaxSeed)
          diags.error(a.loc, "the seed of " + title + " must be an integer in [0, 2^53], "
                             "got " + showNumber(v->first, v->second));
        else
          out.seed = static_cast<int64_t>(v->first);
      }
    } else if (normal) {
      diags.error(c.loc, title + " requires a 'seed' (an integer; the runtime draws the "
                             "same values from it every time)");
    }
    if (diags.errors != before)
      return std::nullopt;
    return out;
  }

  //--- constants ------------------------------------------------------------

  /// Evaluates a constant expression of numbers and params. Returns the value
  /// and whether it is an integer (integer literals and params, closed under
  /// + - * and exact / and ^). `what` names the context for messages.
  std::optional<std::pair<double, bool>> evalConstant(const Expr &e,
                                                      const std::string &what) {
    using Result = std::optional<std::pair<double, bool>>;
    switch (e.kind) {
    case Expr::Kind::Number:
      return std::make_pair(e.number, e.isInteger);
    case Expr::Kind::Name: {
      if (const ast::ResolvedParam *p = findParam(e.name))
        return std::make_pair(p->value, p->isInteger);
      if (r.findGate(e.name))
        diags.error(e.loc, "gate '" + e.name + "' is a per-token value and "
                           "cannot be used in the constant expression of " +
                               what);
      else
        diags.error(e.loc, "unknown name '" + e.name + "' in " + what +
                               " (expected a param or a number)");
      return std::nullopt;
    }
    case Expr::Kind::Unary: {
      Result a = evalConstant(*e.operands.at(0), what);
      if (!a)
        return std::nullopt;
      return std::make_pair(-a->first, a->second);
    }
    case Expr::Kind::Binary: {
      if (isComparison(e.op)) {
        diags.error(e.loc, kComparisonMisuse);
        return std::nullopt;
      }
      Result a = evalConstant(*e.operands.at(0), what);
      Result b = evalConstant(*e.operands.at(1), what);
      if (!a || !b)
        return std::nullopt;
      double x = a->first, y = b->first, v = 0;
      bool ints = a->second && b->second;
      if (e.op == "+")
        v = x + y;
      else if (e.op == "-")
        v = x - y;
      else if (e.op == "*")
        v = x * y;
      else if (e.op == "/")
        v = x / y;
      else
        v = std::pow(x, y);
      return finite(e, what, v, ints && v == std::floor(v));
    }
    case Expr::Kind::Call: {
      auto fn = functions().find(e.name);
      if (fn == functions().end() || fn->second.reduces ||
          e.name == "where") {
        diags.error(e.loc, "function '" + e.name +
                               "' cannot be used in the constant expression "
                               "of " + what);
        return std::nullopt;
      }
      if (static_cast<int>(e.operands.size()) != fn->second.arity) {
        arityError(e, fn->second.arity);
        return std::nullopt;
      }
      std::vector<double> xs;
      bool ints = true;
      for (const ExprPtr &op : e.operands) {
        Result a = evalConstant(*op, what);
        if (!a)
          return std::nullopt;
        xs.push_back(a->first);
        ints = ints && a->second;
      }
      static const std::map<std::string, double (*)(double)> unary = {
          {"abs", [](double x) { return std::fabs(x); }},
          {"sign", [](double x) { return double((x > 0) - (x < 0)); }},
          {"tanh", [](double x) { return std::tanh(x); }},
          {"sqrt", [](double x) { return std::sqrt(x); }},
          {"exp", [](double x) { return std::exp(x); }},
          {"log", [](double x) { return std::log(x); }},
          {"cosh", [](double x) { return std::cosh(x); }}};
      double v = e.name == "min"   ? std::min(xs[0], xs[1])
                 : e.name == "max" ? std::max(xs[0], xs[1])
                                   : unary.at(e.name)(xs[0]);
      bool keepsInt = e.name == "min" || e.name == "max" || e.name == "abs" ||
                      e.name == "sign";
      return finite(e, what, v, ints && keepsInt);
    }
    }
    return std::nullopt;
  }

  std::optional<std::pair<double, bool>>
  finite(const Expr &e, const std::string &what, double v, bool isInt) {
    if (!std::isfinite(v)) {
      diags.error(e.loc, "the constant expression of " + what +
                             " is not a finite number");
      return std::nullopt;
    }
    return std::make_pair(v, isInt);
  }

  void arityError(const Expr &call, int arity) {
    diags.error(call.loc, "function '" + call.name + "' takes " +
                              std::to_string(arity) + " argument" +
                              (arity == 1 ? "" : "s") + ", got " +
                              std::to_string(call.operands.size()));
  }

  //--- components -----------------------------------------------------------

  std::optional<ast::ResolvedComponent>
  resolveComponent(const ast::Component &c, Role role) {
    const Choice *definition = registry().find(role, c.name);
    if (!definition) {
      diags.error(c.loc, std::string("unknown ") + roleName(role) + " '" + c.name +
                             "': expected " + registry().namesOf(role));
      return std::nullopt;
    }
    const std::vector<ArgSpec> specArgs = definition->args();
    int before = diags.errors;
    std::string title = std::string(roleName(role)) + " '" + c.name + "'";
    // Bind written arguments to the spec's slots.
    std::vector<const ast::Arg *> bound(specArgs.size(), nullptr);
    std::vector<bool> flagSet(specArgs.size(), false);
    std::vector<ast::SourceLoc> flagLocs(specArgs.size());
    size_t positional = 0;
    bool sawNamed = false;
    auto slotOf = [&](const std::string &name) -> int {
      for (size_t i = 0; i < specArgs.size(); ++i)
        if (name == specArgs[i].name)
          return static_cast<int>(i);
      return -1;
    };
    auto bind = [&](int slot, const ast::Arg &a) {
      if (bound[slot] || flagSet[slot]) {
        diags.error(a.loc, "argument '" + std::string(specArgs[slot].name) +
                               "' of " + title + " is given twice");
        if (bound[slot])
          diags.note(bound[slot]->loc, "first given here");
        return;
      }
      bound[slot] = &a;
    };
    for (const ast::Arg &a : c.args) {
      if (!a.name.empty()) {
        sawNamed = true;
        int slot = slotOf(a.name);
        if (slot < 0) {
          std::vector<std::string> names;
          for (const ArgSpec &s : specArgs)
            names.push_back(s.name);
          diags.error(a.loc, title + " has no argument '" + a.name + "'" +
                                 (names.empty() ? " (it takes none)"
                                                : "; expected " + quotedList(names)));
          continue;
        }
        bind(slot, a);
        continue;
      }
      // A bare flag name sets the flag wherever it stands (`lp(3, smooth)`).
      if (a.value && a.value->kind == Expr::Kind::Name) {
        int slot = slotOf(a.value->name);
        if (slot >= 0 && (specArgs[slot].accepts & kFlag)) {
          if (bound[slot] || flagSet[slot])
            diags.error(a.loc, "flag '" + a.value->name + "' of " + title +
                                   " is given twice");
          flagSet[slot] = true;
          flagLocs[slot] = a.loc;
          continue;
        }
      }
      if (sawNamed) {
        diags.error(a.loc, "positional argument after a named argument in " +
                               title);
        continue;
      }
      if (positional >= specArgs.size()) {
        diags.error(a.loc, "too many arguments for " + title + " (it takes " +
                               std::to_string(specArgs.size()) + ")");
        continue;
      }
      bind(static_cast<int>(positional++), a);
    }

    ast::ResolvedComponent out;
    out.name = c.name;
    out.loc = c.loc;
    for (size_t i = 0; i < specArgs.size(); ++i) {
      const ArgSpec &as = specArgs[i];
      ast::ArgValue v;
      if (flagSet[i]) {
        v.number = 1;
        v.loc = flagLocs[i];
      } else if (bound[i]) {
        auto value = resolveArg(as, *bound[i], title);
        if (!value)
          continue;
        v = *value;
      } else if (as.defaultValue) {
        v.loc = c.loc;
        bool isInt;
        if (as.accepts & kKeyword) {
          v.kind = ast::ArgValue::Kind::Keyword;
          v.name = as.defaultValue;
        } else {
          parseNumber(as.defaultValue, v.number, isInt);
        }
      } else {
        diags.error(c.loc, title + " requires argument '" + as.name + "' (" +
                               describeAccepts(as) + ")");
        continue;
      }
      out.args[as.name] = v;
    }
    if (diags.errors != before)
      return std::nullopt;
    return out;
  }

  /// Wrong values are reported at the argument (`delta = x` or positional
  /// `x`); a binary expression's own location is its operator.
  /// `map(A) = expr`: an element-wise function of its parameter (renamed
  /// "x"), with params substituted; no gates and no reductions.
  std::optional<ast::ArgValue> resolveFunctionArg(const ArgSpec &spec,
                                                  const ast::Arg &arg,
                                                  const std::string &what) {
    if (!(spec.accepts & kFunction)) {
      diags.error(arg.loc, what + " is not a function: write '" +
                               std::string(spec.name) + " = value'");
      return std::nullopt;
    }
    Shape shape;
    ExprPtr body = checkBiasExpr(*arg.value, {{arg.boundName, "x"}}, shape);
    if (!body)
      return std::nullopt;
    bool ok = shape == Shape::Vector;
    std::function<void(const Expr &)> scan = [&](const Expr &e) {
      if (e.kind == Expr::Kind::Name && e.name != "x") {
        diags.error(e.loc, what + " may use only its parameter '" +
                               arg.boundName + "' and params, not '" + e.name +
                               "'");
        ok = false;
      }
      if (e.kind == Expr::Kind::Call && (e.name == "sum" || e.name == "norm")) {
        diags.error(e.loc, what + " must be element-wise: '" + e.name +
                               "' reduces");
        ok = false;
      }
      for (const ExprPtr &op : e.operands)
        scan(*op);
    };
    scan(*body);
    if (ok && shape != Shape::Vector)
      diags.error(arg.value->loc, what + " must depend on '" + arg.boundName + "'");
    if (!ok || shape != Shape::Vector)
      return std::nullopt;
    ast::ArgValue v;
    v.kind = ast::ArgValue::Kind::Function;
    v.function = body;
    v.loc = arg.loc;
    return v;
  }

  std::optional<ast::ArgValue> resolveArg(const ArgSpec &spec,
                                          const ast::Arg &arg,
                                          const std::string &title) {
    const Expr &e = *arg.value;
    std::string what = "argument '" + std::string(spec.name) + "' of " + title;
    auto wrong = [&](const std::string &found) {
      diags.error(arg.loc, what + " must be " + describeAccepts(spec) +
                             ", found " + found);
      return std::nullopt;
    };
    ast::ArgValue v;
    v.loc = e.loc;
    if (!arg.boundName.empty())
      return resolveFunctionArg(spec, arg, what);
    if (e.kind == Expr::Kind::Name && !findParam(e.name)) {
      if (const ast::ResolvedGate *g = r.findGate(e.name)) {
        if (!(spec.accepts & (g->channel ? kChannelGate : kScalarGate)))
          return wrong((g->channel ? "channel gate '" : "scalar gate '") +
                       e.name + "'");
        // A declared range must fit what the argument accepts as a number: a
        // gate declared in (0, 2] cannot be a decay, whose values are in (0, 1].
        Interval admitted = intervalOf(spec.range);
        if (g->range && !admitted.includes({g->range->lo, g->range->hi,
                                            g->range->loClosed, g->range->hiClosed})) {
          diags.error(e.loc, "gate '" + e.name + "' is declared in " +
                                 g->range->str() + ", but " + what +
                                 " must be in " + admitted.str());
          diags.note(g->loc, "gate '" + e.name + "' is declared here");
          return std::nullopt;
        }
        v.kind = ast::ArgValue::Kind::Gate;
        v.name = e.name;
        return v;
      }
      if (spec.accepts & kKeyword) {
        for (const char *k : spec.keywords)
          if (e.name == k) {
            v.kind = ast::ArgValue::Kind::Keyword;
            v.name = e.name;
            return v;
          }
        return wrong("'" + e.name + "'");
      }
      return wrong("unknown name '" + e.name + "'");
    }
    if (!(spec.accepts & (kNumber | kPosInt | kFlag)))
      return wrong("'" + printExpr(e) + "'");
    auto value = evalConstant(e, what);
    if (!value)
      return std::nullopt;
    v.number = value->first;
    if ((spec.accepts & kPosInt) &&
        (!value->second || v.number < 1 || v.number > kMaxWidth))
      return wrong(showNumber(v.number, value->second));
    if ((spec.accepts & kFlag) && v.number != 0 && v.number != 1)
      return wrong(formatNumber(v.number));
    if (!inRange(spec.range, v.number))
      return wrong(formatNumber(v.number));
    return v;
  }

  //--- bias -------------------------------------------------------------------

  bool resolveBias(const ast::BiasDecl &b) {
    int before = diags.errors;
    r.bias.loc = b.loc;
    std::map<std::string, std::string> rename = {{"y", "y"}, {"v", "v"}};
    ExprPtr source;
    if (b.isExpression) {
      r.bias.name = "expression";
      r.bias.kind = ast::ResolvedBias::Kind::Loss;
      rename = {{b.predictionName, "y"}, {b.targetName, "v"}};
      source = b.expr;
    } else {
      auto c = resolveComponent(b.builtin, Role::Bias);
      if (!c)
        return false;
      const BiasChoice &definition = *registry().findBias(c->name);
      r.bias.name = c->name;
      r.bias.args = c->args;
      bool useSignal = definition.usesSignal(lookup(*c));
      r.bias.kind = useSignal ? ast::ResolvedBias::Kind::ErrorSignal
                              : ast::ResolvedBias::Kind::Loss;
      std::string text = useSignal ? definition.signal() : definition.loss();
      source = parseExpression("<builtin " + c->name + ">", text, diags);
      if (!source)
        return false;
      source = substituteArgs(*source, c->args, b.builtin.loc);
    }
    Shape shape;
    ExprPtr expr = checkBiasExpr(*source, rename, shape);
    if (!expr || diags.errors != before)
      return false;
    if (isBool(shape)) {
      diags.error(expr->loc, kComparisonMisuse);
      return false;
    }
    if (r.bias.kind == ast::ResolvedBias::Kind::Loss && shape != Shape::Scalar) {
      diags.error(b.isExpression ? expr->loc : b.loc,
                  "bias must reduce to a scalar: wrap it in sum(...)");
      return false;
    }
    if (r.bias.kind == ast::ResolvedBias::Kind::ErrorSignal &&
        shape != Shape::Vector) {
      diags.error(b.loc, "the error signal of bias '" + r.bias.name +
                             "' must be a vector");
      return false;
    }
    r.bias.expr = expr;
    return true;
  }

  /// Replaces a built-in's argument names by their values; every node takes
  /// the user's location (the component name, or the argument's own).
  ExprPtr substituteArgs(const Expr &e,
                         const std::map<std::string, ast::ArgValue> &args,
                         const ast::SourceLoc &loc) {
    if (e.kind == Expr::Kind::Name) {
      auto it = args.find(e.name);
      if (it != args.end()) {
        const ast::ArgValue &a = it->second;
        if (a.kind == ast::ArgValue::Kind::Gate)
          return makeName(a.name, a.loc);
        return makeNumber(a.number, a.number == std::floor(a.number), a.loc);
      }
    }
    auto out = std::make_shared<Expr>(e);
    out->loc = loc;
    for (ExprPtr &op : out->operands)
      op = substituteArgs(*op, args, loc);
    return out;
  }

  /// Copies a bias expression with params substituted and y/v renamed, and
  /// computes its shape. Returns nullptr after reporting errors (it still
  /// visits every operand, so all of them are reported).
  ExprPtr checkBiasExpr(const Expr &e,
                        const std::map<std::string, std::string> &rename,
                        Shape &shape) {
    shape = Shape::Scalar;
    switch (e.kind) {
    case Expr::Kind::Number:
      return std::make_shared<Expr>(e);
    case Expr::Kind::Name: {
      auto it = rename.find(e.name);
      if (it != rename.end()) {
        shape = Shape::Vector;
        return makeName(it->second, e.loc);
      }
      if (const ast::ResolvedGate *g = r.findGate(e.name)) {
        if (g->channel && g->axis == "dk") {
          diags.error(e.loc, "channel gate '" + e.name +
                                 "' runs along the keys (dk) and cannot be "
                                 "used in the bias, which acts on values (dv)");
          return nullptr;
        }
        shape = g->channel ? Shape::Vector : Shape::Scalar;
        return makeName(e.name, e.loc);
      }
      if (const ast::ResolvedParam *p = findParam(e.name))
        return makeNumber(p->value, p->isInteger, e.loc);
      std::vector<std::string> names;
      for (const auto &[from, to] : rename)
        names.push_back(from);
      diags.error(e.loc, "unknown name '" + e.name + "' in the bias (expected " +
                             quotedList(names) + ", a param or a gate)");
      return nullptr;
    }
    case Expr::Kind::Unary:
    case Expr::Kind::Binary:
    case Expr::Kind::Call: {
      const FunctionSpec *fn = nullptr;
      if (e.kind == Expr::Kind::Call) {
        auto it = functions().find(e.name);
        if (it == functions().end()) {
          diags.error(e.loc, "unknown function '" + e.name + "': expected " +
                                 functionNames());
          return nullptr;
        }
        fn = &it->second;
        if (static_cast<int>(e.operands.size()) != fn->arity) {
          arityError(e, fn->arity);
          return nullptr;
        }
      }
      auto out = std::make_shared<Expr>(e);
      bool ok = true, anyVector = false;
      bool isWhere = fn && e.name == "where";
      for (size_t i = 0; i < out->operands.size(); ++i) {
        ExprPtr &op = out->operands[i];
        Shape s;
        op = checkBiasExpr(*op, rename, s);
        if (!op) {
          ok = false;
          continue;
        }
        if (isWhere && i == 0) {
          if (s == Shape::VectorBool) {
            // One branch per token: the condition is a single truth value.
            diags.error(op->loc, "the condition of where(...) must compare "
                                 "scalars; reduce vectors first (e.g. "
                                 "'norm(y - v) <= delta')");
            ok = false;
          } else if (s != Shape::Bool) {
            diags.error(op->loc, "the condition of where(...) must be a "
                                 "comparison (<, <=, > or >=), found '" +
                                     printExpr(*op) + "'");
            ok = false;
          }
          continue;
        }
        if (isBool(s)) {
          diags.error(op->loc, kComparisonMisuse);
          ok = false;
          continue;
        }
        anyVector = anyVector || s == Shape::Vector;
      }
      if (!ok)
        return nullptr;
      if (e.kind == Expr::Kind::Binary && isComparison(e.op)) {
        shape = anyVector ? Shape::VectorBool : Shape::Bool;
        return out;
      }
      if (fn && fn->reduces && !anyVector) {
        diags.error(e.loc, "'" + e.name +
                               "' reduces a vector to a scalar, but its "
                               "argument is already a scalar");
        return nullptr;
      }
      shape = anyVector && !(fn && fn->reduces) ? Shape::Vector : Shape::Scalar;
      return out;
    }
    }
    return nullptr;
  }

  const ast::Module &m;
  Diags &diags;
  ast::ResolvedModule r;
  // The definitions of the resolved components (null until resolved).
  const MemoryChoice *memory = nullptr;
  const RetentionChoice *retention = nullptr;
  const OptimizerChoice *optimizer = nullptr;
};

} // namespace

std::optional<ast::ResolvedModule>
detail::resolveModule(const ast::Module &module,
                      const std::map<std::string, std::string> &defines,
                      std::optional<int64_t> chunk, Diags &diags) {
  return Sema(module, diags).run(defines, chunk);
}
