//===- Memory.cpp - Memory architectures and retention maps ---------------===//
#include "miras/Dialect/Miras/Transforms/Memory.h"

#include "mlir/IR/IRMapping.h"

#include <cmath>

using namespace mlir;
using namespace miras;

static double numberArg(Operation *component, StringRef name, double fallback) {
  auto args = component->getAttrOfType<DictionaryAttr>("args");
  if (auto value = args ? args.getAs<FloatAttr>(name) : FloatAttr())
    return value.getValueAsDouble();
  if (auto value = args ? args.getAs<IntegerAttr>(name) : IntegerAttr())
    return static_cast<double>(value.getInt());
  return fallback;
}

static StringRef keywordArg(Operation *component, StringRef name,
                            StringRef fallback) {
  auto args = component->getAttrOfType<DictionaryAttr>("args");
  if (auto value = args ? args.getAs<StringAttr>(name) : StringAttr())
    return value.getValue();
  return fallback;
}

SmallVector<RankedTensorType> miras::getWeightTypes(MemoryModuleOp module) {
  MemoryOp memory = module.getComponent<MemoryOp>();
  Type f32 = Float32Type::get(module.getContext());
  int64_t dk = module.getDk(), dv = module.getDv();
  if (memory.getKind() == "linear")
    return {RankedTensorType::get({dv, dk}, f32)};
  if (memory.getKind() == "diagonal")
    return {RankedTensorType::get({dv}, f32)};
  auto depth = static_cast<int64_t>(numberArg(memory, "depth", 2));
  auto hidden = static_cast<int64_t>(numberArg(memory, "expansion", 4)) * dk;
  SmallVector<RankedTensorType> types;
  for (int64_t layer = 0; layer < depth; ++layer) {
    int64_t rows = layer + 1 == depth ? dv : hidden;
    int64_t cols = layer == 0 ? dk : hidden;
    types.push_back(RankedTensorType::get({rows, cols}, f32));
  }
  return types;
}

/// The activation between MLP layers.
static Value activate(MathBuilder &mb, StringRef act, Value x) {
  Type t = x.getType();
  auto c = [&](double value) { return mb.constant(t, value); };
  if (act == "gelu") // 0.5 x (1 + erf(x / sqrt 2))
    return mb.mul(mb.mul(c(0.5), x),
                  mb.add(c(1.0), mb.erf(mb.mul(c(M_SQRT1_2), x))));
  if (act == "gelu_tanh") { // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    Value cube = mb.mul(x, mb.mul(x, x));
    Value inner = mb.mul(c(0.7978845608028654),
                         mb.add(x, mb.mul(c(0.044715), cube)));
    return mb.mul(mb.mul(c(0.5), x), mb.add(c(1.0), mb.tanh(inner)));
  }
  if (act == "silu") // x / (1 + exp(-x))
    return mb.div(x, mb.add(c(1.0), mb.exp(mb.neg(x))));
  if (act == "relu")
    return mb.max(x, c(0.0));
  return x; // identity
}

/// Affine-free layer norm over the elements of `x` (eps 1e-5, biased variance).
static Value layerNorm(MathBuilder &mb, Value x) {
  auto n = static_cast<double>(cast<RankedTensorType>(x.getType()).getNumElements());
  Type f32 = mb.getBuilder().getF32Type();
  Value mean = mb.div(mb.sum(x), mb.constant(f32, n));
  Value centred = mb.sub(x, mean);
  Value variance = mb.div(mb.sum(mb.mul(centred, centred)), mb.constant(f32, n));
  Value scale = mb.sqrt(mb.add(variance, mb.constant(f32, 1e-5)));
  return mb.div(centred, scale);
}

Value miras::buildMemoryForward(MathBuilder &mb, MemoryOp memory,
                                ValueRange weights, Value z) {
  if (memory.getKind() == "linear")
    return mb.matvec(weights.front(), z);
  if (memory.getKind() == "diagonal") // f(w; z) = w ⊙ z
    return mb.mul(weights.front(), z);
  StringRef act = keywordArg(memory, "act", "gelu");
  Value h = z;
  for (auto [layer, weight] : llvm::enumerate(weights)) {
    h = mb.matvec(weight, h);
    if (layer + 1 < weights.size())
      h = activate(mb, act, h);
  }
  if (numberArg(memory, "layernorm", 0) != 0)
    h = layerNorm(mb, h);
  if (numberArg(memory, "residual", 0) != 0)
    h = mb.add(z, h);
  return h;
}

