//===- Differentiate.cpp - Reverse-mode derivative of a bias --------------===//
//
// Reverse mode over a straight-line block: walk the ops that both depend on
// `wrt` and feed `loss` from last to first, and for each apply its
// vector-Jacobian rule to the adjoint of its result, accumulating adjoints of
// its operands. Rules build through MathBuilder, so constant factors fold away.
//
//===----------------------------------------------------------------------===//
#include "miras/Dialect/Miras/Transforms/Differentiate.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace miras;

namespace {

class ReverseMode {
public:
  ReverseMode(OpBuilder &builder, Location loc, bool simplify)
      : mb(builder, loc, simplify) {}

  /// Records `contribution` as part of the adjoint of `v` (if v is active).
  void accumulate(Value v, Value contribution) {
    if (!active.contains(v))
      return;
    auto it = adjoint.find(v);
    if (it == adjoint.end())
      adjoint[v] = contribution;
    else
      it->second = mb.add(it->second, contribution);
  }

  /// Applies the vector-Jacobian rule of `op`, whose result has adjoint `g`.
  LogicalResult propagate(Operation *op, Value g);

  MathBuilder mb;
  DenseSet<Value> active;
  DenseMap<Value, Value> adjoint;
};

LogicalResult ReverseMode::propagate(Operation *op, Value g) {
  mb.setLoc(op->getLoc());
  Value r = op->getNumResults() == 1 ? op->getResult(0) : Value();
  auto cmpSelect = [&](arith::CmpFPredicate pred, Value a, Value b) {
    Value mask = arith::CmpFOp::create(mb.getBuilder(), op->getLoc(), pred,
                                       a, b);
    Value zero = mb.constant(g.getType(), 0.0);
    accumulate(a, mb.select(mask, g, zero));
    accumulate(b, mb.select(mask, zero, g));
  };
  return TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](arith::AddFOp o) {
        accumulate(o.getLhs(), g);
        accumulate(o.getRhs(), g);
        return success();
      })
      .Case([&](arith::SubFOp o) {
        accumulate(o.getLhs(), g);
        accumulate(o.getRhs(), mb.neg(g));
        return success();
      })
      .Case([&](arith::MulFOp o) {
        accumulate(o.getLhs(), mb.mul(g, o.getRhs()));
        accumulate(o.getRhs(), mb.mul(g, o.getLhs()));
        return success();
      })
      .Case([&](arith::DivFOp o) {
        // d(a/b) = da / b - (a/b) db / b
        accumulate(o.getLhs(), mb.div(g, o.getRhs()));
        accumulate(o.getRhs(), mb.neg(mb.div(mb.mul(g, r), o.getRhs())));
        return success();
      })
      .Case([&](arith::NegFOp o) {
        accumulate(o.getOperand(), mb.neg(g));
        return success();
      })
      .Case([&](math::PowFOp o) {
        Value a = o.getLhs(), p = o.getRhs();
        Value pMinusOne = mb.sub(p, mb.constant(p.getType(), 1.0));
        accumulate(a, mb.mul(g, mb.mul(p, mb.pow(a, pMinusOne))));
        if (active.contains(p)) {
          // d a^p / dp = a^p log a, taken as 0 where a <= 0 (no real log).
          Value zero = mb.constant(a.getType(), 0.0);
          accumulate(p, mb.select(mb.compare(arith::CmpFPredicate::OGT, a, zero),
                                  mb.mul(g, mb.mul(r, mb.log(a))), zero));
        }
        return success();
      })
      .Case([&](math::AbsFOp o) {
        accumulate(o.getOperand(), mb.mul(g, mb.sign(o.getOperand())));
        return success();
      })
      .Case([&](SignOp) { return success(); }) // zero almost everywhere
      .Case([&](arith::CmpFOp) { return success(); }) // boolean result
      .Case([&](arith::SelectOp o) {
        Value zero = mb.constant(g.getType(), 0.0);
        accumulate(o.getTrueValue(), mb.select(o.getCondition(), g, zero));
        accumulate(o.getFalseValue(), mb.select(o.getCondition(), zero, g));
        return success();
      })
      .Case([&](MatVecOp o) {
        // y = A x:  dA = g x^T,  dx = A^T g
        accumulate(o.getMatrix(), mb.outer(g, o.getVector()));
        accumulate(o.getVector(), mb.vecmat(g, o.getMatrix()));
        return success();
      })
      .Case([&](math::ErfOp o) {
        // d erf(x) = 2 / sqrt(pi) exp(-x^2)
        Value x = o.getOperand();
        Value density = mb.exp(mb.neg(mb.mul(x, x)));
        accumulate(x, mb.mul(g, mb.mul(mb.constant(x.getType(),
                                                   1.1283791670955126),
                                       density)));
        return success();
      })
      .Case([&](math::TanhOp o) {
        Value one = mb.constant(r.getType(), 1.0);
        accumulate(o.getOperand(), mb.mul(g, mb.sub(one, mb.mul(r, r))));
        return success();
      })
      .Case([&](math::SqrtOp o) {
        // 0.5 g / sqrt(x), with the zero subgradient at x = 0 (as for norm).
        Value zero = mb.constant(r.getType(), 0.0);
        accumulate(o.getOperand(),
                   mb.select(mb.compare(arith::CmpFPredicate::OGT, r, zero),
                             mb.div(mb.mul(mb.constant(g.getType(), 0.5), g), r),
                             zero));
        return success();
      })
      .Case([&](math::ExpOp o) {
        accumulate(o.getOperand(), mb.mul(g, r));
        return success();
      })
      .Case([&](math::LogOp o) {
        // log(cosh(x)) differentiates to tanh(x): going through sinh / cosh
        // would overflow in float32 for |x| > 89 (kept even in the raw form,
        // since the other one is numerically wrong).
        if (auto cosh = o.getOperand().getDefiningOp<math::CoshOp>()) {
          accumulate(cosh.getOperand(), mb.mul(g, mb.tanh(cosh.getOperand())));
          return success();
        }
        accumulate(o.getOperand(), mb.div(g, o.getOperand()));
        return success();
      })
      .Case([&](math::CoshOp o) {
        accumulate(o.getOperand(), mb.mul(g, mb.sinh(o.getOperand())));
        return success();
      })
      .Case([&](arith::MaximumFOp o) {
        cmpSelect(arith::CmpFPredicate::OGE, o.getLhs(), o.getRhs());
        return success();
      })
      .Case([&](arith::MinimumFOp o) {
        cmpSelect(arith::CmpFPredicate::OLE, o.getLhs(), o.getRhs());
        return success();
      })
      .Case([&](SumOp o) {
        accumulate(o.getInput(), mb.broadcast(g, o.getInput().getType()));
        return success();
      })
      .Case([&](NormOp o) {
        // d||x|| = x / ||x||, and the zero subgradient at x = 0 (a zero
        // residual must not turn the state into NaN).
        Value zero = mb.constant(r.getType(), 0.0);
        Value scale = mb.select(mb.compare(arith::CmpFPredicate::OGT, r, zero),
                                mb.div(g, r), zero);
        accumulate(o.getInput(),
                   mb.mul(mb.broadcast(scale, o.getInput().getType()),
                          o.getInput()));
        return success();
      })
      .Case([&](BroadcastOp o) -> LogicalResult {
        if (!o.getDims().empty())
          return o.emitOpError("differentiating a vector broadcast is not "
                               "supported");
        accumulate(o.getInput(), mb.sum(g));
        return success();
      })
      .Default([&](Operation *other) -> LogicalResult {
        return other->emitError("cannot differentiate '")
               << other->getName() << "': no derivative rule for this op";
      });
}

} // namespace

