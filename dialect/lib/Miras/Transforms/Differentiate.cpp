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
  ReverseMode(OpBuilder &builder, Value wrt) : mb(builder, wrt.getLoc()) {}

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
        if (active.contains(p))
          accumulate(p, mb.mul(g, mb.mul(r, mb.log(a))));
        return success();
      })
      .Case([&](math::AbsFOp o) {
        accumulate(o.getOperand(), mb.mul(g, mb.sign(o.getOperand())));
        return success();
      })
      .Case([&](SignOp) { return success(); }) // zero almost everywhere
      .Case([&](math::TanhOp o) {
        Value one = mb.constant(r.getType(), 1.0);
        accumulate(o.getOperand(), mb.mul(g, mb.sub(one, mb.mul(r, r))));
        return success();
      })
      .Case([&](math::SqrtOp o) {
        accumulate(o.getOperand(),
                   mb.div(mb.mul(mb.constant(g.getType(), 0.5), g), r));
        return success();
      })
      .Case([&](math::ExpOp o) {
        accumulate(o.getOperand(), mb.mul(g, r));
        return success();
      })
      .Case([&](math::LogOp o) {
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
        // d||x|| = x / ||x||
        Value scale = mb.div(g, r);
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

FailureOr<Value> miras::buildGradient(OpBuilder &builder, Value loss,
                                      Value wrt) {
  Block *block = builder.getInsertionBlock();
  ReverseMode rm(builder, wrt);

  // Forward sweep: which values depend on wrt.
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

  // Reverse sweep from the loss.
  Type resultType = wrt.getType();
  if (!rm.active.contains(loss))
    return rm.mb.constant(resultType, 0.0);
  rm.adjoint[loss] = rm.mb.constant(loss.getType(), 1.0);
  for (Operation *op : llvm::reverse(tape)) {
    if (op->getNumResults() != 1)
      return op->emitError("cannot differentiate '")
             << op->getName() << "': expected a single result";
    auto it = rm.adjoint.find(op->getResult(0));
    if (it == rm.adjoint.end())
      continue; // does not feed the loss
    if (failed(rm.propagate(op, it->second)))
      return failure();
  }
  auto it = rm.adjoint.find(wrt);
  if (it == rm.adjoint.end())
    return rm.mb.constant(resultType, 0.0);
  return it->second;
}
