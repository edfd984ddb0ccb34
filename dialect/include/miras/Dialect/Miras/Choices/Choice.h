//===- Choice.h - The four MIRAS choices as definitions ---------*- C++ -*-===//
//
// A memory module is four choices (MIRAS): a memory architecture, an
// attentional bias, a retention and an optimizer. Each kind of each choice
// (`linear`, `l2`, `lq`, `momentum`, ...) is one C++ class deriving from the
// role's base below, defined once in `dialect/lib/Miras/Choices/<Role>s.cpp`
// and registered in the ChoiceRegistry. Everything else asks that definition:
//
//   * the frontend (Sema) parses a component's arguments against args(),
//   * the frontend and the verifier of miras.module run the same combination
//     rules (checkCombination below, reported through a ChoiceReporter that
//     locates each message in a .miras file or on an op),
//   * miras-derive-update asks the memory for its weights and forward
//     function, the retention for its mirror map and its step, the optimizer
//     for the extra states it carries and the update it makes,
//   * `mirasc --describe-choices` prints docs/CHOICES.md from summary(),
//     math() and args().
//
// The spec-level ops (miras.memory, miras.retention, miras.optimizer) carry
// the definition as a typed attribute (MirasAttrs.td), resolved once when the
// op is built or parsed: a kind the registry does not know is a located
// error, and no pass compares kind names.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_DIALECT_MIRAS_CHOICES_CHOICE_H
#define MIRAS_DIALECT_MIRAS_CHOICES_CHOICE_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Value.h"
#include "mlir/IR/ValueRange.h"
#include "mlir/Support/LogicalResult.h"
#include "llvm/ADT/SmallVector.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace miras {
class MathBuilder;
class StepContext;
} // namespace miras

namespace miras::choices {

//===----------------------------------------------------------------------===//
// Arguments
//===----------------------------------------------------------------------===//

enum class Role { Memory, Bias, Retention, Optimizer };
const char *roleName(Role role);

/// What an argument accepts (a bit set).
enum Accept : unsigned {
  kNumber = 1,      // a constant expression of numbers and params
  kScalarGate = 2,  // a scalar gate's name
  kChannelGate = 4, // a channel gate's name
  kKeyword = 8,     // one of ArgSpec::keywords
  kFlag = 16,       // 0/1; a bare positional `name` sets it
  kPosInt = 32,     // a positive integer constant
  kFunction = 64,   // `name(x) = expr`, element-wise in x (a user map)
};

/// Constraint on a number (checked after evaluation).
enum class Range {
  Any,
  Positive,
  NonNegative,
  UnitInterval,   // (0, 1]
  ClosedUnit,     // [0, 1]
  GreaterThanOne, // > 1 (with kPosInt: an integer >= 2)
};
bool inRange(Range range, double value);

/// An interval of the real line, open or closed at each end (an infinite end
/// is open): what a Range admits, and what a gate declares (`in (0, 1]`).
struct Interval {
  double lo, hi;
  bool loClosed, hiClosed;

  bool contains(double x) const {
    return (loClosed ? x >= lo : x > lo) && (hiClosed ? x <= hi : x < hi);
  }
  /// Ends that are numbers, in order, infinite ends open.
  bool wellFormed() const {
    return !std::isnan(lo) && !std::isnan(hi) && lo <= hi && !(loClosed && lo == -HUGE_VAL) &&
           !(hiClosed && hi == HUGE_VAL);
  }
  /// Whether every value of `inner` (non-empty) lies in this interval.
  bool includes(const Interval &inner) const;
  /// Interval notation: "(0, 1]", "[0.5, inf)".
  std::string str() const;
};
/// The values a Range admits; a gate passed to an argument must be declared
/// within it.
Interval intervalOf(Range range);

struct ArgSpec {
  const char *name;
  unsigned accepts;
  const char *defaultValue = nullptr; // nullptr: required
  Range range = Range::Any;
  std::vector<const char *> keywords = {};
};

/// "a number in (0, 1] or a scalar gate": what `spec` accepts, for messages.
std::string describeAccepts(const ArgSpec &spec);

/// One resolved argument, as the frontend and the dialect both see it.
struct ArgValue {
  enum class Kind { Absent, Number, Gate, Keyword, Function };
  Kind kind = Kind::Absent;
  double number = 0;
  std::string name; // the gate or the keyword
  bool channelGate = false;
  std::string axis; // a channel gate's axis: "dk" or "dv"

