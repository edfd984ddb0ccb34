//===- AST.h - Plain C++ syntax tree of a .miras file -----------*- C++ -*-===//
//
// The frontend's only interface to the rest of the compiler. It holds no ANTLR
// and no MLIR types, so the parser (built with exceptions and RTTI, as the ANTLR
// runtime requires) and the MLIR side (built without) share nothing but this.
//
// Two layers:
//  * the syntax tree (`Module`), exactly what the user wrote, with locations;
//  * the resolved module (`ResolvedModule`), produced by semantic analysis:
//    params substituted, dimensions evaluated, built-in components checked and
//    built-in biases expanded to their defining expression. MLIRGen consumes
//    only the resolved module.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_FRONTEND_AST_H
#define MIRAS_FRONTEND_AST_H

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace miras::ast {

/// A position in a source file. Lines and columns are 1-based (MLIR's convention).
struct SourceLoc {
  std::string file;
  int line = 0;
  int col = 0;
};

//===----------------------------------------------------------------------===//
// Expressions (bias expressions, argument values, dimensions)
//===----------------------------------------------------------------------===//

struct Expr;
using ExprPtr = std::shared_ptr<Expr>;

struct Expr {
  enum class Kind {
    Number, // `number`
    Name,   // `name`: y, v, a param, a gate or a built-in's argument
    Unary,  // `op` is "-"; operands[0]
    Binary, // `op` is one of + - * / ^ < <= > >= ; operands[0], operands[1]
    Call    // `name`(operands...): abs sign tanh sqrt exp log cosh min max sum norm
            // where
  };
  // Comparisons (< <= > >=) appear only as operands[0] of `where(cond, a, b)`
  // (Sema enforces it) and compare two scalars: where selects a or b for the
  // whole token, and its shape is the broadcast of a and b.
  Kind kind = Kind::Number;
  SourceLoc loc;
  double number = 0.0;
  std::string name; // Name: identifier; Call: callee
  std::string op;   // Unary / Binary operator spelling
  std::vector<ExprPtr> operands;
  /// Number: written without '.' or exponent (`64`), so it may size a dimension.
  /// (Added by the frontend; params take their integer-ness from it.)
  bool isInteger = false;
};

//===----------------------------------------------------------------------===//
// Syntax tree
//===----------------------------------------------------------------------===//

/// `param D = 64;`
struct ParamDecl {
  std::string name;
  ExprPtr value; // a number literal (possibly negated)
  SourceLoc loc;
};

/// `in (0, 1]` after a gate's kind: each end open or closed; `inf` / `-inf`
/// are plain names here (Sema reads them).
struct GateRangeDecl {
  ExprPtr lo, hi;
  bool loClosed = false, hiClosed = false;
  SourceLoc loc;      // the opening bracket
  SourceLoc closeLoc; // the closing bracket
};

/// `gate eta : scalar;`, `gate alpha : channel(dk);`, optionally with a range:
/// `gate alpha : scalar in (0, 1];`.
struct GateDecl {
  std::string name;
  bool channel = false;
  std::string axis; // "dk" or "dv" for channel gates
  std::optional<GateRangeDecl> range;
  SourceLoc loc;
  SourceLoc axisLoc;
};

/// `name = value` or a positional `value` inside a component's parentheses.
/// A bare identifier value (`act = gelu`, `residual`) is an Expr of kind Name.
struct Arg {
  std::string name; // empty when positional
  std::string boundName; // `map(A) = expr`: the function's parameter (A)
  ExprPtr value;
  SourceLoc loc;
};

/// `linear(dk = D, dv = D)`, `gd(lr = eta)`, `none`.
struct Component {
  std::string name;
  std::vector<Arg> args;
  SourceLoc loc;
};

/// `bias l2;` (builtin) or `bias(y, v) = 0.5 * sum((y - v)^2);` (expression).
struct BiasDecl {
  bool isExpression = false;
  Component builtin;        // when !isExpression
  std::string predictionName; // when isExpression: name bound to f(W; k) (usually y)
  std::string targetName;     // when isExpression: name bound to v
  ExprPtr expr;
  SourceLoc loc;
};

/// `init W = uniform;`: how the named state starts when the host gives none.
/// The value is written like a component: `zeros`, `identity(0.5)`,
/// `normal(0.02, seed = 7)`.
struct InitDecl {
  std::string state;
  Component value;
  SourceLoc loc; // the state's name
};

struct Module {
  std::string name;
  SourceLoc loc;
  std::vector<ParamDecl> params;
  std::vector<GateDecl> gates;
  std::optional<Component> memory;
  std::optional<BiasDecl> bias;
  std::optional<Component> retention;
  std::optional<Component> optimizer;
  std::optional<std::string> read; // "after_write" | "before_write"
  SourceLoc readLoc;
  ExprPtr chunk;
  SourceLoc chunkLoc;
  std::vector<InitDecl> inits; // declaration order
};

//===----------------------------------------------------------------------===//
// Resolved module (output of semantic analysis, input of MLIRGen)
//===----------------------------------------------------------------------===//

struct ResolvedParam {
  std::string name;
  double value = 0.0;
  bool isInteger = true;
  bool overridden = false; // set from the command line (-DNAME=VALUE)
  SourceLoc loc;
};

/// The values a gate may take, as declared (`in (0, 1]`): lo <= hi, an
/// infinite end is open, and the set is not empty.
struct GateRange {
  double lo = 0.0, hi = 0.0;
  bool loClosed = false, hiClosed = false;

  bool contains(double x) const {
    return (loClosed ? x >= lo : x > lo) && (hiClosed ? x <= hi : x < hi);
  }
  /// Interval notation, `(0, 1]`, `[0.5, inf)`.
  std::string str() const;
};

struct ResolvedGate {
  std::string name;
  /// Declared with `in ...`; none: any value (the module states no contract).
  std::optional<GateRange> range;
  bool channel = false;
  std::string axis; // "dk" | "dv" for channel gates, empty for scalar
  int64_t dim = 1;  // channel length (dk or dv); 1 for scalar
  bool perStep = false; // the learning rate of multistep(n): one value per step
  SourceLoc loc;
};

/// A checked component argument: a number, a reference to a declared gate, or a
/// keyword (`before_gradient`, `gelu`, a flag given without value).
struct ArgValue {
  enum class Kind { Number, Gate, Keyword, Function };
  Kind kind = Kind::Number;
  double number = 0.0;
  std::string name; // gate or keyword
  /// Function: an element-wise expression of the name "x" (the user's
  /// parameter renamed), params substituted.
  ExprPtr function;
  SourceLoc loc;
};

struct ResolvedComponent {
  std::string name; // e.g. "linear", "l2", "gd"
  /// Every argument of the built-in, defaults filled in, keyed by its name.
  std::map<std::string, ArgValue> args;
  SourceLoc loc;
};

/// The attentional bias as an expression over the prediction `y` and the target
/// `v` (always spelt "y" and "v" here, whatever the user named them). Names left
/// in `expr` are "y", "v" or scalar/channel gate names; params and built-in
/// arguments are already substituted by numbers (or by gate names).
struct ResolvedBias {
  enum class Kind {
    Loss,       // expr is the scalar loss L(y, v); the compiler differentiates it
    ErrorSignal // expr is psi(y, v) itself, a vector of length dv (e.g. smoothed lp)
  };
  Kind kind = Kind::Loss;
  std::string name; // built-in name ("l2", "lp", ...) or "expression"
  std::map<std::string, ArgValue> args; // the built-in's arguments (empty for expressions)
  ExprPtr expr;
  SourceLoc loc;
};

/// A checked `init`: kind "zeros" | "identity" | "uniform" | "normal" (the
/// spellings of choices::StateInit); the scale when written (else the kind's
/// default), the seed of a normal init. Whether `state` is one the module
/// carries is the dialect's check (it owns the state names).
struct ResolvedInit {
  std::string state;
  std::string kind;
  std::optional<double> scale;
  std::optional<int64_t> seed;
  SourceLoc loc;
};

struct ResolvedModule {
  std::string name;
  SourceLoc loc;
  std::vector<ResolvedParam> params; // declaration order
  std::vector<ResolvedGate> gates;   // declaration order = ABI order
  int64_t dk = 0, dv = 0;
  ResolvedComponent memory;
  ResolvedBias bias;
  ResolvedComponent retention;
  ResolvedComponent optimizer;
  bool readAfterWrite = true;
  int64_t chunk = 1;
  int64_t steps = 1; // (k, v) pairs per token; n for optimizer multistep(n)
  SourceLoc chunkLoc;
  std::vector<ResolvedInit> inits; // declaration order, one per state at most

  const ResolvedGate *findGate(const std::string &gateName) const {
    for (const ResolvedGate &g : gates)
      if (g.name == gateName)
        return &g;
    return nullptr;
  }
};

} // namespace miras::ast

#endif // MIRAS_FRONTEND_AST_H
