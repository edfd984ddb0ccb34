//===- DeriveUpdate.cpp - Derive the per-token update rule ----------------===//
//
// From the four choices of a miras.module to `func.func @step`:
//
//   W_g  = weights the gradient is taken at: the state (the anchor when
//          chunk > 1), through the mirror map for lq / kl, after the decay
//          when retention is applied before the gradient
//   y    = f(W_g; k)
//   g    = dL/dW_g by reverse mode through the bias region and the memory,
//          or the VJP of f seeded with the error signal for error-signal biases
//   W'   = retention(W) - lr g                   (gd; implicit: Longhorn's lr)
//   S'   = beta S - lr g,  W' = decay W + S'      (momentum)
//   A'   = decay A - lr g                        (mirror retentions)
//   o    = f(W'; q) after write, f(W; q) before (through the map for A)
//
// Every op is built at the location of the choice it comes from, so errors
// and `--emit=derived` point back into the .miras file.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/Differentiate.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"
#include "miras/Dialect/Miras/Transforms/Memory.h"
#include "miras/Dialect/Miras/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/RegionUtils.h"

namespace miras {
#define GEN_PASS_DEF_MIRASDERIVEUPDATE
#include "miras/Dialect/Miras/Transforms/Passes.h.inc"
} // namespace miras

using namespace mlir;
using namespace miras;

namespace {

/// The step function's signature, decided before its body is built.
struct StepSignature {
  SmallVector<Type> inputs;
  SmallVector<std::string> inputNames;
  SmallVector<Type> results;
  SmallVector<std::string> resultNames;
  unsigned numWeights = 0;
  int64_t steps = 1;
  bool hasAnchors = false;
  bool hasMomentum = false;
};

StepSignature planSignature(MemoryModuleOp module) {
  StepSignature sig;
  auto retention = module.getComponent<RetentionOp>();
  auto optimizer = module.getComponent<OptimizerOp>();
  SmallVector<RankedTensorType> weights = getWeightTypes(module);
  sig.numWeights = weights.size();
  sig.steps = module.getSteps();
  sig.hasAnchors = module.getChunk() > 1;
  sig.hasMomentum = optimizer.getKind() == "momentum";
  // SPEC section 6: W / W1.. for the weights, A / A1.. for a dual state,
  // S / S1.. next to them for momentum.
  auto nameOf = [&](StringRef stem, size_t i) {
    return weights.size() == 1 ? stem.str() : stem.str() + std::to_string(i + 1);
  };
  StringRef stem = isMirrorRetention(retention) ? "A" : "W";
  for (auto [i, type] : llvm::enumerate(weights)) {
    sig.inputs.push_back(type);
    sig.inputNames.push_back(nameOf(stem, i));
  }
  if (sig.hasMomentum)
    for (auto [i, type] : llvm::enumerate(weights)) {
      sig.inputs.push_back(type);
      sig.inputNames.push_back(nameOf("S", i));
    }
  sig.results.append(sig.inputs.begin(), sig.inputs.end());
  sig.resultNames = sig.inputNames;
  if (sig.hasAnchors)
    for (auto [i, type] : llvm::enumerate(weights)) {
      sig.inputs.push_back(type);
      sig.inputNames.push_back(nameOf(stem, i) + "_anchor");
    }
  Type f32 = Float32Type::get(module.getContext());
  auto vecK = RankedTensorType::get({module.getDk()}, f32);
  auto vecV = RankedTensorType::get({module.getDv()}, f32);
  // multistep(n): one (k, v) row per step.
  auto perStep = [&](RankedTensorType t) -> Type {
    if (module.getSteps() == 1)
      return t;
    return RankedTensorType::get({module.getSteps(), t.getDimSize(0)}, f32);
  };
  sig.inputs.append({vecK, perStep(vecK), perStep(vecV)});
  sig.inputNames.append({"q", "k", "v"});
  for (GateOp gate : module.getGates()) {
    sig.inputs.push_back(gate.getValueType());
    sig.inputNames.push_back(gate.getSymName().str());
  }
  sig.results.push_back(vecV);
  sig.resultNames.push_back("o");
  return sig;
}

/// Builds the step function of one module.
class StepBuilder {
public:
  StepBuilder(MemoryModuleOp module, const StepSignature &sig,
              func::FuncOp step, OpBuilder &builder, bool simplify)
      : module(module), sig(sig), mb(builder, module.getLoc(), simplify) {
    Block &entry = step.getBody().front();
    unsigned next = 0;
    auto take = [&](unsigned n) {
      SmallVector<Value> values(entry.getArguments().slice(next, n));
      next += n;
      return values;
    };
    weights = take(sig.numWeights);
    if (sig.hasMomentum)
      momenta = take(sig.numWeights);
    anchors = sig.hasAnchors ? take(sig.numWeights) : weights;
    q = entry.getArgument(next++);
    k = entry.getArgument(next++);
    v = entry.getArgument(next++);
    for (GateOp gate : module.getGates())
      gates[gate.getSymName()] = entry.getArgument(next++);
  }

