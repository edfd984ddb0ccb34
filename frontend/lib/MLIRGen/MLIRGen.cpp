//===- MLIRGen.cpp - Resolved AST to the miras dialect --------------------===//
//
// Spec level only: one op per declaration, and the bias expression as a
// region of arith/math/miras ops over the prediction y and the target v. No
// derivation happens here (that is miras-derive-update's job).
//
//===----------------------------------------------------------------------===//
#include "miras/Frontend/MLIRGen.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

using namespace mlir;
using namespace miras;

namespace {

class Generator {
public:
  Generator(MLIRContext &ctx, const ast::ResolvedModule &module)
      : ctx(ctx), module(module), b(&ctx) {}

  OwningOpRef<ModuleOp> run();

private:
  Location loc(const ast::SourceLoc &l) {
    return FileLineColLoc::get(&ctx, l.file, l.line, l.col);
  }

  Attribute argAttr(const ast::ArgValue &arg) {
    switch (arg.kind) {
    case ast::ArgValue::Kind::Number:
      return b.getF64FloatAttr(arg.number);
    case ast::ArgValue::Kind::Gate:
      return FlatSymbolRefAttr::get(&ctx, arg.name);
    case ast::ArgValue::Kind::Keyword:
      return b.getStringAttr(arg.name);
    case ast::ArgValue::Kind::Function:
      return b.getStringAttr("user"); // the body is a miras.mirror_map
    }
    return {};
  }

  DictionaryAttr argsAttr(const std::map<std::string, ast::ArgValue> &args) {
    SmallVector<NamedAttribute> attrs;
    for (const auto &[name, value] : args)
      attrs.push_back(b.getNamedAttr(name, argAttr(value)));
    return b.getDictionaryAttr(attrs);
  }

  /// Emits `expr` into the bias region; null after an error.
  Value emitExpr(const ast::Expr &expr);
  Value emitCall(const ast::Expr &expr, ArrayRef<Value> args);
  void emitBias(Location biasLoc);
  void emitMirrorMap(const ast::ArgValue &arg);