FailureOr<SmallVector<Value>>
miras::buildGradients(OpBuilder &builder,
                      ArrayRef<std::pair<Value, Value>> seeds,
                      ValueRange wrts, bool simplify) {
  Block *block = builder.getInsertionBlock();
  ReverseMode rm(builder, wrts.front().getLoc(), simplify);

  // Forward sweep: which values depend on a wrt.
  for (Value wrt : wrts)
    rm.active.insert(wrt);
  SmallVector<Operation *> tape;
  for (Operation &op :
       llvm::make_range(block->begin(), builder.getInsertionPoint())) {
    if (llvm::any_of(op.getOperands(),
                     [&](Value v) { return rm.active.contains(v); })) {
      for (Value r : op.getResults())
        rm.active.insert(r);
      tape.push_back(&op);
    }
  }

  // Reverse sweep from the seeds.
  for (auto [value, adjoint] : seeds)
    rm.accumulate(value, adjoint);
  for (Operation *op : llvm::reverse(tape)) {
    auto it = llvm::find_if(op->getResults(), [&](Value result) {
      return rm.adjoint.contains(result);
    });
    if (it == op->getResults().end())
      continue; // does not reach a seed
    if (op->getNumResults() != 1)
      return op->emitError("cannot differentiate '")
             << op->getName() << "': expected a single result";
    auto adjointIt = rm.adjoint.find(op->getResult(0));
    if (failed(rm.propagate(op, adjointIt->second)))
      return failure();
  }
  SmallVector<Value> gradients;
  for (Value wrt : wrts) {
    auto it = rm.adjoint.find(wrt);
    gradients.push_back(it == rm.adjoint.end()
                            ? rm.mb.constant(wrt.getType(), 0.0)
                            : it->second);
  }
  return gradients;
}
