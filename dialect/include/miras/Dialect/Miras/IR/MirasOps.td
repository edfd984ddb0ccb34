//===- MirasOps.td - miras dialect operations ---------------*- tablegen -*-===//
#ifndef MIRAS_OPS_TD
#define MIRAS_OPS_TD

include "miras/Dialect/Miras/IR/MirasDialect.td"
include "miras/Dialect/Miras/IR/MirasAttrs.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/RegionKindInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

//===----------------------------------------------------------------------===//
// Spec level
//===----------------------------------------------------------------------===//

def Miras_MemoryModuleOp : Miras_Op<"module", [
    SymbolTable, Symbol, IsolatedFromAbove, NoTerminator, SingleBlock,
    NoRegionArguments]> {
  let summary = "A memory module: the four MIRAS choices and their inputs";
  let description = [{
    Holds one `miras.memory`, `miras.bias`, `miras.retention` and
    `miras.optimizer`, any number of `miras.param`, `miras.gate` and
    `miras.init` (one per state at most), and (after
    `miras-derive-update`) the derived `func.func @step`. `dk` and `dv` are the
    key and value widths, `chunk` the chunk size of SPEC section 7,
    `read_after_write` selects `o_t = f(W_t; q_t)` over `o_t = f(W_{t-1}; q_t)`,
    and `steps` is the number of (k, v) pairs per token (`multistep(n)`).

    Example:

    ```mlir
    miras.module @deltanet attributes {chunk = 1 : i64, dk = 16 : i64,
                                       dv = 16 : i64, read_after_write = true} {
      miras.param @D = 16 : i64
      miras.gate @eta : scalar
      miras.memory "linear" {dk = 16 : i64, dv = 16 : i64}
      miras.bias "l2" loss {
      ^bb0(%y: tensor<16xf32>, %v: tensor<16xf32>):
        %e = arith.subf %y, %v : tensor<16xf32>
        %sq = arith.mulf %e, %e : tensor<16xf32>
        %s = miras.sum %sq : tensor<16xf32>
        %half = arith.constant 5.000000e-01 : f32
        %l = arith.mulf %half, %s : f32
        miras.yield %l : f32
      }
      miras.retention "none" {}
      miras.optimizer "gd" {lr = @eta}
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, I64Attr:$dk, I64Attr:$dv,
                       I64Attr:$chunk, BoolAttr:$read_after_write,
                       DefaultValuedAttr<I64Attr, "1">:$steps);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The single op of type OpTy in the body, or null.
    template <typename OpTy> OpTy getComponent() {
      for (mlir::Operation &op : getBody().front())
        if (auto typed = llvm::dyn_cast<OpTy>(op))
          return typed;
      return nullptr;
    }
    /// The gate declarations in declaration (= ABI) order.
    llvm::SmallVector<class GateOp> getGates();
    /// How state `state` starts: its miras.init, or zeros without one.
    ::miras::choices::StateInit getStateInit(llvm::StringRef state);
  }];
}

def Miras_ParamOp : Miras_Op<"param", [Symbol, HasParent<"MemoryModuleOp">]> {
  let summary = "A compile-time parameter and the value it was compiled with";
  let description = [{
    Kept for metadata and readability; MLIRGen has already substituted the
    value wherever the parameter is used.

    ```mlir
    miras.param @D = 64 : i64
    miras.param @gamma = 0.96875 : f64
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, TypedAttrInterface:$value);
  let assemblyFormat = "$sym_name `=` $value attr-dict";
}

def Miras_GateOp : Miras_Op<"gate", [Symbol, HasParent<"MemoryModuleOp">]> {
  let summary = "A per-token input computed by the host model";
  let description = [{
    A scalar gate is one f32 per (batch, token, head); a channel gate is a
    vector along the key (`dk`) or value (`dv`) axis of the memory.

    ```mlir
    miras.gate @eta : scalar
    miras.gate @alpha : channel along "dk" dim 64
    miras.gate @beta : scalar per_step   // multistep's lr: one value per step
    miras.gate @alpha : scalar in (0.0, 1.0]
    miras.gate @delta : scalar in [1.0, inf)
    ```

    The optional range is the values the host promises (the DSL's
    `gate alpha : scalar in (0, 1];`), carried to the library metadata:
    `range_lo` and `range_hi` (both or neither, `range_lo <= range_hi`, an
    infinite end open), each end closed when `range_lo_closed` /
    `range_hi_closed` is set.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, UnitAttr:$channel,
                       OptionalAttr<StrAttr>:$axis, I64Attr:$dim,
                       UnitAttr:$per_step,
                       OptionalAttr<F64Attr>:$range_lo,
                       OptionalAttr<F64Attr>:$range_hi,
                       UnitAttr:$range_lo_closed, UnitAttr:$range_hi_closed);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The type of one token's value: f32 or tensor<dim x f32>.
    mlir::Type getValueType();
  }];
}

