//===- MirasOps.cpp - miras dialect operations ----------------------------===//
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"

#include <optional>
#include <sstream>

#include <cmath>

using namespace mlir;
using namespace miras;

//===----------------------------------------------------------------------===//
// MemoryModuleOp
//===----------------------------------------------------------------------===//

SmallVector<GateOp> MemoryModuleOp::getGates() {
  SmallVector<GateOp> gates;
  for (Operation &op : getBody().front())
    if (auto gate = dyn_cast<GateOp>(op))
      gates.push_back(gate);
  return gates;
}

choices::StateInit MemoryModuleOp::getStateInit(StringRef state) {
  for (Operation &op : getBody().front())
    if (auto init = dyn_cast<InitOp>(op); init && init.getState() == state)
      return init.getStateInit();
  return {};
}

namespace {

using choices::ArgSpec;

/// 1.5, not 1.500000e+00.
std::string formatNumber(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}
using choices::Role;

/// Checks a component's arguments against its definition's table (the one
/// the frontend parses against): known names, gates that exist and are of an
/// accepted kind, numbers in range, keywords from the list. `implicit` names
/// arguments the op carries that are not written (a memory's widths).
LogicalResult verifyArgs(Operation *component, const choices::Choice &definition,
                         DictionaryAttr args, MemoryModuleOp module,
                         ArrayRef<StringRef> implicit = {}) {
  std::vector<ArgSpec> specs = definition.args();
  auto specOf = [&](StringRef name) -> const ArgSpec * {
    for (const ArgSpec &spec : specs)
      if (name == spec.name)
        return &spec;
    return nullptr;
  };
  for (NamedAttribute arg : args) {
    StringRef name = arg.getName().getValue();
    if (llvm::is_contained(implicit, name))
      continue;
    const ArgSpec *spec = specOf(name);
    if (!spec)
      return component->emitOpError("'")
             << definition.name() << "' has no argument '" << name << "'";
    Attribute value = arg.getValue();
    if (isa<FloatAttr, IntegerAttr>(value)) {
      double x = isa<FloatAttr>(value)
                     ? cast<FloatAttr>(value).getValueAsDouble()
                     : static_cast<double>(cast<IntegerAttr>(value).getInt());
      if (!(spec->accepts & (choices::kNumber | choices::kPosInt | choices::kFlag)))
        return component->emitOpError("argument '")
               << name << "' must be " << choices::describeAccepts(*spec);
      bool integral = x == std::floor(x);
      if (((spec->accepts & choices::kPosInt) && (!integral || x < 1)) ||
          ((spec->accepts & choices::kFlag) && x != 0 && x != 1) ||
          !choices::inRange(spec->range, x))
        return component->emitOpError("argument '")
               << name << "' must be " << choices::describeAccepts(*spec)
               << ", got " << formatNumber(x);
      continue;
    }
    if (auto ref = dyn_cast<FlatSymbolRefAttr>(value)) {
      if (!(spec->accepts & (choices::kScalarGate | choices::kChannelGate)))
        return component->emitOpError("argument '")
               << name << "' must be " << choices::describeAccepts(*spec)
               << ", not a gate";
      auto gate = dyn_cast_or_null<GateOp>(
          SymbolTable::lookupSymbolIn(module, ref.getAttr()));
      if (!gate)
        return component->emitOpError("argument '")
               << name << "' refers to undeclared gate " << ref;
      if (gate.getChannel() && !(spec->accepts & choices::kChannelGate))
        return component->emitOpError("argument '")
               << name << "' needs a scalar gate, but " << ref
               << " is a channel gate";
      // The same fit the frontend checks: a gate declared in (0, 2] cannot
      // be a decay, whose values are in (0, 1].
      choices::Interval admitted = choices::intervalOf(spec->range);
      if (gate.getRangeLo() && gate.getRangeHi()) {
        choices::Interval declared{gate.getRangeLo()->convertToDouble(),
                                   gate.getRangeHi()->convertToDouble(),
                                   gate.getRangeLoClosed(), gate.getRangeHiClosed()};
        // (A malformed range is the gate's own error, reported by its verifier.)
        if (declared.wellFormed() && !admitted.includes(declared))
          return component->emitOpError("argument '")
                 << name << "' must be in " << admitted.str() << ", but " << ref
                 << " is declared in " << declared.str();
      }
      continue;
    }
    if (auto keyword = dyn_cast<StringAttr>(value)) {
      bool known = (spec->accepts & choices::kFunction) && keyword == "user";
      for (const char *k : spec->keywords)
        known = known || keyword == k;
      if (!(spec->accepts & choices::kKeyword) || !known)
        return component->emitOpError("argument '")
               << name << "' must be " << choices::describeAccepts(*spec)
               << (spec->accepts & choices::kFunction
                       ? " (\"user\" with a miras.mirror_map)"
                       : "")
               << ", got \"" << keyword.getValue() << "\"";
      continue;
    }
    return component->emitOpError("argument '")
           << name << "' must be a number, a gate symbol or a keyword";
  }
  for (const ArgSpec &spec : specs)
    if (!spec.defaultValue && !args.get(spec.name) &&
        !llvm::is_contained(implicit, spec.name))
      return component->emitOpError("requires argument '") << spec.name << "'";
  return success();
}

/// A user-written mirror map (the scalar region of miras.mirror_map) at one
/// value, in double precision and rounded to f32 as the kernel's result would
/// be; NaN or an infinity where the map is undefined. nullopt when the region
/// holds an op this evaluator does not know (the check is then skipped).
std::optional<double> evaluateMirrorMap(MirrorMapOp map, double x) {
  Block &body = map.getBody().front();
  llvm::DenseMap<Value, double> values;
  values[body.getArgument(0)] = x;
  auto in = [&](Operation &op, unsigned i) { return values.lookup(op.getOperand(i)); };
  for (Operation &op : body.without_terminator()) {
    std::optional<double> r;
    if (auto c = dyn_cast<arith::ConstantOp>(op)) {
      if (auto f = dyn_cast<FloatAttr>(c.getValue()))
        r = f.getValueAsDouble();
    } else if (isa<arith::CmpFOp>(op)) {
      double a = in(op, 0), b = in(op, 1);
      switch (cast<arith::CmpFOp>(op).getPredicate()) {
      case arith::CmpFPredicate::OLT: r = a < b; break;
      case arith::CmpFPredicate::OLE: r = a <= b; break;
      case arith::CmpFPredicate::OGT: r = a > b; break;
      case arith::CmpFPredicate::OGE: r = a >= b; break;
      default: break;
      }
    } else if (isa<arith::SelectOp>(op)) {
      r = in(op, 0) != 0 ? in(op, 1) : in(op, 2);
    } else if (op.getNumOperands() == 1) {
      double a = in(op, 0);
      if (isa<arith::NegFOp>(op)) r = -a;
      else if (isa<math::AbsFOp>(op)) r = std::fabs(a);
      else if (isa<math::ExpOp>(op)) r = std::exp(a);
      else if (isa<math::LogOp>(op)) r = std::log(a);
      else if (isa<math::SqrtOp>(op)) r = std::sqrt(a);
      else if (isa<math::TanhOp>(op)) r = std::tanh(a);
      else if (isa<math::CoshOp>(op)) r = std::cosh(a);
      else if (isa<SignOp>(op)) r = double((a > 0) - (a < 0));
    } else if (op.getNumOperands() == 2) {
      double a = in(op, 0), b = in(op, 1);
      if (isa<arith::AddFOp>(op)) r = a + b;
      else if (isa<arith::SubFOp>(op)) r = a - b;
      else if (isa<arith::MulFOp>(op)) r = a * b;
      else if (isa<arith::DivFOp>(op)) r = a / b;
      else if (isa<math::PowFOp>(op)) r = std::pow(a, b);
      else if (isa<arith::MinimumFOp>(op)) r = std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b);
      else if (isa<arith::MaximumFOp>(op)) r = std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
    }
    if (!r || op.getNumResults() != 1)
      return std::nullopt;
    values[op.getResult(0)] = *r;
  }
  return static_cast<double>(static_cast<float>(
      values.lookup(cast<YieldOp>(body.getTerminator()).getValue())));
}

