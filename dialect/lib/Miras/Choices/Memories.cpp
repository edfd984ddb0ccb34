//===- Memories.cpp - Memory architectures f(W; z) ------------------------===//
//
// One class per memory architecture (SPEC section 4): its arguments, its
// widths, the weight tensors it carries and its forward function, built as
// step-level ops so that reverse mode and the lowering see ordinary IR.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/Choices/Choice.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include <cmath>

using namespace mlir;
using namespace miras;
using namespace miras::choices;

namespace {

class LinearMemory final : public MemoryChoice {
public:
  const char *name() const override { return "linear"; }
  const char *summary() const override {
    return "A matrix memory: `f(W; z) = W z`, `W : [dv, dk]`.";
  }
  const char *math() const override {
    return "The associative memory of linear attention and the delta rule: the\n"
           "state is one matrix mapping keys (`dk`) to values (`dv`). Its\n"
           "gradient under any bias is rank one, `psi k^T`, which the compiler\n"
           "keeps as an outer product and never materialises.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"dk", kPosInt}, {"dv", kPosInt}};
  }
  std::pair<int64_t, int64_t> widths(const ArgLookup &a) const override {
    return {int64_t(a.number("dk", 0)), int64_t(a.number("dv", 0))};
  }
  bool isLinear() const override { return true; }
  SmallVector<RankedTensorType> weightTypes(MLIRContext *ctx, int64_t dk, int64_t dv,
                                            const ArgLookup &) const override {
    return {RankedTensorType::get({dv, dk}, Float32Type::get(ctx))};
  }
  Value buildForward(MathBuilder &mb, const ArgLookup &, ValueRange weights,
                     Value z) const override {
    return mb.matvec(weights.front(), z);
  }
};

class DiagonalMemory final : public MemoryChoice {
public:
  const char *name() const override { return "diagonal"; }
  const char *summary() const override {
    return "An element-wise memory: `f(w; z) = w * z`, `w : [dim]`.";
  }
  const char *math() const override {
    return "RetNet with head size 1, HGRN's diagonal state: each channel keeps\n"
           "one weight; `dk = dv = dim`. Its state is a vector, so retentions\n"
           "that normalise rows (kl, f_div) do not apply.";
  }
  std::vector<ArgSpec> args() const override { return {{"dim", kPosInt}}; }
  std::pair<int64_t, int64_t> widths(const ArgLookup &a) const override {
    return {int64_t(a.number("dim", 0)), int64_t(a.number("dim", 0))};
  }
  bool hasVectorState() const override { return true; }
  SmallVector<RankedTensorType> weightTypes(MLIRContext *ctx, int64_t, int64_t dv,
                                            const ArgLookup &) const override {
    return {RankedTensorType::get({dv}, Float32Type::get(ctx))};
  }
  Value buildForward(MathBuilder &mb, const ArgLookup &, ValueRange weights,
                     Value z) const override {
    return mb.mul(weights.front(), z);
  }
};

class MlpMemory final : public MemoryChoice {
public:
  const char *name() const override { return "mlp"; }
  const char *summary() const override {
    return "A deep memory: `f(z) = [z +] [LN](W_depth act(... act(W1 z)))`.";
  }
  const char *math() const override {
    return "`depth` weights applied in order with `act` (gelu, gelu_tanh, silu,\n"
           "relu, identity) between them, hidden width `expansion * dim`, then\n"
           "optionally an affine-free layer norm (eps 1e-5, biased variance) and\n"
           "a residual. The MIRAS memory is `mlp(dim = D, expansion = 4,\n"
           "act = gelu, residual, layernorm)`: `f(z) = z + LN(W2 gelu(W1 z))`,\n"
           "`W1 : [E*D, D]`, `W2 : [D, E*D]`. Its gradient is derived by reverse\n"
           "mode through every layer. `dk = dv = dim`; scalar gates only. From\n"
           "zeros every weight's gradient is zero and the memory never learns:\n"
           "declare a start, `init W1 = normal(0.02, seed = 1); init W2 =\n"
           "normal(0.02, seed = 2);` (the runtime draws the same values on every\n"
           "machine), or pass initial weights.";
  }
  std::vector<ArgSpec> args() const override {
    return {{"dim", kPosInt},
            {"depth", kPosInt, "2", choices::Range::GreaterThanOne},
            {"expansion", kPosInt, "4"},
            {"act", kKeyword, "gelu", choices::Range::Any,
             {"gelu", "gelu_tanh", "silu", "relu", "identity"}},
            {"residual", kFlag, "0"},
            {"layernorm", kFlag, "0"}};
  }
  std::pair<int64_t, int64_t> widths(const ArgLookup &a) const override {
    return {int64_t(a.number("dim", 0)), int64_t(a.number("dim", 0))};
  }
  bool acceptsChannelGates() const override { return false; }
  SmallVector<RankedTensorType> weightTypes(MLIRContext *ctx, int64_t dk, int64_t dv,
                                            const ArgLookup &a) const override {
    auto depth = static_cast<int64_t>(a.number("depth", 2));
    auto hidden = static_cast<int64_t>(a.number("expansion", 4)) * dk;
    SmallVector<RankedTensorType> types;
    for (int64_t layer = 0; layer < depth; ++layer) {
      int64_t rows = layer + 1 == depth ? dv : hidden;
      int64_t cols = layer == 0 ? dk : hidden;
      types.push_back(RankedTensorType::get({rows, cols}, Float32Type::get(ctx)));
    }
    return types;
  }
  Value buildForward(MathBuilder &mb, const ArgLookup &a, ValueRange weights,
                     Value z) const override {
    std::string act = a.keyword("act", "gelu");
    Value h = z;
    for (auto [layer, weight] : llvm::enumerate(weights)) {
      h = mb.matvec(weight, h);
      if (layer + 1 < weights.size())
        h = activate(mb, act, h);
    }
    if (a.flag("layernorm"))
      h = layerNorm(mb, h);
    if (a.flag("residual"))
      h = mb.add(z, h);
    return h;
  }

private:
  /// The activation between layers.
  static Value activate(MathBuilder &mb, const std::string &act, Value x) {
    Type t = x.getType();
    auto c = [&](double value) { return mb.constant(t, value); };
    // One builder call per statement wherever two operands create ops: C++ leaves the
    // order of argument evaluation unspecified, and the IR must not depend on the
    // host compiler.
    if (act == "gelu") { // 0.5 x (1 + erf(x / sqrt 2))
      Value erf = mb.erf(mb.mul(c(M_SQRT1_2), x));
      Value onePlusErf = mb.add(c(1.0), erf);
      return mb.mul(mb.mul(c(0.5), x), onePlusErf);
    }
    if (act == "gelu_tanh") { // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
      Value cube = mb.mul(x, mb.mul(x, x));
      Value cubic = mb.add(x, mb.mul(c(0.044715), cube));
      Value inner = mb.mul(c(0.7978845608028654), cubic);
      Value tanh = mb.tanh(inner);
      Value onePlusTanh = mb.add(c(1.0), tanh);
      return mb.mul(mb.mul(c(0.5), x), onePlusTanh);
    }
    if (act == "silu") { // x / (1 + exp(-x))
      Value expNeg = mb.exp(mb.neg(x));
      return mb.div(x, mb.add(c(1.0), expNeg));
    }
    if (act == "relu")
      return mb.max(x, c(0.0));
    return x; // identity (the argument table admits nothing else)
  }

  /// Affine-free layer norm over the elements of `x`.
  static Value layerNorm(MathBuilder &mb, Value x) {
    auto n = static_cast<double>(cast<RankedTensorType>(x.getType()).getNumElements());
    Type f32 = mb.getBuilder().getF32Type();
    Value count = mb.constant(f32, n);
    Value mean = mb.div(mb.sum(x), count);
    Value centred = mb.sub(x, mean);
    Value countAgain = mb.constant(f32, n);
    Value variance = mb.div(mb.sum(mb.mul(centred, centred)), countAgain);
    Value scale = mb.sqrt(mb.add(variance, mb.constant(f32, 1e-5)));
    return mb.div(centred, scale);
  }
};

} // namespace

void choices::registerMemories(ChoiceRegistry &registry) {
  registry.add(std::make_unique<LinearMemory>());
  registry.add(std::make_unique<DiagonalMemory>());
  registry.add(std::make_unique<MlpMemory>());
}