  bool isNumber(double value) const {
    return kind == Kind::Number && number == value;
  }
};

/// A component's resolved arguments by name (Sema's map, or an op's
/// dictionary attribute): a concrete class over a lookup function, so that
/// each side supplies its own without a class hierarchy.
class ArgLookup {
public:
  using Getter = std::function<ArgValue(const std::string &)>;
  explicit ArgLookup(Getter getter) : getter(std::move(getter)) {}

  ArgValue get(const std::string &name) const { return getter(name); }
  double number(const std::string &name, double fallback) const;
  std::string keyword(const std::string &name, const std::string &fallback) const;
  bool flag(const std::string &name) const { return number(name, 0) != 0; }

private:
  Getter getter;
};

//===----------------------------------------------------------------------===//
// The four roles
//===----------------------------------------------------------------------===//

class MemoryChoice;
class BiasChoice;
class RetentionStep;
class RetentionChoice;
class OptimizerChoice;

/// Where a combination rule reports: at a component, or at one of its
/// arguments (`arg`, empty for the component itself). Sema locates these in
/// the .miras file, the verifier on the component's op.
struct ChoiceReporter {
  std::function<void(Role at, const std::string &arg, const std::string &message)> error;
  std::function<void(Role at, const std::string &message)> note;
};

/// The four choices of one module, as the combination rules see them.
struct ModuleChoices {
  const MemoryChoice &memory;
  const ArgLookup &memoryArgs;
  /// Null for a bias written as an expression.
  const BiasChoice *bias;
  std::string biasName;
  const RetentionChoice &retention;
  const ArgLookup &retentionArgs;
  const OptimizerChoice &optimizer;
  const ArgLookup &optimizerArgs;
  int64_t chunk;
};

/// What every kind has: a name, its arguments and its documentation.
class Choice {
public:
  virtual ~Choice();
  virtual Role role() const = 0;
  virtual const char *name() const = 0;
  /// One line for tables and --help.
  virtual const char *summary() const = 0;
  /// The math of the choice (SPEC's definition in the project's words),
  /// Markdown, for docs/CHOICES.md.
  virtual const char *math() const = 0;
  virtual std::vector<ArgSpec> args() const { return {}; }
  /// Rules this kind imposes on the other choices of its module; the same
  /// function serves Sema (located in the .miras file) and the verifier.
  virtual void checkCombination(const ModuleChoices &, ChoiceReporter &) const {}
};

/// The memory architecture f(W; z).
class MemoryChoice : public Choice {
public:
  Role role() const final { return Role::Memory; }
  /// Key and value widths (dk, dv) from the arguments.
  virtual std::pair<int64_t, int64_t> widths(const ArgLookup &args) const = 0;
  /// f(W; z) = W z with a single [dv, dk] matrix (what closed-form steps
  /// that solve the l2 problem exactly, and decays inside the delta step,
  /// need).
  virtual bool isLinear() const { return false; }
  /// A state that is a vector, not matrices (no rows to normalise).
  virtual bool hasVectorState() const { return false; }
  virtual bool acceptsChannelGates() const { return true; }
  /// The weight tensors, in the order they are applied.
  virtual llvm::SmallVector<mlir::RankedTensorType>
  weightTypes(mlir::MLIRContext *ctx, int64_t dk, int64_t dv,
              const ArgLookup &args) const = 0;
  /// Builds f(W; z).
  virtual mlir::Value buildForward(MathBuilder &mb, const ArgLookup &args,
                                   mlir::ValueRange weights, mlir::Value z) const = 0;
};

/// The attentional bias: a loss L(y, v) (differentiated by the compiler), or
/// an error signal psi(y, v) given directly. Built-ins are written in the
/// DSL's own expression language over y, v and their argument names; `e` of
/// SPEC's table is `(y - v)`.
class BiasChoice : public Choice {
public:
  Role role() const final { return Role::Bias; }
  /// The loss, or null when the bias is only an error signal.
  virtual const char *loss() const = 0;
  /// The error signal used instead of differentiating the loss, or null.
  virtual const char *signal() const { return nullptr; }
  /// Whether these arguments select the signal over the loss.
  virtual bool usesSignal(const ArgLookup &) const { return loss() == nullptr; }
  /// L = 0.5 ||y - v||^2 (what the implicit step solves exactly).
  virtual bool isHalfSquaredError() const { return false; }
};

/// How a carried state starts when the host gives no initial state: the DSL's
/// `init W = ...;`, miras_state_init of the ABI (the runtime fills it in).
struct StateInit {
  enum class Kind { Zeros, Identity, Uniform, Normal };
  Kind kind = Kind::Zeros;
  /// Identity: the diagonal (default 1); uniform: every entry (default 1/n,
  /// n the length of the state's last axis: the rows f_div and kl normalise,
  /// so each row is uniform on the simplex); normal: the standard deviation
  /// (required). Unset: the default.
  std::optional<double> scale;
  uint64_t seed = 0; // normal only