/// Every miras.init names a state the module carries, once; then the
/// retention is asked whether its first step is defined from each weight's
/// start (a declared one, or zeros), the error located at the miras.init, or
/// at the retention when the start is the default.
LogicalResult verifyInits(MemoryModuleOp module, RetentionOp retention,
                          const choices::ArgLookup &retentionArgs) {
  StepSignature signature = StepSignature::of(module);
  const std::vector<StepSignature::Tensor> &states = signature.getStates();
  llvm::StringMap<InitOp> declared;
  for (Operation &op : module.getBody().front()) {
    auto init = dyn_cast<InitOp>(op);
    if (!init)
      continue;
    bool carried = llvm::any_of(
        states, [&](const StepSignature::Tensor &t) { return t.name == init.getState(); });
    StringRef name = init.getState();
    bool continuation =
        llvm::any_of(signature.getAnchors(),
                     [&](const StepSignature::Tensor &t) { return t.name == name; }) ||
        (signature.numAnchors() && name == "chunk_position");
    if (continuation)
      return init.emitError("state '")
             << name << "' is not initialisable: a chunk's anchors and position "
             << "start every sequence from the weights (position 0); init the weight itself";
    if (!carried) {
      std::vector<std::string> names;
      for (const StepSignature::Tensor &t : states)
        names.push_back(t.name);
      return init.emitError("module '")
             << module.getSymName() << "' has no state '" << init.getState()
             << "' to initialise: its states are " << choices::quotedList(names);
    }
    auto [it, inserted] = declared.try_emplace(init.getState(), init);
    if (!inserted)
      return init.emitError("state '")
                 .append(init.getState(), "' is initialised twice")
                 .attachNote(it->second.getLoc())
             << "first init of '" << init.getState() << "' is here";
  }
  MirrorMapOp map = module.getComponent<MirrorMapOp>();
  std::function<double(double)> userMap;
  if (map && evaluateMirrorMap(map, 0.0))
    userMap = [map](double x) { return *evaluateMirrorMap(map, x); };
  for (unsigned i = 0; i < signature.numWeights(); ++i) {
    const StepSignature::Tensor &state = states[i];
    auto type = cast<RankedTensorType>(state.type);
    InitOp init = declared.lookup(state.name);
    choices::StateInit start = init ? init.getStateInit() : choices::StateInit{};
    std::string problem = retention.getDefinition().initProblem(
        {state.name, type.getShape(), start, retentionArgs, userMap});
    if (problem.empty())
      continue;
    Operation *at = init ? init.getOperation() : retention.getOperation();
    InFlightDiagnostic diag = at->emitError(problem);
    if (!init)
      diag.attachNote(module.getLoc())
          << "state '" << state.name << "' has no init declaration, so it starts from zeros";
    else
      diag.attachNote(retention.getLoc())
          << "retention '" << retention.getDefinition().name() << "' is declared here";
    return failure();
  }
  return success();
}

} // namespace

