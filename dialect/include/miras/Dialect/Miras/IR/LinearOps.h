//===- LinearOps.h - Negation through the linear step-level ops -*- C++ -*-===//
//
// matvec, vecmat, outer, broadcast and sum are linear in each operand, so a
// negated operand may move out to the result: -(A x) for A (-x). The ops'
// canonicalisation patterns and MathBuilder (while it builds) share this one
// rule, so the IR they produce agrees.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_DIALECT_MIRAS_IR_LINEAROPS_H
#define MIRAS_DIALECT_MIRAS_IR_LINEAROPS_H

#include "mlir/IR/Value.h"
#include "llvm/ADT/ArrayRef.h"

namespace miras {

/// Replaces each operand of a linear op that is an `arith.negf` by the value
/// it negates. Returns whether the result must be negated (an odd number of
/// negations were removed); `changed`, if given, is set when any were.
bool stripNegations(llvm::MutableArrayRef<mlir::Value> operands,
                    bool *changed = nullptr);

} // namespace miras

#endif