def Miras_InitOp : Miras_Op<"init", [HasParent<"MemoryModuleOp">]> {
  let summary = "How a carried state starts when the host gives none";
  let description = [{
    The DSL's `init W = uniform;`: the value the runtime fills a state with
    when a call passes no initial state for it (miras_state_init in the
    library's metadata; the module's own entry points still read a missing
    state as zeros). `state` names one of the states the module carries (the
    step signature's W / A / W1.. / S..; not an anchor or the chunk
    position), at most once. `kind` is `zeros`, `identity` (`scale` on the
    diagonal of the last two axes, default 1), `uniform` (every entry `scale`,
    default 1/n with n the state's last axis: each row on the simplex) or
    `normal` (N(0, scale^2) entries from `seed`, runtime.h's generator; both
    required). A state without a miras.init starts from zeros. The module's
    verifier asks the retention whether its first step is defined from this
    start (f_div needs rows on the simplex; a user map must be finite at the
    start's values).

    ```mlir
    miras.init "W" = "uniform"
    miras.init "A" = "identity" {scale = 5.000000e-01 : f64}
    miras.init "W1" = "normal" {scale = 2.000000e-02 : f64, seed = 7 : i64}
    ```
  }];
  let arguments = (ins StrAttr:$state, StrAttr:$kind, OptionalAttr<F64Attr>:$scale,
                       OptionalAttr<I64Attr>:$seed);
  let assemblyFormat = "$state `=` $kind attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The declaration as the choice definitions read it (kind, scale, seed).
    ::miras::choices::StateInit getStateInit();
  }];
}

def Miras_MemoryOp : Miras_Op<"memory", [HasParent<"MemoryModuleOp">]> {
  let summary = "The memory architecture f(W; z)";
  let description = [{
    Carries a `#miras.memory` choice attribute: the kind's definition in the
    ChoiceRegistry (`dialect/lib/Miras/Choices/Memories.cpp`, resolved when
    the op is parsed or built; an unknown kind is a parse error) and its
    arguments, always with the widths `dk` and `dv`. The kinds, with their
    math, are listed in `docs/CHOICES.md`:

    `linear`: `f(W; z) = W z` with `W : [dv, dk]`.
    `diagonal`: an element-wise (vector) memory `f(w; z) = w ⊙ z`, `w : [D]`.
    `mlp`: `depth` weights applied in order with `act` (gelu, gelu_tanh,
    silu, relu, identity) between them, then optionally an affine-free
    `layernorm` and a `residual`: the MIRAS memory is
    `f(z) = z + LN(W2 gelu(W1 z))`, `W1 : [E*D, D]`, `W2 : [D, E*D]`.

    ```mlir
    miras.memory "linear" {dk = 64 : i64, dv = 64 : i64}
    miras.memory "mlp" {act = "gelu", depth = 2.0 : f64, dk = 64 : i64,
                        dv = 64 : i64, expansion = 4.0 : f64,
                        layernorm = 1.0 : f64, residual = 1.0 : f64}
    ```
  }];
  let arguments = (ins Miras_MemoryAttr:$choice);
  let hasCustomAssemblyFormat = 1;
  let extraClassDeclaration = [{
    /// The definition of the kind (Choices/Memories.cpp).
    const ::miras::choices::MemoryChoice &getDefinition() {
      return *getChoice().getDefinition();
    }
    ::mlir::DictionaryAttr getArgs() { return getChoice().getArgs(); }
  }];
}

def Miras_BiasOp : Miras_Op<"bias", [HasParent<"MemoryModuleOp">]> {
  let summary = "The attentional bias, as a loss or as an error signal";
  let description = [{
    The region takes the prediction `y = f(W; k)` and the target `v` (both
    `tensor<dv x f32>`). With `loss` it yields the scalar inner loss `L(y, v)`,
    which `miras-derive-update` differentiates; with `error_signal` it yields
    `psi(y, v)` directly (for signals that are not the gradient of a simple
    loss, such as the smoothed lp). `name` is the built-in it came from, or
    `expression` for a user-written bias.

    ```mlir
    miras.bias "l2" loss {
    ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
      %e = arith.subf %y, %v : tensor<4xf32>
      %p = arith.constant dense<2.0> : tensor<4xf32>
      %sq = math.powf %e, %p : tensor<4xf32>
      %s = miras.sum %sq : tensor<4xf32>
      %h = arith.constant 0.5 : f32
      %l = arith.mulf %h, %s : f32
      miras.yield %l : f32
    }
    ```
  }];
  let arguments = (ins StrAttr:$name, UnitAttr:$error_signal);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasRegionVerifier = 1;
}