LogicalResult MemoryModuleOp::verify() {
  // The I64Attr getters are unsigned: read the signed values to reject
  // negative sizes in hand-written IR.
  int64_t dk = getDkAttr().getInt(), dv = getDvAttr().getInt();
  if (dk <= 0 || dv <= 0)
    return emitOpError("widths must be positive, got dk = ")
           << dk << ", dv = " << dv;
  int64_t chunk = getChunkAttr().getInt();
  if (chunk < 1 || chunk > choices::kMaxChunk)
    return emitOpError("chunk must be between 1 and ")
           << choices::kMaxChunk << ", got " << chunk;
  if (getStepsAttr().getInt() < 1)
    return emitOpError("steps must be at least 1, got ")
           << getStepsAttr().getInt();

  auto requireOne = [&](auto component, StringRef what) -> LogicalResult {
    unsigned count = 0;
    for (Operation &op : getBody().front())
      if (isa<decltype(component)>(op))
        ++count;
    if (count == 1)
      return success();
    return emitOpError("must contain exactly one ")
           << what << ", found " << count;
  };
  if (failed(requireOne(MemoryOp(), "miras.memory")) ||
      failed(requireOne(BiasOp(), "miras.bias")) ||
      failed(requireOne(RetentionOp(), "miras.retention")) ||
      failed(requireOne(OptimizerOp(), "miras.optimizer")))
    return failure();

  MemoryOp memory = getComponent<MemoryOp>();
  const choices::MemoryChoice &memoryKind = memory.getDefinition();
  if (!memoryKind.isLinear() && getDk() != getDv())
    return memory.emitOpError("a ")
           << memoryKind.name() << " memory needs dk == dv";
  auto memoryDk = memory.getArgs().getAs<IntegerAttr>("dk");
  auto memoryDv = memory.getArgs().getAs<IntegerAttr>("dv");
  if (!memoryDk || !memoryDv || memoryDk.getInt() != dk ||
      memoryDv.getInt() != dv)
    return memory.emitOpError("dk/dv must match the module's (")
           << dk << ", " << dv << ")";

  for (GateOp gate : getGates()) {
    if (!gate.getChannel())
      continue;
    if (!memoryKind.acceptsChannelGates())
      return gate.emitOpError("a channel gate needs a memory that takes them, "
                              "but the memory is '")
             << memoryKind.name() << "'";
    int64_t expected = gate.getAxis() == "dk" ? getDk() : getDv();
    if (gate.getDim() != expected)
      return gate.emitOpError("channel gate along ")
             << *gate.getAxis() << " must have dim " << expected << ", got "
             << gate.getDim();
  }

  auto yType = RankedTensorType::get({static_cast<int64_t>(getDv())}, Float32Type::get(getContext()));
  BiasOp bias = getComponent<BiasOp>();
  Block &biasBlock = bias.getBody().front();
  for (BlockArgument arg : biasBlock.getArguments())
    if (arg.getType() != yType)
      return bias.emitOpError("region arguments must be ")
             << yType << " (dv = " << getDv() << "), got " << arg.getType();

  RetentionOp retention = getComponent<RetentionOp>();
  OptimizerOp optimizer = getComponent<OptimizerOp>();
  if (failed(verifyArgs(memory, memoryKind, memory.getArgs(), *this,
                        {"dk", "dv", "dim"})) ||
      failed(verifyArgs(retention, retention.getDefinition(), retention.getArgs(),
                        *this)) ||
      failed(verifyArgs(optimizer, optimizer.getDefinition(), optimizer.getArgs(),
                        *this)))
    return failure();

  auto mapKind = retention.getArgs().getAs<StringAttr>("map");
  bool userMap = mapKind && mapKind.getValue() == "user";
  if (userMap != static_cast<bool>(getComponent<MirrorMapOp>()))
    return retention.emitOpError(
        "a miras.mirror_map goes with, and only with, map = \"user\"");

  choices::ArgLookup memoryArgs = argLookup(memory.getArgs(), *this);
  choices::ArgLookup retentionArgs = argLookup(retention.getArgs(), *this);
  choices::ArgLookup optimizerArgs = argLookup(optimizer.getArgs(), *this);
  const choices::OptimizerChoice &optimizerKind = optimizer.getDefinition();
  int64_t steps = optimizerKind.stepsPerToken(optimizerArgs);
  if (steps != getSteps())
    return optimizer.emitOpError("takes ")
           << steps << " step(s) per token, but the module's steps is "
           << getSteps();
  std::string chunkProblem =
      choices::chunkProblem(optimizerKind, optimizerArgs, getChunk());
  if (!chunkProblem.empty())
    return optimizer.emitOpError(chunkProblem);

  // The combination rules, shared with the frontend.
  auto opFor = [&](Role role) -> Operation * {
    switch (role) {
    case Role::Memory:
      return memory;
    case Role::Bias:
      return bias;
    case Role::Retention:
      return retention;
    case Role::Optimizer:
      return optimizer;
    }
    return *this;
  };
  std::optional<InFlightDiagnostic> pending;
  bool failedRule = false;
  choices::ChoiceReporter reporter{
      [&](Role at, const std::string &, const std::string &message) {
        pending.reset(); // reports the previous error with its notes
        pending.emplace(opFor(at)->emitError(message));
        failedRule = true;
      },
      [&](Role at, const std::string &message) {
        if (pending)
          pending->attachNote(opFor(at)->getLoc()) << message;
      }};
  const choices::BiasChoice *biasKind =
      choices::ChoiceRegistry::get().findBias(bias.getName().str());
  choices::checkCombination({memoryKind, memoryArgs, biasKind, bias.getName().str(),
                             retention.getDefinition(), retentionArgs,
                             optimizerKind, optimizerArgs,
                             static_cast<int64_t>(getChunk())},
                            reporter);
  pending.reset();
  if (failedRule)
    return failure();
  return verifyInits(*this, retention, retentionArgs);
}

