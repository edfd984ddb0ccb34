//===- Registry.cpp - The registry of choices and what all kinds share ----===//
#include "miras/Dialect/Miras/Choices/Choice.h"
#include "miras/Dialect/Miras/Choices/StepContext.h"

#include <cmath>
#include <sstream>

using namespace miras;
using namespace miras::choices;

const char *choices::roleName(Role role) {
  switch (role) {
  case Role::Memory:
    return "memory";
  case Role::Bias:
    return "bias";
  case Role::Retention:
    return "retention";
  case Role::Optimizer:
    return "optimizer";
  }
  return "choice";
}

bool choices::inRange(Range range, double v) {
  switch (range) {
  case Range::Any:
    return true;
  case Range::Positive:
    return v > 0;
  case Range::NonNegative:
    return v >= 0;
  case Range::UnitInterval:
    return v > 0 && v <= 1;
  case Range::ClosedUnit:
    return v >= 0 && v <= 1;
  case Range::GreaterThanOne:
    return v > 1;
  }
  return true;
}

Interval choices::intervalOf(Range range) {
  const double inf = HUGE_VAL;
  switch (range) {
  case Range::Any:
    return {-inf, inf, false, false};
  case Range::Positive:
    return {0, inf, false, false};
  case Range::NonNegative:
    return {0, inf, true, false};
  case Range::UnitInterval:
    return {0, 1, false, true};
  case Range::ClosedUnit:
    return {0, 1, true, true};
  case Range::GreaterThanOne:
    return {1, inf, false, false};
  }
  return {-inf, inf, false, false};
}

bool Interval::includes(const Interval &inner) const {
  bool loOk = inner.lo > lo || (inner.lo == lo && (loClosed || !inner.loClosed));
  bool hiOk = inner.hi < hi || (inner.hi == hi && (hiClosed || !inner.hiClosed));
  return loOk && hiOk;
}

std::string Interval::str() const {
  auto end = [](double x) {
    if (std::isinf(x))
      return std::string(x < 0 ? "-inf" : "inf");
    std::ostringstream os;
    os << x;
    return os.str();
  };
  return (loClosed ? "[" : "(") + end(lo) + ", " + end(hi) + (hiClosed ? "]" : ")");
}

std::string choices::quotedList(const std::vector<std::string> &items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i)
    out += (i == 0 ? "" : i + 1 == items.size() ? " or " : ", ") +
           ("'" + items[i] + "'");
  return out;
}

std::string choices::describeAccepts(const ArgSpec &spec) {
  if (spec.accepts & kPosInt)
    return spec.range == Range::GreaterThanOne ? "an integer >= 2"
                                               : "a positive integer";
  if (spec.accepts & kFlag)
    return "0 or 1";
  if (spec.accepts & kKeyword)
    return quotedList({spec.keywords.begin(), spec.keywords.end()}) +
           (spec.accepts & kFunction
                ? " or an element-wise function '" + std::string(spec.name) +
                      "(A) = ...'"
                : "");
  std::string num = "a number";
  if (spec.range == Range::Positive)
    num = "a number > 0";
  else if (spec.range == Range::NonNegative)
    num = "a number >= 0";
  else if (spec.range == Range::UnitInterval)
    num = "a number in (0, 1]";
  else if (spec.range == Range::ClosedUnit)
    num = "a number in [0, 1]";
  else if (spec.range == Range::GreaterThanOne)
    num = "a number > 1";
  if (spec.accepts & kChannelGate)
    return num + ", a scalar gate or a channel gate";
  if (spec.accepts & kScalarGate)
    return num + " or a scalar gate";
  return num;
}

double ArgLookup::number(const std::string &name, double fallback) const {
  ArgValue v = get(name);
  return v.kind == ArgValue::Kind::Number ? v.number : fallback;
}

std::string ArgLookup::keyword(const std::string &name,
                               const std::string &fallback) const {
  ArgValue v = get(name);
  return v.kind == ArgValue::Kind::Keyword ? v.name : fallback;
}

Choice::~Choice() = default;
RetentionStep::~RetentionStep() = default;

//===----------------------------------------------------------------------===//
// Retention defaults: nothing is forgotten, W' = W - lr g.
//===----------------------------------------------------------------------===//

mlir::Value RetentionChoice::buildMirrorMap(StepContext &, mlir::Value dual) const {
  return dual;
}

std::unique_ptr<RetentionStep> RetentionChoice::beginStep(StepContext &ctx) const {
  return std::make_unique<RetentionStep>(ctx);
}