def Miras_RetentionOp : Miras_Op<"retention", [HasParent<"MemoryModuleOp">]> {
  let summary = "How the old state is kept (SPEC section 5)";
  let description = [{
    Carries a `#miras.retention` choice attribute: the kind's definition
    (`dialect/lib/Miras/Choices/Retentions.cpp`) and its arguments, checked
    by the module's verifier against the definition's argument table and
    combination rules (the ones the frontend runs). The built-ins:

    `none`; `l2` with `decay` (a number, or a gate symbol: scalar, or channel
    scaling the columns (`dk`) or rows (`dv`) of W) and `order` (`decoupled`:
    `W_t = a W_{t-1} - eta g(W_{t-1})`, or `before_gradient`:
    `W_t = a W_{t-1} - eta g(a W_{t-1})`); `l2_coupled` with `strength` s:
    `W_t = s/(s+eta) W_{t-1} - s eta/(s+eta) g`.
    Mirror retentions keep a dual state `A` with `A_t = decay A_{t-1} - eta g`
    and read the weights through a map: `lq` with `q` gives
    `W = A / ||A||_q^(q-2)` (Moneta), `kl` gives a softmax over each row of
    each weight (Memora).

    ```mlir
    miras.retention "l2" {decay = @alpha, order = "before_gradient"}
    miras.retention "lq" {decay = @alpha, q = 4.0 : f64}
    ```
  }];
  let arguments = (ins Miras_RetentionAttr:$choice);
  let hasCustomAssemblyFormat = 1;
  let extraClassDeclaration = [{
    /// The definition of the kind (Choices/Retentions.cpp).
    const ::miras::choices::RetentionChoice &getDefinition() {
      return *getChoice().getDefinition();
    }
    ::mlir::DictionaryAttr getArgs() { return getChoice().getArgs(); }
  }];
}

def Miras_OptimizerOp : Miras_Op<"optimizer", [HasParent<"MemoryModuleOp">]> {
  let summary = "The memory algorithm: how one step is taken";
  let description = [{
    Carries a `#miras.optimizer` choice attribute: the kind's definition
    (`dialect/lib/Miras/Choices/Optimizers.cpp`: its update, and the states it
    carries besides the weights) and its arguments. The built-ins:

    `gd` with learning rate `lr`; `implicit` (Longhorn; linear memory and l2
    bias only): the exact implicit step `W_t = W_{t-1} - c (W_{t-1} k - v) k^T`
    with `c = lr / (1 + lr ||k||^2)`; `momentum` (Titans) with `lr` and
    `beta`: `S_t = beta S_{t-1} - lr g`, `W_t = decay W_{t-1} + S_t`. Rates
    are numbers or scalar gates. `multistep` (DeltaProduct) takes `n` gd
    steps per token on the token's `n` (k, v, lr) triples, after the decay.

    ```mlir
    miras.optimizer "gd" {lr = @eta}
    miras.optimizer "momentum" {beta = @mu, lr = @theta}
    miras.optimizer "gd" {lr = 5.000000e-01 : f64}
    ```
  }];
  let arguments = (ins Miras_OptimizerAttr:$choice);
  let hasCustomAssemblyFormat = 1;
  let extraClassDeclaration = [{
    /// The definition of the kind (Choices/Optimizers.cpp).
    const ::miras::choices::OptimizerChoice &getDefinition() {
      return *getChoice().getDefinition();
    }
    ::mlir::DictionaryAttr getArgs() { return getChoice().getArgs(); }
  }];
}

def Miras_MirrorMapOp : Miras_Op<"mirror_map", [HasParent<"MemoryModuleOp">]> {
  let summary = "A user-written Bregman map W = map(A), element by element";
  let description = [{
    The inverse `(phi')^{-1}` of a separable Bregman retention written in the
    DSL (`retention bregman(map(A) = ...)`), as a function of one element:
    the derivation applies it to every element of the dual state.

    ```mlir
    miras.retention "bregman" {decay = 1.0 : f64, map = "user"}
    miras.mirror_map {
    ^bb0(%a: f32):
      %e = math.exp %a : f32
      miras.yield %e : f32
    }
    ```
  }];
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "attr-dict-with-keyword $body";
  let hasRegionVerifier = 1;
}