//===----------------------------------------------------------------------===//
// InitOp
//===----------------------------------------------------------------------===//

choices::StateInit InitOp::getStateInit() {
  choices::StateInit init;
  init.kind = choices::StateInit::parse(getKind().str()).value_or(init.kind);
  if (getScale())
    init.scale = getScale()->convertToDouble();
  if (getSeed())
    init.seed = static_cast<uint64_t>(getSeedAttr().getInt());
  return init;
}

/// The kind is known; zeros takes nothing, identity and uniform an optional
/// non-zero scale, normal a positive scale and a seed.
LogicalResult InitOp::verify() {
  std::optional<choices::StateInit::Kind> kind = choices::StateInit::parse(getKind().str());
  if (!kind)
    return emitOpError("unknown init '")
           << getKind() << "': expected \"zeros\", \"identity\", \"uniform\" or \"normal\"";
  using Kind = choices::StateInit::Kind;
  std::optional<double> scale;
  if (getScale())
    scale = getScale()->convertToDouble();
  if (*kind == Kind::Zeros && (scale || getSeed()))
    return emitOpError("a zeros init takes no scale or seed");
  if (*kind != Kind::Normal && getSeed())
    return emitOpError("only a normal init takes a seed");
  if (*kind == Kind::Normal && (!scale || !getSeed()))
    return emitOpError("a normal init needs a scale and a seed");
  if (scale && (!std::isfinite(*scale) || *scale == 0 || (*kind == Kind::Normal && *scale < 0)))
    return emitOpError("init scale must be ")
           << (*kind == Kind::Normal ? "positive" : "finite and non-zero") << ", got "
           << *scale;
  if (getSeed() && getSeedAttr().getInt() < 0)
    return emitOpError("init seed must be non-negative");
  return success();
}