  MLIRContext &ctx;
  const ast::ResolvedModule &module;
  OpBuilder b;
  Value y, v;
  Value mapArg; // the element of A inside a user-written mirror map
  bool failedToEmit = false;
};

Value Generator::emitCall(const ast::Expr &expr, ArrayRef<Value> args) {
  Location l = loc(expr.loc);
  const std::string &f = expr.name;
  if (args.size() == 1) {
    Value x = args[0];
    if (f == "abs")
      return math::AbsFOp::create(b, l, x);
    if (f == "sign")
      return SignOp::create(b, l, x);
    if (f == "tanh")
      return math::TanhOp::create(b, l, x);
    if (f == "sqrt")
      return math::SqrtOp::create(b, l, x);
    if (f == "exp")
      return math::ExpOp::create(b, l, x);
    if (f == "log")
      return math::LogOp::create(b, l, x);
    if (f == "cosh")
      return math::CoshOp::create(b, l, x);
    if ((f == "sum" || f == "norm") && isa<RankedTensorType>(x.getType())) {
      if (f == "sum")
        return SumOp::create(b, l, x);
      return NormOp::create(b, l, x);
    }
  }
  if (args.size() == 3 && f == "where") {
    // The condition is a comparison (i1); a scalar one selects whole values.
    auto [lhs, rhs] = MathBuilder(b, l).unify(args[1], args[2]);
    return arith::SelectOp::create(b, l, args[0], lhs, rhs);
  }
  if (args.size() == 2 && (f == "min" || f == "max")) {
    auto [lhs, rhs] = MathBuilder(b, l).unify(args[0], args[1]);
    if (f == "min")
      return arith::MinimumFOp::create(b, l, lhs, rhs);
    return arith::MaximumFOp::create(b, l, lhs, rhs);
  }
  emitError(l) << "unsupported call '" << f << "' with " << args.size()
               << " argument(s)";
  return {};
}

Value Generator::emitExpr(const ast::Expr &expr) {
  Location l = loc(expr.loc);
  SmallVector<Value> operands;
  for (const ast::ExprPtr &operand : expr.operands) {
    Value value = emitExpr(*operand);
    if (!value)
      return {};
    operands.push_back(value);
  }
  switch (expr.kind) {
  case ast::Expr::Kind::Number:
    return arith::ConstantOp::create(
        b, l, b.getF32FloatAttr(static_cast<float>(expr.number)));
  case ast::Expr::Kind::Name: {
    if (expr.name == "y")
      return y;
    if (expr.name == "v")
      return v;
    if (expr.name == "x" && mapArg)
      return mapArg;
    const ast::ResolvedGate *gate = module.findGate(expr.name);
    if (!gate) {
      emitError(l) << "unknown name '" << expr.name << "' in the bias";
      return {};
    }
    Type type = b.getF32Type();
    if (gate->channel)
      type = RankedTensorType::get({gate->dim}, b.getF32Type());
    return GateValueOp::create(b, l, type, gate->name);
  }
  case ast::Expr::Kind::Unary:
    return arith::NegFOp::create(b, l, operands[0]);
  case ast::Expr::Kind::Binary: {
    auto [lhs, rhs] = MathBuilder(b, l).unify(operands[0], operands[1]);
    if (expr.op == "+")
      return arith::AddFOp::create(b, l, lhs, rhs);
    if (expr.op == "-")
      return arith::SubFOp::create(b, l, lhs, rhs);
    if (expr.op == "*")
      return arith::MulFOp::create(b, l, lhs, rhs);
    if (expr.op == "/")
      return arith::DivFOp::create(b, l, lhs, rhs);
    if (expr.op == "^")
      return math::PowFOp::create(b, l, lhs, rhs);
    static const std::pair<const char *, arith::CmpFPredicate> comparisons[] = {
        {"<", arith::CmpFPredicate::OLT},
        {"<=", arith::CmpFPredicate::OLE},
        {">", arith::CmpFPredicate::OGT},
        {">=", arith::CmpFPredicate::OGE}};
    for (auto [spelling, predicate] : comparisons)
      if (expr.op == spelling)
        return arith::CmpFOp::create(b, l, predicate, lhs, rhs);
    emitError(l) << "unknown operator '" << expr.op << "'";
    return {};
  }
  case ast::Expr::Kind::Call:
    return emitCall(expr, operands);
  }
  return {};
}

void Generator::emitBias(Location biasLoc) {
  const ast::ResolvedBias &bias = module.bias;
  auto op = BiasOp::create(b, biasLoc, b.getStringAttr(bias.name),
                           bias.kind == ast::ResolvedBias::Kind::ErrorSignal);
  auto vecType = RankedTensorType::get({module.dv}, b.getF32Type());
  Block *block = new Block();
  op.getBody().push_back(block);
  y = block->addArgument(vecType, biasLoc);
  v = block->addArgument(vecType, biasLoc);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(block);
  Value result = bias.expr ? emitExpr(*bias.expr) : Value();
  if (!result) {
    failedToEmit = true;
    return;
  }
  YieldOp::create(b, biasLoc, result);
}

/// A user-written map W = map(A) as a scalar region, applied element-wise.
void Generator::emitMirrorMap(const ast::ArgValue &arg) {
  Location l = loc(arg.loc);
  auto op = MirrorMapOp::create(b, l);
  Block *block = new Block();
  op.getBody().push_back(block);
  mapArg = block->addArgument(b.getF32Type(), l);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(block);
  Value result = emitExpr(*arg.function);
  mapArg = Value();
  if (!result) {
    failedToEmit = true;
    return;
  }
  YieldOp::create(b, l, result);
}

OwningOpRef<ModuleOp> Generator::run() {
  Location moduleLoc = loc(module.loc);
  OwningOpRef<ModuleOp> top = ModuleOp::create(moduleLoc);
  b.setInsertionPointToEnd(top->getBody());
  auto mm = MemoryModuleOp::create(
      b, moduleLoc, b.getStringAttr(module.name),
      b.getI64IntegerAttr(module.dk), b.getI64IntegerAttr(module.dv),
      b.getI64IntegerAttr(module.chunk), b.getBoolAttr(module.readAfterWrite));
  if (module.steps != 1)
    mm.setSteps(module.steps);
  b.setInsertionPointToStart(&mm.getBody().emplaceBlock());

  for (const ast::ResolvedParam &p : module.params) {
    TypedAttr value =
        p.isInteger
            ? TypedAttr(b.getI64IntegerAttr(static_cast<int64_t>(p.value)))
            : TypedAttr(b.getF64FloatAttr(p.value));
    ParamOp::create(b, loc(p.loc), b.getStringAttr(p.name), value);
  }
  for (const ast::ResolvedGate &g : module.gates) {
    auto gate = GateOp::create(b, loc(g.loc), b.getStringAttr(g.name),
                               g.channel ? b.getUnitAttr() : UnitAttr(),
                               g.channel ? b.getStringAttr(g.axis) : StringAttr(),
                               b.getI64IntegerAttr(g.dim),
                               g.perStep ? b.getUnitAttr() : UnitAttr(),
                               FloatAttr(), FloatAttr(), UnitAttr(), UnitAttr());
    if (g.range) {
      gate.setRangeLoAttr(b.getF64FloatAttr(g.range->lo));
      gate.setRangeHiAttr(b.getF64FloatAttr(g.range->hi));
      gate.setRangeLoClosed(g.range->loClosed);
      gate.setRangeHiClosed(g.range->hiClosed);
    }
  }

  // The memory's widths as integers, its other arguments as written.
  const ast::ResolvedComponent &memory = module.memory;
  SmallVector<NamedAttribute> memoryArgs{
      b.getNamedAttr("dk", b.getI64IntegerAttr(module.dk)),
      b.getNamedAttr("dv", b.getI64IntegerAttr(module.dv))};
  for (const auto &[name, value] : memory.args)
    if (name != "dk" && name != "dv" && name != "dim")
      memoryArgs.push_back(b.getNamedAttr(name, argAttr(value)));
  // Sema resolved every name in the registry, so the lookups succeed.
  const choices::ChoiceRegistry &registry = choices::ChoiceRegistry::get();
  MemoryOp::create(b, loc(memory.loc),
                   MemoryAttr::get(&ctx, registry.findMemory(memory.name),
                                   b.getDictionaryAttr(memoryArgs)));
  emitBias(loc(module.bias.loc));
  RetentionOp::create(
      b, loc(module.retention.loc),
      RetentionAttr::get(&ctx, registry.findRetention(module.retention.name),
                         argsAttr(module.retention.args)));
  for (const auto &[name, arg] : module.retention.args)
    if (arg.kind == ast::ArgValue::Kind::Function)
      emitMirrorMap(arg);
  OptimizerOp::create(
      b, loc(module.optimizer.loc),
      OptimizerAttr::get(&ctx, registry.findOptimizer(module.optimizer.name),
                         argsAttr(module.optimizer.args)));
  for (const ast::ResolvedInit &init : module.inits)
    InitOp::create(b, loc(init.loc), b.getStringAttr(init.state), b.getStringAttr(init.kind),
                   init.scale ? b.getF64FloatAttr(*init.scale) : FloatAttr(),
                   init.seed ? b.getI64IntegerAttr(*init.seed) : IntegerAttr());
  if (failedToEmit || failed(verify(*top)))
    return nullptr;
  return top;
}

} // namespace

OwningOpRef<ModuleOp> miras::mlirGen(MLIRContext &context,
                                     const ast::ResolvedModule &module) {
  context.loadDialect<MirasDialect>();
  return Generator(context, module).run();
}