/// The module's miras.mirror_map applied element-wise to `dual`: each scalar
/// op of the region is rebuilt on the tensor, scalar constants broadcast.
static Value applyUserMap(MathBuilder &mb, RetentionOp retention, Value dual) {
  auto module = retention->getParentOfType<MemoryModuleOp>();
  Block &body = module.getComponent<MirrorMapOp>().getBody().front();
  OpBuilder &b = mb.getBuilder();
  Type tensor = dual.getType();
  IRMapping mapping;
  mapping.map(body.getArgument(0), dual);
  for (Operation &op : body.without_terminator()) {
    if (isa<arith::ConstantOp>(op)) {
      b.clone(op, mapping);
      continue;
    }
    SmallVector<Value> operands;
    for (Value operand : op.getOperands())
      operands.push_back(mb.broadcast(mapping.lookup(operand), tensor));
    OperationState state(op.getLoc(), op.getName());
    state.addOperands(operands);
    state.addAttributes(op.getAttrs());
    state.addTypes(tensor);
    mapping.map(op.getResult(0), b.create(state)->getResult(0));
  }
  return mb.broadcast(
      mapping.lookup(cast<YieldOp>(body.getTerminator()).getValue()), tensor);
}

bool miras::isMirrorRetention(RetentionOp retention) {
  StringRef kind = retention.getKind();
  return kind == "lq" || kind == "kl" || kind == "ftrl_elastic" ||
         kind == "bregman";
}

Value miras::buildMirrorMap(MathBuilder &mb, RetentionOp retention, Value dual) {
  Type f32 = mb.getBuilder().getF32Type();
  if (retention.getKind() == "lq") {
    // W = A / ||A||_q^(q-2) = A * (sum |A|^q)^(-(q-2)/q)
    double q = numberArg(retention, "q", 2);
    if (q == 2)
      return dual;
    // |A|^q: the absolute value is redundant for even integer q.
    bool evenInteger = q == std::floor(q) && static_cast<int64_t>(q) % 2 == 0;
    Value magnitude = evenInteger ? dual : mb.abs(dual);
    Value total = mb.sum(mb.pow(magnitude, mb.constant(dual.getType(), q)));
    // For q > 2 the map has no limit at A = 0 (|W| grows like |A|^(3-q));
    // we define map(0) = 0 rather than let 0 * inf poison the state.
    Value zero = mb.constant(f32, 0.0);
    Value scale = mb.select(mb.compare(arith::CmpFPredicate::OGT, total, zero),
                            mb.pow(total, mb.constant(f32, -(q - 2) / q)), zero);
    return mb.mul(mb.broadcast(scale, dual.getType()), dual);
  }
  if (retention.getKind() == "bregman") {
    // W = (phi')^{-1}(A), element-wise.
    StringRef map = keywordArg(retention, "map", "");
    if (map == "user")
      return applyUserMap(mb, retention, dual);
    if (map == "exp")
      return mb.exp(dual);
    if (map == "tanh")
      return mb.tanh(dual);
    Type t = dual.getType(); // sigmoid
    return mb.div(mb.constant(t, 1.0),
                  mb.add(mb.constant(t, 1.0), mb.exp(mb.neg(dual))));
  }
  if (retention.getKind() == "ftrl_elastic") {
    // Dual averaging with an elastic net: W = S_{eta/a}(A) (SPEC section 5).
    double threshold = numberArg(retention, "eta", 0) / numberArg(retention, "a", 1);
    return mb.softThreshold(dual, mb.constant(dual.getType(), threshold));
  }
  // kl: softmax over each row, shifted by the row maximum for stability.
  Value shift = mb.broadcast(mb.rowMax(dual), dual.getType(), /*axis=*/0);
  Value weights = mb.exp(mb.sub(dual, shift));
  Value norm = mb.broadcast(mb.rowSum(weights), dual.getType(), /*axis=*/0);
  return mb.div(weights, norm);
}