//===----------------------------------------------------------------------===//
// GateOp
//===----------------------------------------------------------------------===//

Type GateOp::getValueType() {
  Type f32 = Float32Type::get(getContext());
  if (getPerStep()) {
    auto module = (*this)->getParentOfType<MemoryModuleOp>();
    return RankedTensorType::get({module ? static_cast<int64_t>(module.getSteps()) : int64_t(1)}, f32);
  }
  if (!getChannel())
    return f32;
  return RankedTensorType::get({static_cast<int64_t>(getDim())}, f32);
}

/// The declared range: both ends or none, lo <= hi, infinite ends open, not
/// empty.
static LogicalResult verifyGateRange(GateOp gate) {
  auto toDouble = [](std::optional<APFloat> x) -> std::optional<double> {
    if (!x)
      return std::nullopt;
    return x->convertToDouble();
  };
  std::optional<double> lo = toDouble(gate.getRangeLo());
  std::optional<double> hi = toDouble(gate.getRangeHi());
  if (!lo && !hi) {
    if (gate.getRangeLoClosed() || gate.getRangeHiClosed())
      return gate.emitOpError("range_lo_closed / range_hi_closed without a range");
    return success();
  }
  if (!lo || !hi)
    return gate.emitOpError("a range needs both range_lo and range_hi");
  if (std::isnan(*lo) || std::isnan(*hi))
    return gate.emitOpError("range ends must be numbers, not NaN");
  if ((std::isinf(*lo) && gate.getRangeLoClosed()) ||
      (std::isinf(*hi) && gate.getRangeHiClosed()))
    return gate.emitOpError("an infinite range end must be open");
  if (*lo > *hi)
    return gate.emitOpError("range lower end ")
           << *lo << " is above its upper end " << *hi;
  if (*lo == *hi && !(gate.getRangeLoClosed() && gate.getRangeHiClosed()))
    return gate.emitOpError("range with equal ends ")
           << *lo << " must be closed at both, or it is empty";
  return success();
}

LogicalResult GateOp::verify() {
  if (failed(verifyGateRange(*this)))
    return failure();
  if (getPerStep() && getChannel())
    return emitOpError("only a scalar gate can be per step");
  if (!getChannel())
    return getAxis() ? emitOpError("a scalar gate has no axis") : success();
  if (!getAxis() || (*getAxis() != "dk" && *getAxis() != "dv"))
    return emitOpError("a channel gate needs axis \"dk\" or \"dv\"");
  if (getDimAttr().getInt() <= 0)
    return emitOpError("channel dim must be positive");
  return success();
}