/// The user map (if any) at the values the start takes: a retention whose map
/// is element-wise needs it defined at each of them. A built-in map is defined
/// everywhere (or, like lq's at 0, defined there on purpose).
std::string RetentionChoice::initProblem(const InitialWeight &weight) const {
  if (!weight.userMap)
    return "";
  for (double x : weight.init.representativeValues(weight.shape)) {
    double w = weight.userMap(x);
    if (std::isfinite(w))
      continue;
    std::ostringstream os;
    os << "the map of retention '" << name() << "' is not defined at "
       << weight.name << " = " << x << " (it gives "
       << (std::isnan(w) ? "NaN" : w > 0 ? "inf" : "-inf")
       << "), a value of the start of state '" << weight.name << "' ("
       << weight.init.str() << ")";
    // Suggest a start where the map is defined, if a simple one is.
    for (double s : {1.0, 0.5, 2.0})
      if (std::isfinite(weight.userMap(s))) {
        os << ": declare one where it is, e.g. 'init " << weight.name
           << " = uniform(" << s << ");'";
        return os.str();
      }
    os << ": declare an init whose values the map is defined at";
    return os.str();
  }
  return "";
}

const char *StateInit::spelling(Kind kind) {
  switch (kind) {
  case Kind::Zeros:
    return "zeros";
  case Kind::Identity:
    return "identity";
  case Kind::Uniform:
    return "uniform";
  case Kind::Normal:
    return "normal";
  }
  return "zeros";
}

std::optional<StateInit::Kind> StateInit::parse(const std::string &spelling) {
  for (Kind kind : {Kind::Zeros, Kind::Identity, Kind::Uniform, Kind::Normal})
    if (spelling == StateInit::spelling(kind))
      return kind;
  return std::nullopt;
}

double StateInit::scaleFor(llvm::ArrayRef<int64_t> shape) const {
  if (scale)
    return *scale;
  switch (kind) {
  case Kind::Zeros:
    return 0.0;
  case Kind::Identity:
    return 1.0;
  case Kind::Uniform:
    return shape.empty() ? 1.0 : 1.0 / static_cast<double>(shape.back());
  case Kind::Normal:
    return 0.0; // required; the verifier rejects a normal init without one
  }
  return 0.0;
}

std::vector<double> StateInit::representativeValues(llvm::ArrayRef<int64_t> shape) const {
  double s = scaleFor(shape);
  switch (kind) {
  case Kind::Zeros:
    return {0.0};
  case Kind::Identity: {
    int64_t entries = 1;
    for (int64_t d : shape)
      entries *= d;
    return entries == 1 ? std::vector<double>{s} : std::vector<double>{0.0, s};
  }
  case Kind::Uniform:
    return {s};
  case Kind::Normal:
    return {-s, 0.0, s};
  }
  return {0.0};
}

std::string StateInit::str() const {
  std::ostringstream os;
  os << spelling(kind);
  if (kind == Kind::Normal)
    os << "(" << scale.value_or(0.0) << ", seed = " << seed << ")";
  else if (scale && kind != Kind::Zeros)
    os << "(" << *scale << ")";
  return os.str();
}

mlir::Value RetentionStep::beforeGradient(mlir::Value state) { return state; }

mlir::Value RetentionStep::retain(mlir::Value, mlir::Value kept) { return kept; }

mlir::Value RetentionStep::gdStep(mlir::Value state, mlir::Value kept,
                                  mlir::Value gradient) {
  mlir::Value retained = retain(state, kept);
  return ctx.math().sub(retained, ctx.scaled(lr, gradient));
}

//===----------------------------------------------------------------------===//
// The registry
//===----------------------------------------------------------------------===//

ChoiceRegistry::ChoiceRegistry() {
  registerMemories(*this);
  registerBiases(*this);
  registerRetentions(*this);
  registerOptimizers(*this);
}

ChoiceRegistry &ChoiceRegistry::get() {
  static ChoiceRegistry registry;
  return registry;
}

bool ChoiceRegistry::add(std::unique_ptr<Choice> choice) {
  if (find(choice->role(), choice->name()))
    return false;
  choices.push_back(std::move(choice));
  return true;
}

const Choice *ChoiceRegistry::find(Role role, const std::string &name) const {
  for (const std::unique_ptr<Choice> &c : choices)
    if (c->role() == role && name == c->name())
      return c.get();
  return nullptr;
}