  /// Emits the body and the return.
  LogicalResult build();

private:
  /// A component argument as a value: a number or the current gate value.
  Value rate(Operation *component, StringRef name, double fallback = 1.0) {
    Attribute attr = cast<DictionaryAttr>(component->getAttr("args")).get(name);
    if (auto ref = dyn_cast_or_null<FlatSymbolRefAttr>(attr))
      return gates.lookup(ref.getValue());
    double value = attr ? cast<FloatAttr>(attr).getValueAsDouble() : fallback;
    return mb.constant(mb.getBuilder().getF32Type(), value);
  }

  /// `decay ⊙ matrix` (scalar, or a channel gate scaling columns along dk /
  /// rows along dv).
  Value applyDecay(Value decay, Value matrix) {
    int64_t axis = -1;
    if (isa<RankedTensorType>(decay.getType()))
      axis = lookupGate(decay).getAxis() == "dv" ? 0 : 1;
    return mb.mul(mb.broadcast(decay, matrix.getType(), axis), matrix);
  }

  GateOp lookupGate(Value gateArg) {
    for (auto &entry : gates)
      if (entry.getValue() == gateArg)
        return cast<GateOp>(SymbolTable::lookupSymbolIn(
            module, StringAttr::get(module.getContext(), entry.getKey())));
    return nullptr;
  }

  /// The bias region inlined with prediction y and target `target`; its
  /// yielded value.
  Value inlineBias(BiasOp bias, Value y, Value target);

  /// g_i = dL/dW_i of the bias at f(W; key) against `target`: reverse mode
  /// seeded by the loss, or by the error signal for error-signal biases.
  FailureOr<SmallVector<Value>> gradient(ValueRange at, Value key, Value target) {
    auto memory = module.getComponent<MemoryOp>();
    auto bias = module.getComponent<BiasOp>();
    mb.setLoc(memory.getLoc());
    Value y = buildMemoryForward(mb, memory, at, key);
    mb.setLoc(bias.getLoc());
    Value biasValue = inlineBias(bias, y, target);
    std::pair<Value, Value> seed =
        bias.getErrorSignal()
            ? std::make_pair(y, biasValue)
            : std::make_pair(biasValue, mb.constant(biasValue.getType(), 1.0));
    return buildGradients(mb.getBuilder(), {seed}, at, mb.simplifies());
  }

  /// `rate * gradient`, keeping the rank-1 structure of a linear memory's
  /// gradient: (rate psi) k^T rather than a scaled D x D matrix.
  Value scaled(Value rate, Value gradient) {
    if (auto outer = mb.simplifies() ? gradient.getDefiningOp<OuterOp>() : nullptr)
      return mb.outer(mb.mul(rate, outer.getLhs()), outer.getRhs());
    return mb.mul(mb.broadcast(rate, gradient.getType()), gradient);
  }

  /// DeltaProduct: the decay once, then one gd step per (k, v, lr) row.
  LogicalResult buildMultistep();

  /// Weights as the memory sees them: through the mirror map if any.
  SmallVector<Value> primal(ValueRange states) {
    auto retention = module.getComponent<RetentionOp>();
    if (!isMirrorRetention(retention))
      return SmallVector<Value>(states);
    SmallVector<Value> mapped;
    for (Value state : states)
      mapped.push_back(buildMirrorMap(mb, retention, state));
    return mapped;
  }