  /// "zeros", "identity", "uniform", "normal" (the DSL's spelling).
  static const char *spelling(Kind kind);
  static std::optional<Kind> parse(const std::string &spelling);
  /// The scale for a state of per-(batch, head) `shape` (defaults applied).
  double scaleFor(llvm::ArrayRef<int64_t> shape) const;
  /// The values every entry of such a state is drawn from, for checking a
  /// map at them: zeros {0}, identity {0, s} ({s} for a 1 x 1 state), uniform
  /// {s}, normal {-s, 0, s} (one deviation either side, and the mean).
  std::vector<double> representativeValues(llvm::ArrayRef<int64_t> shape) const;
  /// `uniform(0.125)`, `normal(0.02, seed = 7)`: as it would be declared.
  std::string str() const;
};

/// What a retention's start is checked against (RetentionChoice::initProblem).
struct InitialWeight {
  std::string name;                // the carried state, "W", "A1", ...
  llvm::ArrayRef<int64_t> shape;   // per (batch, head)
  const StateInit &init;
  const ArgLookup &retentionArgs;
  /// A user-written element-wise map (`bregman(map(A) = ...)`) at one value;
  /// NaN where it is undefined. Null when the module has none, or when it
  /// cannot be evaluated at compile time.
  std::function<double(double)> userMap;
};

/// How the old state is kept (SPEC section 5): a decay, a coupled or
/// proximal step, or a mirror map with a dual state.
class RetentionChoice : public Choice {
public:
  Role role() const final { return Role::Retention; }
  /// Whether the carried state is a dual A read as W = map(A).
  virtual bool isMirror() const { return false; }
  /// Whether, with these arguments, all it does happens before the gradient
  /// (RetentionStep::beforeGradient), so that steps after it are plain.
  virtual bool actsOnlyBeforeGradient(const ArgLookup &) const { return false; }
  /// W = map(A) (mirror retentions only).
  virtual mlir::Value buildMirrorMap(StepContext &, mlir::Value dual) const;
  /// Starts this retention's part of one step (reads its arguments).
  virtual std::unique_ptr<RetentionStep> beginStep(StepContext &ctx) const;
  /// Why the first step is undefined from this initial weight (its map or
  /// its normaliser is 0/0, a log of a non-positive number, ...), and what to
  /// declare instead; empty when it is defined. Asked for each memory weight
  /// (W, or its dual A), not for optimizer states. The mirror retentions ask
  /// their user map at the init's representative values.
  virtual std::string initProblem(const InitialWeight &weight) const;
};

/// What a retention does inside one derived step. The optimizer drives:
/// before the gradient it asks beforeGradient(), then retain() (momentum) or
/// gdStep() (gd-like optimizers) per weight.
class RetentionStep {
public:
  explicit RetentionStep(StepContext &ctx) : ctx(ctx) {}
  virtual ~RetentionStep();
  /// The state as the gradient sees it and the update starts from (l2
  /// applied before the gradient decays it here). Default: unchanged.
  virtual mlir::Value beforeGradient(mlir::Value state);
  /// The optimizer's learning rate, once the gradient is built (ops are
  /// built at the retention's location).
  virtual void setRate(mlir::Value lr) { this->lr = lr; }
  /// The kept part of the state: W' = retain(W) + (the optimizer's update).
  /// `kept` is beforeGradient(state).
  virtual mlir::Value retain(mlir::Value state, mlir::Value kept);
  /// One gradient step: retain(W) - lr g by default.
  virtual mlir::Value gdStep(mlir::Value state, mlir::Value kept, mlir::Value gradient);

protected:
  StepContext &ctx;
  mlir::Value lr;
};

/// The memory algorithm: how one step is taken from the gradient.
class OptimizerChoice : public Choice {
public:
  Role role() const final { return Role::Optimizer; }
  /// Stems of the states it carries next to each weight ("S" for momentum),
  /// named S, S1, S2, ... in the step signature and the library's metadata.
  virtual std::vector<std::string> extraStates() const { return {}; }
  /// (k, v) pairs per token (multistep's n).
  virtual int64_t stepsPerToken(const ArgLookup &) const { return 1; }
  /// The argument whose gate gets one value per step, if any.
  virtual const char *perStepArg() const { return nullptr; }
  /// One plain gradient step per token, `W' = retention step(W, lr g)`: what
  /// retentions whose closed form is a single gd step need.
  virtual bool isGradientDescent() const { return false; }
  /// Gradients accumulated in the dual of a mirror retention (FTRL).
  virtual bool accumulatesDual() const { return false; }
  /// Builds the new states (weights, then the extra states) of one step.
  virtual mlir::FailureOr<llvm::SmallVector<mlir::Value>>
  buildUpdate(StepContext &ctx) const = 0;
};

//===----------------------------------------------------------------------===//
// The registry
//===----------------------------------------------------------------------===//

class ChoiceRegistry {
public:
  /// The process-wide registry, with every built-in registered.
  static ChoiceRegistry &get();