def Miras_YieldOp : Miras_Op<"yield", [Pure, Terminator,
    ParentOneOf<["BiasOp", "MirrorMapOp"]>]> {
  let summary = "Yields the value of a miras.bias or miras.mirror_map region";
  let description = [{
    ```mlir
    miras.yield %loss : f32
    ```
  }];
  let arguments = (ins AnyType:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

def Miras_GateValueOp : Miras_Op<"gate_value", [Pure,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "The current token's value of a gate, inside a bias region";
  let description = [{
    Lets a bias depend on a gate (a per-token Huber threshold, say).
    `miras-derive-update` replaces it by the step function's gate argument.

    ```mlir
    %delta = miras.gate_value @delta : f32
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$gate);
  let results = (outs AnyTypeOf<[F32, RankedTensorOf<[F32]>]>:$result);
  let assemblyFormat = "$gate attr-dict `:` type($result)";
}

//===----------------------------------------------------------------------===//
// Step level: tensor math on one token
//
// Every op here has a reverse-mode rule (DifferentiableOpInterface, the C++ in
// StepOps.cpp) and folds a constant operand away. The ops linear in an operand
// (matvec, vecmat, outer, broadcast, sum) canonicalise by moving a negation of
// that operand out to their result, where `a - (-b)` can cancel it.
//===----------------------------------------------------------------------===//

include "miras/Dialect/Miras/IR/DifferentiableOpInterface.td"

def Miras_Differentiable : DeclareOpInterfaceMethods<Miras_DifferentiableOpInterface>;

def F32Vector : 1DTensorOf<[F32]>;
def F32Matrix : 2DTensorOf<[F32]>;

def Miras_MatVecOp : Miras_Op<"matvec", [Pure, Miras_Differentiable]> {
  let summary = "Matrix-vector product A x";
  let description = [{
    Applies a linear memory to a key or query: `y_i = sum_j A_ij x_j`.

    ```mlir
    %y = miras.matvec %W, %k : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
    ```

    Folds to a constant when both operands are splat constants or either is
    zero; `A (-x)` and `(-A) x` canonicalise to `-(A x)`.
  }];
  let arguments = (ins F32Matrix:$matrix, F32Vector:$vector);
  let results = (outs F32Vector:$result);
  let assemblyFormat = [{
    $matrix `,` $vector attr-dict `:` type($matrix) `,` type($vector) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

def Miras_VecMatOp : Miras_Op<"vecmat", [Pure, Miras_Differentiable]> {
  let summary = "Vector-matrix product x^T A (the transposed matvec)";
  let description = [{
    `r_j = sum_i x_i A_ij`: how an adjoint flows back through a matvec,
    `dz = W^T g`, without materialising the transpose.

    ```mlir
    %r = miras.vecmat %g, %W : tensor<4xf32>, tensor<4x8xf32> -> tensor<8xf32>
    ```

    Folds and canonicalises as `miras.matvec` does.
  }];
  let arguments = (ins F32Vector:$vector, F32Matrix:$matrix);
  let results = (outs F32Vector:$result);
  let assemblyFormat = [{
    $vector `,` $matrix attr-dict `:` type($vector) `,` type($matrix) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

class Miras_RowReductionOp<string mnemonic>
    : Miras_Op<mnemonic, [Pure, Miras_Differentiable]> {
  let arguments = (ins F32Matrix:$input);
  let results = (outs F32Vector:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Miras_RowSumOp : Miras_RowReductionOp<"row_sum"> {
  let summary = "Sum of each row of a matrix";
  let description = [{
    The normaliser of a row-wise softmax (Memora's KL retention).

    ```mlir
    %z = miras.row_sum %e : tensor<4x8xf32> -> tensor<4xf32>
    ```

    The row sums of a splat constant fold to a constant.
  }];
}

def Miras_RowMaxOp : Miras_RowReductionOp<"row_max"> {
  let summary = "Maximum of each row of a matrix";
  let description = [{
    The stabilising shift of a row-wise softmax.

    ```mlir
    %m = miras.row_max %A : tensor<4x8xf32> -> tensor<4xf32>
    ```

    Its reverse-mode rule splits a row's adjoint evenly between the entries
    that attain the maximum. The row maxima of a splat constant fold.
  }];
}

def Miras_ExtractOp : Miras_Op<"extract", [Pure, Miras_Differentiable]> {
  let summary = "Row `index` of a matrix, or element `index` of a vector";
  let description = [{
    Picks one step's key, value or learning rate in a multistep module,
    whose per-token inputs carry one row per step.

    ```mlir
    %k1 = miras.extract %k [1] : tensor<2x8xf32> -> tensor<8xf32>
    %b1 = miras.extract %beta [1] : tensor<2xf32> -> f32
    ```

    Extracting from a splat constant folds to a constant.
  }];
  let arguments = (ins AnyTypeOf<[F32Vector, F32Matrix]>:$input, I64Attr:$index);
  let results = (outs AnyTypeOf<[F32, F32Vector]>:$result);
  let assemblyFormat = [{
    $input `[` $index `]` attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Miras_OuterOp : Miras_Op<"outer", [Pure, Miras_Differentiable]> {
  let summary = "Outer product a b^T";
  let description = [{
    The rank-1 gradient of a linear memory, `g = psi k^T`. Lowering never
    materialises it: it is fused into the state update.

    ```mlir
    %g = miras.outer %psi, %k : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
    ```

    Folds to a constant when both operands are splat constants or either is
    zero; `(-a) b^T` and `a (-b)^T` canonicalise to `-(a b^T)`, so that
    `W - (-a) b^T` reads `W + a b^T` after canonicalisation.
  }];
  let arguments = (ins F32Vector:$lhs, F32Vector:$rhs);
  let results = (outs F32Matrix:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

def Miras_BroadcastOp : Miras_Op<"broadcast", [Pure, Miras_Differentiable]> {
  let summary = "Broadcasts a scalar or vector to a larger tensor";
  let description = [{
    `dims` lists, for each input dimension, the result dimension it runs
    along (empty for a scalar input). A key-axis channel gate scaling the
    columns of W is broadcast with `dims = [1]`.

    ```mlir
    %s = miras.broadcast %eta [] : f32 -> tensor<8xf32>
    %c = miras.broadcast %alpha [1] : tensor<8xf32> -> tensor<4x8xf32>
    ```

    A broadcast constant folds to a splat constant. Canonicalisation composes
    a broadcast of a broadcast scalar into one broadcast, and moves a
    negation of the input out to the result.
  }];
  let arguments = (ins AnyTypeOf<[F32, F32Vector]>:$input,
                       DenseI64ArrayAttr:$dims);
  let results = (outs AnyTypeOf<[F32Vector, F32Matrix]>:$result);
  let assemblyFormat = [{
    $input $dims attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

class Miras_ReductionOp<string mnemonic>
    : Miras_Op<mnemonic, [Pure, Miras_Differentiable]> {
  let arguments = (ins AnyTypeOf<[F32Vector, F32Matrix]>:$input);
  let results = (outs F32:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasFolder = 1;
}

def Miras_SumOp : Miras_ReductionOp<"sum"> {
  let summary = "Sum of all the elements of a vector or matrix";
  let description = [{
    ```mlir
    %s = miras.sum %x : tensor<8xf32>
    %t = miras.sum %A : tensor<4x8xf32>
    ```

    The sum of a splat constant folds to a constant; `sum(-x)` canonicalises
    to `-sum(x)`.
  }];
  let hasCanonicalizer = 1;
}

def Miras_NormOp : Miras_ReductionOp<"norm"> {
  let summary = "Euclidean (Frobenius) norm of a vector or matrix";
  let description = [{
    ```mlir
    %n = miras.norm %e : tensor<8xf32>
    ```

    Its reverse-mode rule takes the zero subgradient at `x = 0`. The norm of
    a splat constant folds to a constant.
  }];
}

def Miras_SignOp : Miras_Op<"sign", [Pure, SameOperandsAndResultType,
    Elementwise, Miras_Differentiable]> {
  let summary = "Element-wise sign: -1, 0 or +1";
  let description = [{
    ```mlir
    %s = miras.sign %e : tensor<8xf32>
    ```

    Its derivative is zero almost everywhere. The sign of a constant folds,
    and `sign(sign(x))` folds to `sign(x)`.
  }];
  let arguments = (ins AnyTypeOf<[F32, F32Vector, F32Matrix]>:$input);
  let results = (outs AnyTypeOf<[F32, F32Vector, F32Matrix]>:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasFolder = 1;
}

#endif // MIRAS_OPS_TD
