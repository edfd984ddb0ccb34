//===- DeriveUpdate.cpp - Derive the per-token update rule ----------------===//
//
// From the four choices of a miras.module to `func.func @step`:
//
//   W_g  = state the gradient is taken at (the anchor when chunk > 1, after
//          the decay when retention is applied before the gradient)
//   y    = W_g k
//   psi  = dL/dy (reverse mode over the bias region) or the error signal as given
//   W'   = retention(W) - lr * psi k^T        (implicit: lr = b / (1 + b ||k||^2))
//   o    = W' q  (read after write) or W q (read before write)
//
// Every op is built at the location of the choice it comes from, so errors
// and `--emit=derived` point back into the .miras file.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/Differentiate.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"
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

/// Builds the step function of one module.
class StepBuilder {
public:
  StepBuilder(MemoryModuleOp module, func::FuncOp step, OpBuilder &builder)
      : module(module), mb(builder, module.getLoc()) {
    Block &entry = step.getBody().front();
    unsigned next = 0;
    W = entry.getArgument(next++);
    anchor = module.getChunk() > 1 ? entry.getArgument(next++) : W;
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
  Value rate(Operation *component, StringRef name) {
    Attribute attr = cast<DictionaryAttr>(component->getAttr("args")).get(name);
    if (auto ref = dyn_cast<FlatSymbolRefAttr>(attr))
      return gates.lookup(ref.getValue());
    return mb.constant(mb.getBuilder().getF32Type(),
                       cast<FloatAttr>(attr).getValueAsDouble());
  }

  /// `decay ⊙ matrix` for the l2 retention's decay (scalar, or a channel gate
  /// scaling columns along dk / rows along dv).
  Value applyDecay(Value decay, Value matrix) {
    int64_t axis = -1;
    if (isa<RankedTensorType>(decay.getType()))
      axis = lookupGate(decay).getAxis() == "dv" ? 0 : 1;
    return mb.mul(mb.broadcast(decay, matrix.getType(), axis), matrix);
  }

  GateOp lookupGate(Value gateArg) {
    for (auto &[name, value] : gates)
      if (value == gateArg)
        return cast<GateOp>(SymbolTable::lookupSymbolIn(
            module, StringAttr::get(module.getContext(), name)));
    return nullptr;
  }

  /// psi(y, v): the bias region inlined, differentiated when it is a loss.
  FailureOr<Value> errorSignal(BiasOp bias, Value y);

  MemoryModuleOp module;
  MathBuilder mb;
  Value W, anchor, q, k, v;
  llvm::StringMap<Value> gates;
};

FailureOr<Value> StepBuilder::errorSignal(BiasOp bias, Value y) {
  OpBuilder &b = mb.getBuilder();
  Block &body = bias.getBody().front();
  IRMapping mapping;
  mapping.map(body.getArgument(0), y);
  mapping.map(body.getArgument(1), v);
  for (Operation &op : body.without_terminator()) {
    if (auto gv = dyn_cast<GateValueOp>(op)) {
      mapping.map(gv.getResult(), gates.lookup(gv.getGate()));
      continue;
    }
    b.clone(op, mapping);
  }
  Value yielded =
      mapping.lookup(cast<YieldOp>(body.getTerminator()).getValue());
  if (bias.getErrorSignal())
    return yielded;
  return buildGradient(b, yielded, y);
}

LogicalResult StepBuilder::build() {
  OpBuilder &b = mb.getBuilder();
  auto retention = module.getComponent<RetentionOp>();
  auto optimizer = module.getComponent<OptimizerOp>();
  auto bias = module.getComponent<BiasOp>();
  StringRef kind = retention.getKind();
  bool decayFirst = kind == "l2" && retention.getArgs().getAs<StringAttr>(
                                        "order") &&
                    retention.getArgs().getAs<StringAttr>("order").getValue() ==
                        "before_gradient";

  // Where the gradient is taken.
  mb.setLoc(retention.getLoc());
  Value decay = kind == "l2" ? rate(retention, "decay") : Value();
  Value base = W, gradAt = anchor;
  if (decayFirst) {
    base = applyDecay(decay, W);
    gradAt = anchor == W ? base : applyDecay(decay, anchor);
  }

  mb.setLoc(module.getComponent<MemoryOp>().getLoc());
  Value y = mb.matvec(gradAt, k);
  FailureOr<Value> psi = errorSignal(bias, y);
  if (failed(psi))
    return failure();

  mb.setLoc(optimizer.getLoc());
  Value lr = rate(optimizer, "lr");
  if (optimizer.getKind() == "implicit") {
    // Longhorn: the exact minimiser of the linearised l2 step.
    Value kk = mb.sum(mb.mul(k, k));
    lr = mb.div(lr, mb.add(mb.constant(lr.getType(), 1.0), mb.mul(lr, kk)));
  }

  mb.setLoc(retention.getLoc());
  Value kept = W, stepSize = lr;
  if (kind == "l2") {
    kept = decayFirst ? base : applyDecay(decay, W);
  } else if (kind == "l2_coupled") {
    // argmin <g, W> + |W - W'|^2 / (2 lr) + |W|^2 / (2 s)
    Value s = rate(retention, "strength");
    Value denom = mb.add(s, lr);
    kept = mb.mul(mb.broadcast(mb.div(s, denom), W.getType()), W);
    stepSize = mb.div(mb.mul(s, lr), denom);
  }
  Value update = mb.outer(mb.mul(stepSize, *psi), k);
  Value next = mb.sub(kept, update);

  mb.setLoc(module.getLoc());
  Value o = mb.matvec(module.getReadAfterWrite() ? next : W, q);
  func::ReturnOp::create(b, module.getLoc(), ValueRange{next, o});
  return success();
}

struct DeriveUpdatePass
    : public miras::impl::MirasDeriveUpdateBase<DeriveUpdatePass> {
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
    Type f32 = b.getF32Type();
    auto vecK = RankedTensorType::get({module.getDk()}, f32);
    auto vecV = RankedTensorType::get({module.getDv()}, f32);
    auto mat = RankedTensorType::get({module.getDv(), module.getDk()}, f32);

    SmallVector<Type> inputs{mat};
    SmallVector<StringRef> names{"W"};
    if (module.getChunk() > 1) {
      inputs.push_back(mat);
      names.push_back("W_anchor");
    }
    inputs.append({vecK, vecK, vecV});
    names.append({"q", "k", "v"});
    for (GateOp gate : module.getGates()) {
      inputs.push_back(gate.getValueType());
      names.push_back(gate.getSymName());
    }

    b.setInsertionPointToEnd(&module.getBody().front());
    auto step = func::FuncOp::create(b, module.getLoc(), "step",
                                     b.getFunctionType(inputs, {mat, vecV}));
    step.setPrivate();
    for (auto [i, name] : llvm::enumerate(names))
      step.setArgAttr(i, "miras.name", b.getStringAttr(name));
    step.setResultAttr(0, "miras.name", b.getStringAttr("W"));
    step.setResultAttr(1, "miras.name", b.getStringAttr("o"));
    b.setInsertionPointToStart(step.addEntryBlock());

    StepBuilder builder(module, step, b);
    if (failed(builder.build()))
      return failure();
    // The bias's forward ops that only computed the loss value are dead now.
    IRRewriter rewriter(ctx);
    (void)runRegionDCE(rewriter, step.getBody());
    return success();
  }
};

} // namespace