  /// Adds a kind; false if its role already has one of that name.
  bool add(std::unique_ptr<Choice> choice);

  const Choice *find(Role role, const std::string &name) const;
  const MemoryChoice *findMemory(const std::string &name) const;
  const BiasChoice *findBias(const std::string &name) const;
  const RetentionChoice *findRetention(const std::string &name) const;
  const OptimizerChoice *findOptimizer(const std::string &name) const;
  /// The kinds of a role, in registration order.
  std::vector<const Choice *> all(Role role) const;
  /// "'none', 'l2', ... or 'f_div'": the kinds of a role, for messages.
  std::string namesOf(Role role) const;

private:
  ChoiceRegistry();
  std::vector<std::unique_ptr<Choice>> choices;
};

// Each role's file registers its built-ins.
void registerMemories(ChoiceRegistry &registry);
void registerBiases(ChoiceRegistry &registry);
void registerRetentions(ChoiceRegistry &registry);
void registerOptimizers(ChoiceRegistry &registry);

/// Runs every combination rule of the module's four choices, in a fixed
/// order (optimizer, retention, memory), reporting each problem once.
void checkCombination(const ModuleChoices &module, ChoiceReporter &reporter);

/// Why the optimizer cannot run with this chunk size (SPEC section 7), or
/// empty: several steps per token are taken at the current state, not at a
/// chunk's anchor.
std::string chunkProblem(const OptimizerChoice &optimizer,
                         const ArgLookup &optimizerArgs, int64_t chunk);

/// docs/CHOICES.md: every registered kind, its arguments and its math.
std::string describeChoices();

/// 'a', 'b' or 'c'.
std::string quotedList(const std::vector<std::string> &items);

/// Sizes beyond these are certainly typos (dimensions), or beyond what any
/// kernel is built for (the chunk of SPEC section 7).
constexpr int64_t kMaxWidth = int64_t(1) << 24;
constexpr int64_t kMaxChunk = 65536;

} // namespace miras::choices

#endif