// miras.gate @name : scalar
// miras.gate @name : channel along "dk" dim 64
ParseResult GateOp::parse(OpAsmParser &parser, OperationState &result) {
  StringAttr name;
  if (parser.parseSymbolName(name, getSymNameAttrName(result.name),
                             result.attributes) ||
      parser.parseColon())
    return failure();
  Builder &b = parser.getBuilder();
  int64_t dim = 1;
  if (succeeded(parser.parseOptionalKeyword("channel"))) {
    std::string axis;
    if (parser.parseKeyword("along") || parser.parseString(&axis) ||
        parser.parseKeyword("dim") || parser.parseInteger(dim))
      return failure();
    result.addAttribute(getChannelAttrName(result.name), b.getUnitAttr());
    result.addAttribute(getAxisAttrName(result.name), b.getStringAttr(axis));
  } else if (parser.parseKeyword("scalar")) {
    return failure();
  } else if (succeeded(parser.parseOptionalKeyword("per_step"))) {
    result.addAttribute(getPerStepAttrName(result.name), b.getUnitAttr());
  }
  result.addAttribute(getDimAttrName(result.name), b.getI64IntegerAttr(dim));
  if (succeeded(parser.parseOptionalKeyword("in"))) {
    // in (lo, hi] / [lo, inf): brackets say closed, parentheses open.
    bool loClosed = succeeded(parser.parseOptionalLSquare());
    if (!loClosed && parser.parseLParen())
      return failure();
    auto parseEnd = [&](double &x) -> ParseResult {
      bool negative = succeeded(parser.parseOptionalMinus());
      if (succeeded(parser.parseOptionalKeyword("inf")))
        x = HUGE_VAL;
      else if (parser.parseFloat(x))
        return failure();
      if (negative)
        x = -x;
      return success();
    };
    double lo = 0, hi = 0;
    if (parseEnd(lo) || parser.parseComma() || parseEnd(hi))
      return failure();
    bool hiClosed = succeeded(parser.parseOptionalRSquare());
    if (!hiClosed && parser.parseRParen())
      return failure();
    result.addAttribute(getRangeLoAttrName(result.name), b.getF64FloatAttr(lo));
    result.addAttribute(getRangeHiAttrName(result.name), b.getF64FloatAttr(hi));
    if (loClosed)
      result.addAttribute(getRangeLoClosedAttrName(result.name), b.getUnitAttr());
    if (hiClosed)
      result.addAttribute(getRangeHiClosedAttrName(result.name), b.getUnitAttr());
  }
  return parser.parseOptionalAttrDict(result.attributes);
}

void GateOp::print(OpAsmPrinter &p) {
  p << ' ';
  p.printSymbolName(getSymName());
  p << " : ";
  if (getChannel())
    p << "channel along \"" << *getAxis() << "\" dim " << getDim();
  else
    p << "scalar" << (getPerStep() ? " per_step" : "");
  // The range in interval notation when it is well formed (the verifier
  // rejects the rest, which then prints as plain attributes).
  bool printRange = getRangeLo() && getRangeHi();
  if (printRange) {
    auto printEnd = [&](APFloat x) {
      if (x.isInfinity())
        p << (x.isNegative() ? "-inf" : "inf");
      else
        p.printFloat(x);
    };
    p << " in " << (getRangeLoClosed() ? "[" : "(");
    printEnd(*getRangeLo());
    p << ", ";
    printEnd(*getRangeHi());
    p << (getRangeHiClosed() ? "]" : ")");
  }
  SmallVector<StringRef> elided = {getSymNameAttrName(), getChannelAttrName(),
                                   getAxisAttrName(), getDimAttrName(),
                                   getPerStepAttrName()};
  if (printRange)
    elided.append({getRangeLoAttrName(), getRangeHiAttrName(),
                   getRangeLoClosedAttrName(), getRangeHiClosedAttrName()});
  p.printOptionalAttrDict((*this)->getAttrs(), elided);
}

//===----------------------------------------------------------------------===//
// Components
//===----------------------------------------------------------------------===//

// miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}, and likewise
// miras.retention and miras.optimizer: the kind resolved in the registry.
template <typename AttrT>
static ParseResult parseComponent(OpAsmParser &parser, OperationState &result,
                                  Role role) {
  SMLoc at = parser.getCurrentLocation();
  std::string kind;
  DictionaryAttr args;
  if (parser.parseString(&kind) || parser.parseAttribute(args))
    return failure();
  const choices::ChoiceRegistry &registry = choices::ChoiceRegistry::get();
  const choices::Choice *definition = registry.find(role, kind);
  if (!definition)
    return parser.emitError(at) << "unknown " << choices::roleName(role) << " '"
                                << kind << "' (supported: "
                                << registry.namesOf(role) << ")";
  using Definition = std::remove_pointer_t<decltype(std::declval<AttrT>().getDefinition())>;
  result.addAttribute("choice",
                      AttrT::get(parser.getContext(),
                                 static_cast<Definition *>(definition), args));
  return parser.parseOptionalAttrDict(result.attributes);
}

template <typename OpT> static void printComponent(OpT op, OpAsmPrinter &p) {
  p << " \"" << op.getDefinition().name() << "\" ";
  p.printAttribute(op.getArgs());
  p.printOptionalAttrDict(op->getAttrs(), {"choice"});
}

ParseResult MemoryOp::parse(OpAsmParser &parser, OperationState &result) {
  return parseComponent<MemoryAttr>(parser, result, Role::Memory);
}
void MemoryOp::print(OpAsmPrinter &p) { printComponent(*this, p); }
ParseResult RetentionOp::parse(OpAsmParser &parser, OperationState &result) {
  return parseComponent<RetentionAttr>(parser, result, Role::Retention);
}
void RetentionOp::print(OpAsmPrinter &p) { printComponent(*this, p); }
ParseResult OptimizerOp::parse(OpAsmParser &parser, OperationState &result) {
  return parseComponent<OptimizerAttr>(parser, result, Role::Optimizer);
}
void OptimizerOp::print(OpAsmPrinter &p) { printComponent(*this, p); }

// miras.bias "l2" loss { ... }   /   miras.bias "lp" error_signal { ... }
ParseResult BiasOp::parse(OpAsmParser &parser, OperationState &result) {
  StringAttr name;
  if (parser.parseAttribute(name, getNameAttrName(result.name),
                            result.attributes))
    return failure();
  if (succeeded(parser.parseOptionalKeyword("error_signal")))
    result.addAttribute(getErrorSignalAttrName(result.name),
                        parser.getBuilder().getUnitAttr());
  else if (parser.parseKeyword("loss"))
    return failure();
  if (parser.parseOptionalAttrDictWithKeyword(result.attributes))
    return failure();
  Region *body = result.addRegion();
  return parser.parseRegion(*body, /*arguments=*/{});
}

void BiasOp::print(OpAsmPrinter &p) {
  p << ' ';
  p.printAttribute(getNameAttr());
  p << (getErrorSignal() ? " error_signal" : " loss");
  p.printOptionalAttrDictWithKeyword(
      (*this)->getAttrs(), {getNameAttrName(), getErrorSignalAttrName()});
  p << ' ';
  p.printRegion(getBody(), /*printEntryBlockArgs=*/true);
}

LogicalResult BiasOp::verifyRegions() {
  Block &block = getBody().front();
  if (block.getNumArguments() != 2 ||
      block.getArgument(0).getType() != block.getArgument(1).getType() ||
      !isa<RankedTensorType>(block.getArgument(0).getType()))
    return emitOpError("region must take the prediction y and the target v, "
                       "two vectors of the same type");
  auto yield = dyn_cast<YieldOp>(block.back());
  if (!yield)
    return emitOpError("region must end with miras.yield");
  Type yielded = yield.getValue().getType();
  if (getErrorSignal() && yielded != block.getArgument(0).getType())
    return emitOpError("an error_signal bias must yield a vector like y, got ")
           << yielded;
  if (!getErrorSignal() && !yielded.isF32())
    return emitOpError("a loss bias must yield a scalar f32, got ") << yielded;
  return success();
}

