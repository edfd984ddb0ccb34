//===- MirasOps.cpp - miras dialect operations ----------------------------===//
#include "miras/Dialect/Miras/IR/MirasOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"

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

/// The range a numeric component argument must lie in.
enum class ArgRange { Positive, UnitInterval /* (0, 1] */, Fraction /* [0, 1] */ };

/// Checks a component argument that must be a number in `range` or a gate
/// reference; `allowChannel` admits channel gates (a per-channel decay).
static LogicalResult verifyRateArg(Operation *component, MemoryModuleOp module,
                                   StringRef argName, bool allowChannel,
                                   ArgRange range) {
  auto args = component->getAttrOfType<DictionaryAttr>("args");
  Attribute value = args ? args.get(argName) : Attribute();
  if (!value)
    return component->emitOpError("requires argument '") << argName << "'";
  if (auto number = dyn_cast<FloatAttr>(value)) {
    double x = number.getValueAsDouble();
    bool ok = range == ArgRange::Positive       ? x > 0.0
              : range == ArgRange::UnitInterval ? x > 0.0 && x <= 1.0
                                             : x >= 0.0 && x <= 1.0;
    if (!ok)
      return component->emitOpError("argument '")
             << argName << "' must be in "
             << (range == ArgRange::Positive       ? "(0, inf)"
                 : range == ArgRange::UnitInterval ? "(0, 1]"
                                                : "[0, 1]")
             << ", got " << x;
    return success();
  }
  auto ref = dyn_cast<FlatSymbolRefAttr>(value);
  if (!ref)
    return component->emitOpError("argument '")
           << argName << "' must be a number or a gate symbol";
  auto gate = dyn_cast_or_null<GateOp>(
      SymbolTable::lookupSymbolIn(module, ref.getAttr()));
  if (!gate)
    return component->emitOpError("argument '")
           << argName << "' refers to undeclared gate " << ref;
  if (gate.getChannel() && !allowChannel)
    return component->emitOpError("argument '")
           << argName << "' needs a scalar gate, but " << ref
           << " is a channel gate";
  return success();
}