const MemoryChoice *ChoiceRegistry::findMemory(const std::string &name) const {
  return static_cast<const MemoryChoice *>(find(Role::Memory, name));
}
const BiasChoice *ChoiceRegistry::findBias(const std::string &name) const {
  return static_cast<const BiasChoice *>(find(Role::Bias, name));
}
const RetentionChoice *ChoiceRegistry::findRetention(const std::string &name) const {
  return static_cast<const RetentionChoice *>(find(Role::Retention, name));
}
const OptimizerChoice *ChoiceRegistry::findOptimizer(const std::string &name) const {
  return static_cast<const OptimizerChoice *>(find(Role::Optimizer, name));
}

std::vector<const Choice *> ChoiceRegistry::all(Role role) const {
  std::vector<const Choice *> out;
  for (const std::unique_ptr<Choice> &c : choices)
    if (c->role() == role)
      out.push_back(c.get());
  return out;
}

std::string ChoiceRegistry::namesOf(Role role) const {
  std::vector<std::string> names;
  for (const Choice *c : all(role))
    names.push_back(c->name());
  return quotedList(names);
}

/// What holds for every mirror retention, whoever defines it: a dual state
/// updated by one gradient step (gd), or accumulating them (ftrl).
static void checkMirror(const ModuleChoices &m, ChoiceReporter &r) {
  if (!m.retention.isMirror() || m.optimizer.isGradientDescent() ||
      m.optimizer.accumulatesDual())
    return;
  r.error(Role::Retention, "",
          "retention '" + std::string(m.retention.name()) +
              "' is a mirror map (it keeps a dual state): mirror retentions "
              "combine with gd only for now, but the optimizer is '" +
              m.optimizer.name() + "'");
  r.note(Role::Optimizer,
         std::string("optimizer '") + m.optimizer.name() + "' is declared here");
}

void choices::checkCombination(const ModuleChoices &module,
                               ChoiceReporter &reporter) {
  module.optimizer.checkCombination(module, reporter);
  checkMirror(module, reporter);
  module.retention.checkCombination(module, reporter);
  module.memory.checkCombination(module, reporter);
}

std::string choices::chunkProblem(const OptimizerChoice &optimizer,
                                 const ArgLookup &optimizerArgs, int64_t chunk) {
  if (chunk == 1 || optimizer.stepsPerToken(optimizerArgs) == 1)
    return "";
  return std::string(optimizer.name()) +
         " needs chunk 1 (each token takes its steps at the current state)";
}

//===----------------------------------------------------------------------===//
// docs/CHOICES.md
//===----------------------------------------------------------------------===//

namespace {
std::string acceptsColumn(const ArgSpec &spec) {
  std::string text = describeAccepts(spec);
  if (spec.accepts & kKeyword)
    text = "one of " + text;
  return text;
}
} // namespace

std::string choices::describeChoices() {
  std::ostringstream os;
  os << "# The four choices\n\n"
     << "<!-- Generated by `mirasc --describe-choices` from the definitions in\n"
     << "     dialect/lib/Miras/Choices/; test/lit/Frontend/choices-doc.test\n"
     << "     fails when this file is out of date. -->\n\n"
     << "A module is four choices (MIRAS): a memory architecture `f(W; z)`, an\n"
     << "attentional bias (the inner loss `L(f(W; k), v)`), a retention (how the\n"
     << "old state is kept) and an optimizer (how one step is taken). Every\n"
     << "kind below is one class in `dialect/lib/Miras/Choices/<Role>s.cpp`;\n"
     << "see `docs/ADDING_A_CHOICE.md` to add one.\n";
  const Role roles[] = {Role::Memory, Role::Bias, Role::Retention, Role::Optimizer};
  const char *titles[] = {"Memories", "Biases", "Retentions", "Optimizers"};
  for (int r = 0; r < 4; ++r) {
    os << "\n## " << titles[r] << "\n";
    for (const Choice *c : ChoiceRegistry::get().all(roles[r])) {
      os << "\n### `" << c->name() << "`\n\n" << c->summary() << "\n\n"
         << c->math() << "\n";
      std::vector<ArgSpec> args = c->args();
      if (args.empty())
        continue;
      os << "\n| argument | accepts | default |\n|---|---|---|\n";
      for (const ArgSpec &a : args)
        os << "| `" << a.name << "` | " << acceptsColumn(a) << " | "
           << (a.defaultValue ? std::string("`") + a.defaultValue + "`"
                              : std::string("required"))
           << " |\n";
    }
  }
  return os.str();
}