LogicalResult MirrorMapOp::verifyRegions() {
  Block &block = getBody().front();
  Type f32 = Float32Type::get(getContext());
  auto yield = dyn_cast<YieldOp>(block.back());
  if (block.getNumArguments() != 1 || block.getArgument(0).getType() != f32 ||
      !yield || yield.getValue().getType() != f32)
    return emitOpError("region must map one f32 element to one f32 element");
  return success();
}

LogicalResult
GateValueOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto module = (*this)->getParentOfType<MemoryModuleOp>();
  auto gate = module ? symbolTable.lookupNearestSymbolFrom<GateOp>(
                           module, getGateAttr())
                     : GateOp();
  if (!gate)
    return emitOpError("refers to undeclared gate ") << getGateAttr();
  if (gate.getValueType() != getType())
    return emitOpError("gate ") << getGateAttr() << " has type "
                                << gate.getValueType() << ", not " << getType();
  return success();
}

//===----------------------------------------------------------------------===//
// Step-level ops
//===----------------------------------------------------------------------===//

LogicalResult MatVecOp::verify() {
  auto a = getMatrix().getType().getShape();
  auto x = getVector().getType().getShape();
  auto y = getResult().getType().getShape();
  if (a[1] != x[0] || a[0] != y[0])
    return emitOpError("shape mismatch: [")
           << a[0] << "x" << a[1] << "] times [" << x[0] << "] gives ["
           << a[0] << "], not [" << y[0] << "]";
  return success();
}

LogicalResult VecMatOp::verify() {
  auto a = getMatrix().getType().getShape();
  if (a[0] != getVector().getType().getDimSize(0) ||
      a[1] != getResult().getType().getDimSize(0))
    return emitOpError("shape mismatch: [")
           << getVector().getType().getDimSize(0) << "] times [" << a[0]
           << "x" << a[1] << "] gives [" << a[1] << "]";
  return success();
}

static LogicalResult verifyRowReduction(Operation *op) {
  auto in = cast<RankedTensorType>(op->getOperand(0).getType());
  auto out = cast<RankedTensorType>(op->getResult(0).getType());
  if (in.getDimSize(0) != out.getDimSize(0))
    return op->emitOpError("result must have one entry per row (")
           << in.getDimSize(0) << ")";
  return success();
}
LogicalResult RowSumOp::verify() { return verifyRowReduction(*this); }
LogicalResult RowMaxOp::verify() { return verifyRowReduction(*this); }

LogicalResult ExtractOp::verify() {
  auto input = cast<RankedTensorType>(getInput().getType());
  if (getIndex() < 0 || getIndex() >= input.getDimSize(0))
    return emitOpError("index ") << getIndex() << " out of range [0, "
                                 << input.getDimSize(0) << ")";
  Type expected = input.getRank() == 1
                      ? Type(input.getElementType())
                      : RankedTensorType::get({input.getDimSize(1)},
                                              input.getElementType());
  if (getResult().getType() != expected)
    return emitOpError("result must be ") << expected;
  return success();
}

LogicalResult OuterOp::verify() {
  auto r = getResult().getType().getShape();
  if (r[0] != getLhs().getType().getDimSize(0) ||
      r[1] != getRhs().getType().getDimSize(0))
    return emitOpError("result must be [")
           << getLhs().getType().getDimSize(0) << "x"
           << getRhs().getType().getDimSize(0) << "]";
  return success();
}

LogicalResult BroadcastOp::verify() {
  auto resultType = cast<RankedTensorType>(getResult().getType());
  ArrayRef<int64_t> dims = getDims();
  auto inputType = dyn_cast<RankedTensorType>(getInput().getType());
  int64_t inputRank = inputType ? inputType.getRank() : 0;
  if (static_cast<int64_t>(dims.size()) != inputRank)
    return emitOpError("needs one entry in dims per input dimension");
  if (inputRank >= resultType.getRank())
    return emitOpError("must broadcast to a tensor of higher rank");
  for (auto [i, d] : llvm::enumerate(dims)) {
    if (d < 0 || d >= resultType.getRank())
      return emitOpError("dims entry ") << d << " out of range";
    if (inputType.getDimSize(i) != resultType.getDimSize(d))
      return emitOpError("input dim ") << i << " does not match result dim "
                                       << d;
  }
  return success();
}

#define GET_OP_CLASSES
#include "miras/Dialect/Miras/IR/MirasOps.cpp.inc"