LogicalResult MemoryModuleOp::verify() {
  // The I64Attr getters are unsigned: read the signed values to reject
  // negative sizes in hand-written IR.
  int64_t dk = getDkAttr().getInt(), dv = getDvAttr().getInt();
  if (dk <= 0 || dv <= 0)
    return emitOpError("widths must be positive, got dk = ")
           << dk << ", dv = " << dv;
  if (getChunkAttr().getInt() < 1)
    return emitOpError("chunk must be at least 1, got ")
           << getChunkAttr().getInt();
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
  if (memory.getKind() != "linear" && getDk() != getDv())
    return memory.emitOpError("a ")
           << memory.getKind() << " memory needs dk == dv";
  auto memoryDk = memory.getArgs().getAs<IntegerAttr>("dk");
  auto memoryDv = memory.getArgs().getAs<IntegerAttr>("dv");
  if (!memoryDk || !memoryDv || memoryDk.getInt() != dk ||
      memoryDv.getInt() != dv)
    return memory.emitOpError("dk/dv must match the module's (")
           << dk << ", " << dv << ")";

  for (GateOp gate : getGates()) {
    if (!gate.getChannel())
      continue;
    int64_t expected = gate.getAxis() == "dk" ? getDk() : getDv();
    if (gate.getDim() != expected)
      return gate.emitOpError("channel gate along ")
             << *gate.getAxis() << " must have dim " << expected << ", got "
             << gate.getDim();
  }

  auto yType = RankedTensorType::get({getDv()}, Float32Type::get(getContext()));
  BiasOp bias = getComponent<BiasOp>();
  Block &biasBlock = bias.getBody().front();
  for (BlockArgument arg : biasBlock.getArguments())
    if (arg.getType() != yType)
      return bias.emitOpError("region arguments must be ")
             << yType << " (dv = " << getDv() << "), got " << arg.getType();

  RetentionOp retention = getComponent<RetentionOp>();
  StringRef kind = retention.getKind();
  bool linear = memory.getKind() == "linear";
  if ((kind == "l2" || kind == "lq" || kind == "kl" || kind == "ftrl_elastic" ||
       kind == "bregman") &&
      failed(verifyRateArg(retention, *this, "decay",
                           /*allowChannel=*/kind == "l2" && memory.getKind() != "mlp",
                           ArgRange::UnitInterval)))
    return failure();
  if (kind == "l2_coupled" &&
      failed(verifyRateArg(retention, *this, "strength", false,
                           ArgRange::Positive)))
    return failure();
  if (kind == "ftrl_elastic") {
    // The threshold eta / a is a compile-time constant of the map.
    for (StringRef name : {"eta", "a"})
      if (!retention.getArgs().getAs<FloatAttr>(name) ||
          failed(verifyRateArg(retention, *this, name, false, ArgRange::Positive)))
        return retention.emitOpError("ftrl_elastic needs a positive number for '")
               << name << "'";
  }
  bool rowWise = kind == "kl" || kind == "f_div";
  if (rowWise && memory.getKind() == "diagonal")
    return retention.emitOpError("'")
           << kind << "' normalises each row of a matrix, but a diagonal "
           << "memory's state is a vector";
  if (kind == "elastic_net" &&
      (failed(verifyRateArg(retention, *this, "a", false, ArgRange::Positive)) ||
       failed(verifyRateArg(retention, *this, "b", false, ArgRange::Positive))))
    return failure();
  auto order = retention.getArgs().getAs<StringAttr>("order");
  if (!linear && order && order.getValue() == "before_gradient")
    return retention.emitOpError("before_gradient needs a linear memory");

  auto mapKind = retention.getArgs().getAs<StringAttr>("map");
  bool userMap = kind == "bregman" && mapKind && mapKind.getValue() == "user";
  if (userMap != static_cast<bool>(getComponent<MirrorMapOp>()))
    return retention.emitOpError(
        "a miras.mirror_map goes with, and only with, bregman map = \"user\"");

  OptimizerOp optimizer = getComponent<OptimizerOp>();
  if (failed(verifyRateArg(optimizer, *this, "lr", false, ArgRange::Positive)))
    return failure();
  if (optimizer.getKind() == "multistep") {
    auto n = optimizer.getArgs().getAs<FloatAttr>("n");
    if (!n || n.getValueAsDouble() != static_cast<double>(getSteps()))
      return optimizer.emitOpError("multistep's n must equal the module's steps (")
             << getSteps() << ")";
    bool decayFirst = kind == "l2" && order && order.getValue() == "before_gradient";
    if (kind != "none" && !decayFirst)
      return optimizer.emitOpError("multistep applies the retention once before "
                                   "its steps: use none or l2 with order = "
                                   "before_gradient");
    if (getChunk() != 1)
      return optimizer.emitOpError("multistep needs chunk 1");
  } else if (getSteps() != 1) {
    return emitOpError("steps = ") << getSteps() << " needs optimizer multistep";
  }
  if (optimizer.getKind() == "momentum") {
    if (failed(verifyRateArg(optimizer, *this, "beta", false, ArgRange::Fraction)))
      return failure();
    if (kind != "none" && kind != "l2")
      return optimizer.emitOpError("momentum combines with the none and l2 "
                                   "retentions only, not '")
             << kind << "'";
  }
  if (optimizer.getKind() == "implicit" &&
      (memory.getKind() != "linear" || bias.getName() != "l2"))
    return optimizer.emitOpError(
        "'implicit' has a closed form only for a linear memory with the l2 "
        "bias");
  // Only gd has a closed form with a map or a proximal step.
  bool mapped = kind == "lq" || kind == "kl" || kind == "ftrl_elastic" ||
                kind == "bregman" || kind == "elastic_net" || kind == "f_div";
  bool mirror = kind == "lq" || kind == "kl" || kind == "ftrl_elastic" ||
                kind == "bregman";
  if (optimizer.getKind() == "ftrl") {
    auto decay = retention.getArgs().getAs<FloatAttr>("decay");
    if (!mirror || !decay || decay.getValueAsDouble() != 1.0)
      return optimizer.emitOpError("'ftrl' accumulates gradients in the dual of "
                                   "a mirror retention with decay 1");
  } else if (mapped && optimizer.getKind() != "gd")
    return optimizer.emitOpError("retention '")
           << kind << "' has a closed-form step with 'gd' only, not '"
           << optimizer.getKind() << "'";
  return success();
}