  MemoryModuleOp module;
  const StepSignature &sig;
  MathBuilder mb;
  SmallVector<Value> weights, momenta, anchors;
  Value q, k, v;
  llvm::StringMap<Value> gates;
};

Value StepBuilder::inlineBias(BiasOp bias, Value y, Value target) {
  OpBuilder &b = mb.getBuilder();
  Block &body = bias.getBody().front();
  IRMapping mapping;
  mapping.map(body.getArgument(0), y);
  mapping.map(body.getArgument(1), target);
  for (Operation &op : body.without_terminator()) {
    if (auto gv = dyn_cast<GateValueOp>(op)) {
      mapping.map(gv.getResult(), gates.lookup(gv.getGate()));
      continue;
    }
    b.clone(op, mapping);
  }
  return mapping.lookup(cast<YieldOp>(body.getTerminator()).getValue());
}

LogicalResult StepBuilder::buildMultistep() {
  OpBuilder &b = mb.getBuilder();
  auto retention = module.getComponent<RetentionOp>();
  auto optimizer = module.getComponent<OptimizerOp>();
  auto memory = module.getComponent<MemoryOp>();
  SmallVector<Value> current(weights);
  if (retention.getKind() == "l2") {
    mb.setLoc(retention.getLoc());
    Value decay = rate(retention, "decay");
    for (Value &w : current)
      w = applyDecay(decay, w);
  }
  Value lr = rate(optimizer, "lr");
  for (int64_t step = 0; step < module.getSteps(); ++step) {
    mb.setLoc(optimizer.getLoc());
    auto pick = [&](Value x) -> Value {
      auto type = cast<RankedTensorType>(x.getType());
      Type result = type.getRank() == 1
                        ? Type(type.getElementType())
                        : RankedTensorType::get({type.getDimSize(1)},
                                                type.getElementType());
      return ExtractOp::create(b, mb.getLoc(), result, x,
                               b.getI64IntegerAttr(step));
    };
    Value kj = pick(k), vj = pick(v);
    Value lrj = isa<RankedTensorType>(lr.getType()) ? pick(lr) : lr;
    FailureOr<SmallVector<Value>> grads = gradient(current, kj, vj);
    if (failed(grads))
      return failure();
    mb.setLoc(optimizer.getLoc());
    for (auto [w, g] : llvm::zip(current, *grads))
      w = mb.sub(w, scaled(lrj, g));
  }
  mb.setLoc(module.getLoc());
  SmallVector<Value> results(current);
  results.push_back(buildMemoryForward(
      mb, memory, module.getReadAfterWrite() ? current : weights, q));
  func::ReturnOp::create(b, module.getLoc(), results);
  return success();
}

LogicalResult StepBuilder::build() {
  if (sig.steps > 1)
    return buildMultistep();
  OpBuilder &b = mb.getBuilder();
  auto retention = module.getComponent<RetentionOp>();
  auto optimizer = module.getComponent<OptimizerOp>();
  auto memory = module.getComponent<MemoryOp>();
  StringRef kind = retention.getKind();
  auto order = retention.getArgs().getAs<StringAttr>("order");
  bool decayFirst = kind == "l2" && order && order.getValue() == "before_gradient";
  bool mirror = isMirrorRetention(retention);

  // Where the gradient is taken.
  mb.setLoc(retention.getLoc());
  Value decay = kind == "l2" || mirror ? rate(retention, "decay") : Value();
  SmallVector<Value> kept(weights), gradAt = primal(anchors);
  if (decayFirst) {
    for (auto [i, w] : llvm::enumerate(weights)) {
      kept[i] = applyDecay(decay, w);
      gradAt[i] = anchors[i] == w ? kept[i] : applyDecay(decay, anchors[i]);
    }
  }

  FailureOr<SmallVector<Value>> grads = gradient(gradAt, k, v);
  if (failed(grads))
    return failure();

  mb.setLoc(optimizer.getLoc());
  Value lr = rate(optimizer, "lr");
  if (optimizer.getKind() == "implicit") {
    // Longhorn: the exact minimiser of the linearised l2 step.
    Value kk = mb.sum(mb.mul(k, k));
    lr = mb.div(lr, mb.add(mb.constant(lr.getType(), 1.0), mb.mul(lr, kk)));
  }
  Value beta = sig.hasMomentum ? rate(optimizer, "beta") : Value();

  mb.setLoc(retention.getLoc());
  Value stepSize = lr, keep;
  if (kind == "l2_coupled") {
    // argmin <g, W> + |W - W'|^2 / (2 lr) + |W|^2 / (2 s)
    Value s = rate(retention, "strength");
    Value denom = mb.add(s, lr);
    keep = mb.div(s, denom);
    stepSize = mb.div(mb.mul(s, lr), denom);
  }

  // Proximal elastic net (SPEC section 5): W' = S_gamma(lambda W - zeta g).
  Value shrink;
  if (kind == "elastic_net") {
    Value a = rate(retention, "a"), bArg = rate(retention, "b");
    Value denom = mb.add(lr, bArg);
    keep = mb.div(bArg, denom);
    stepSize = mb.mul(lr, keep);
    shrink = mb.div(mb.mul(lr, bArg), mb.mul(a, denom));
  }

  SmallVector<Value> results, newWeights;
  SmallVector<Value> newMomenta;
  for (auto [i, w] : llvm::enumerate(weights)) {
    Value retained = kept[i];
    if ((kind == "l2" && !decayFirst) || mirror)
      retained = applyDecay(decay, w);
    else if (keep)
      retained = mb.mul(mb.broadcast(keep, w.getType()), w);
    Value g = (*grads)[i];
    if (sig.hasMomentum) {
      mb.setLoc(optimizer.getLoc());
      Value s = mb.sub(mb.mul(mb.broadcast(beta, w.getType()), momenta[i]),
                       mb.mul(mb.broadcast(lr, w.getType()), g));
      newMomenta.push_back(s);
      newWeights.push_back(mb.add(retained, s));
      continue;
    }
    if (kind == "f_div") {
      // Exponentiated gradient on the simplex (f_div with g = exp): each row
      // is renormalised; the row maximum of the exponent keeps exp in range.
      Value x = mb.neg(mb.mul(mb.broadcast(lr, w.getType()), g));
      Value shift = mb.broadcast(mb.rowMax(x), w.getType(), /*axis=*/0);
      Value scaled = mb.mul(w, mb.exp(mb.sub(x, shift)));
      newWeights.push_back(mb.div(
          scaled, mb.broadcast(mb.rowSum(scaled), w.getType(), /*axis=*/0)));
      continue;
    }
    Value updated = mb.sub(retained, scaled(stepSize, g));
    newWeights.push_back(shrink ? mb.softThreshold(
                                      updated, mb.broadcast(shrink, w.getType()))
                                : updated);
  }
  results.append(newWeights);
  results.append(newMomenta);

  mb.setLoc(module.getLoc());
  SmallVector<Value> readWeights =
      primal(module.getReadAfterWrite() ? ValueRange(newWeights)
                                        : ValueRange(weights));
  results.push_back(buildMemoryForward(mb, memory, readWeights, q));
  func::ReturnOp::create(b, module.getLoc(), results);
  return success();
}

struct DeriveUpdatePass
    : public miras::impl::MirasDeriveUpdateBase<DeriveUpdatePass> {
  using MirasDeriveUpdateBase::MirasDeriveUpdateBase;

  void runOnOperation() override {
    for (auto module : getOperation().getOps<MemoryModuleOp>())
      if (failed(derive(module)))
        return signalPassFailure();
  }

  LogicalResult derive(MemoryModuleOp module) {
    if (SymbolTable::lookupSymbolIn(module, "step"))
      return module.emitError("module already has a derived step function");
    MLIRContext *ctx = module.getContext();
    OpBuilder b(ctx);
    StepSignature sig = planSignature(module);

    b.setInsertionPointToEnd(&module.getBody().front());
    auto step = func::FuncOp::create(
        b, module.getLoc(), "step", b.getFunctionType(sig.inputs, sig.results));
    step.setPrivate();
    for (auto [i, name] : llvm::enumerate(sig.inputNames))
      step.setArgAttr(i, "miras.name", b.getStringAttr(name));
    for (auto [i, name] : llvm::enumerate(sig.resultNames))
      step.setResultAttr(i, "miras.name", b.getStringAttr(name));
    b.setInsertionPointToStart(step.addEntryBlock());

    StepBuilder builder(module, sig, step, b, simplify);
    if (failed(builder.build()))
      return failure();
    // The bias's forward ops that only computed the loss value are dead now.
    IRRewriter rewriter(ctx);
    (void)runRegionDCE(rewriter, step.getBody());
    return success();
  }
};

} // namespace