//===----------------------------------------------------------------------===//
// GateOp
//===----------------------------------------------------------------------===//

Type GateOp::getValueType() {
  Type f32 = Float32Type::get(getContext());
  if (getPerStep()) {
    auto module = (*this)->getParentOfType<MemoryModuleOp>();
    return RankedTensorType::get({module ? module.getSteps() : 1}, f32);
  }
  if (!getChannel())
    return f32;
  return RankedTensorType::get({getDim()}, f32);
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

LogicalResult MemoryOp::verify() {
  if (getKind() == "linear" || getKind() == "diagonal")
    return success();
  if (getKind() != "mlp")
    return emitOpError("unknown memory architecture '")
           << getKind() << "' (supported: linear, diagonal, mlp)";
  auto depth = getArgs().getAs<FloatAttr>("depth");
  auto expansion = getArgs().getAs<FloatAttr>("expansion");
  auto isInteger = [](FloatAttr a) {
    return a && a.getValueAsDouble() == std::floor(a.getValueAsDouble());
  };
  if (!isInteger(depth) || depth.getValueAsDouble() < 2 ||
      !isInteger(expansion) || expansion.getValueAsDouble() < 1)
    return emitOpError("mlp needs an integer depth >= 2 and an integer "
                       "expansion >= 1");
  auto act = getArgs().getAs<StringAttr>("act");
  if (!act || !llvm::is_contained(llvm::ArrayRef<llvm::StringRef>{
                                      "gelu", "gelu_tanh", "silu", "relu",
                                      "identity"},
                                  act.getValue()))
    return emitOpError("mlp act must be gelu, gelu_tanh, silu, relu or "
                       "identity");
  return success();
}

LogicalResult RetentionOp::verify() {
  StringRef kind = getKind();
  if (!llvm::is_contained(
          llvm::ArrayRef<llvm::StringRef>{"none", "l2", "l2_coupled", "lq", "kl",
                                          "ftrl_elastic", "elastic_net",
                                          "bregman", "f_div"},
          kind))
    return emitOpError("unknown retention '")
           << kind
           << "' (supported: none, l2, l2_coupled, lq, kl, ftrl_elastic, "
              "elastic_net, bregman, f_div)";
  if (kind == "bregman") {
    auto map = getArgs().getAs<StringAttr>("map");
    if (!map || !llvm::is_contained(llvm::ArrayRef<llvm::StringRef>{"sigmoid",
                                                                    "exp", "tanh",
                                                                    "user"},
                                    map.getValue()))
      return emitOpError("bregman needs map = \"sigmoid\", \"exp\", \"tanh\" "
                         "or \"user\" (with a miras.mirror_map)");
  }
  if (kind == "f_div") {
    auto g = getArgs().getAs<StringAttr>("g");
    if (!g || g.getValue() != "exp")
      return emitOpError("f_div has a closed-form step only for g = \"exp\" "
                         "(the row normaliser of any other g needs a root "
                         "search)");
  }
  if (kind == "lq") {
    auto q = getArgs().getAs<FloatAttr>("q");
    if (!q || q.getValueAsDouble() <= 1.0)
      return emitOpError("lq needs q > 1");
  }
  if (kind == "l2") {
    auto order = getArgs().getAs<StringAttr>("order");
    if (order && order.getValue() != "decoupled" &&
        order.getValue() != "before_gradient")
      return emitOpError("order must be \"decoupled\" or \"before_gradient\"");
  }
  return success();
}

LogicalResult OptimizerOp::verify() {
  if (!llvm::is_contained(llvm::ArrayRef<llvm::StringRef>{"gd", "implicit",
                                                          "momentum", "multistep",
                                                          "ftrl"},
                          getKind()))
    return emitOpError("unknown optimizer '")
           << getKind() << "' (supported: gd, implicit, momentum, multistep, ftrl)";
  return success();
}

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
