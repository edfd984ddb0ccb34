//===- RulePrinter.cpp - The derived update rule as math ------------------===//
#include "miras/Dialect/Miras/Transforms/RulePrinter.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"
#include "miras/Dialect/Miras/IR/StepSignature.h"
#include "miras/Dialect/Miras/Transforms/MathBuilder.h"

#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace miras;

namespace {

/// Binding strength of the printed form; a child binding less tightly than its
/// context needs parentheses.
enum Precedence { Sum = 1, Product = 2, Unary = 3, Power = 4, Atom = 5 };

struct Rendered {
  std::string text;
  Precedence prec;
};

static std::string number(double x) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format("%g", x);
  return s;
}

class RulePrinter {
public:
  /// Named subexpressions are `<tempPrefix>1`, `<tempPrefix>2`, ...
  RulePrinter(func::FuncOp step, bool primeStates, std::string tempPrefix = "t")
      : tempPrefix(std::move(tempPrefix)) {
    for (unsigned i = 0; i < step.getNumArguments(); ++i)
      if (auto name = step.getArgAttrOfType<StringAttr>(i, "miras.name"))
        names[step.getArgument(i)] = {name.str(), Atom};
    auto ret = cast<func::ReturnOp>(step.getBody().front().getTerminator());
    // A read after the write refers to a new state by its primed name.
    for (unsigned i = 0; primeStates && i + 1 < ret.getNumOperands(); ++i)
      if (auto name = step.getResultAttrOfType<StringAttr>(i, "miras.name"))
        primed[ret.getOperand(i)] = name.str() + "'";
  }

  Rendered render(Value v, bool top = false);

  std::string wrap(Value v, Precedence need) {
    Rendered r = render(v);
    return r.prec < need ? "(" + r.text + ")" : r.text;
  }

  /// Named subexpressions (`t1 = ...`), in the order they must be read.
  std::string definitions;

private:
  Rendered renderOp(Value v);

  llvm::DenseMap<Value, Rendered> names;
  llvm::DenseMap<Value, std::string> primed;
  std::string tempPrefix;
  unsigned nextTemp = 1;
};

Rendered RulePrinter::render(Value v, bool top) {
  if (auto it = primed.find(v); it != primed.end() && !top)
    return {it->second, Atom};
  if (auto it = names.find(v); it != names.end())
    return it->second;
  Rendered r = renderOp(v);
  // A long subexpression used more than once gets a name, so a deep memory's
  // rule reads as a short program instead of one enormous line.
  constexpr size_t kInlineLimit = 40;
  if (!top && r.prec != Atom && r.text.size() > kInlineLimit &&
      !v.hasOneUse()) {
    std::string name = tempPrefix + std::to_string(nextTemp++);
    definitions += "  " + name + " = " + r.text + "\n";
    r = {name, Atom};
  }
  names[v] = r;
  return r;
}

Rendered RulePrinter::renderOp(Value v) {
  if (std::optional<double> c = MathBuilder::matchConstant(v))
    return {number(*c), *c < 0 ? Unary : Atom};
  Operation *op = v.getDefiningOp();
  auto binary = [&](StringRef sym, Precedence p, bool rightStrict) {
    Precedence rhsNeed = rightStrict ? Precedence(p + 1) : p;
    return Rendered{wrap(op->getOperand(0), p) + " " + sym.str() + " " +
                        wrap(op->getOperand(1), rhsNeed),
                    p};
  };
  auto call = [&](StringRef fn) {
    std::string args;
    for (Value operand : op->getOperands())
      args += (args.empty() ? "" : ", ") + render(operand).text;
    return Rendered{fn.str() + "(" + args + ")", Atom};
  };
  return TypeSwitch<Operation *, Rendered>(op)
      .Case([&](arith::AddFOp) { return binary("+", Sum, false); })
      .Case([&](arith::SubFOp) { return binary("-", Sum, true); })
      .Case([&](arith::MulFOp) { return binary("*", Product, false); })
      .Case([&](arith::DivFOp) { return binary("/", Product, true); })
      .Case([&](arith::NegFOp o) {
        return Rendered{"-" + wrap(o.getOperand(), Power), Unary};
      })
      .Case([&](math::PowFOp o) {
        return Rendered{wrap(o.getLhs(), Atom) + "^" + wrap(o.getRhs(), Atom),
                        Power};
      })
      .Case([&](math::AbsFOp o) {
        return Rendered{"|" + render(o.getOperand()).text + "|", Atom};
      })
      .Case([&](NormOp o) {
        return Rendered{"||" + render(o.getInput()).text + "||", Atom};
      })
      .Case([&](MatVecOp o) {
        return Rendered{wrap(o.getMatrix(), Atom) + " " +
                            wrap(o.getVector(), Atom),
                        Product};
      })
      .Case([&](ExtractOp o) {
        // Step j's key, value or rate of a multistep module: k_1, beta_2, ...
        return Rendered{wrap(o.getInput(), Atom) + "_" +
                            std::to_string(o.getIndex() + 1),
                        Atom};
      })
      .Case([&](VecMatOp o) {
        return Rendered{wrap(o.getMatrix(), Atom) + "^T " +
                            wrap(o.getVector(), Atom),
                        Product};
      })
      .Case([&](OuterOp o) {
        return Rendered{wrap(o.getLhs(), Atom) + " " +
                            wrap(o.getRhs(), Atom) + "^T",
                        Product};
      })
      .Case([&](BroadcastOp o) {
        Rendered in = render(o.getInput());
        if (o.getDims().empty())
          return in;
        // A vector spread over a matrix: index it by the axis it runs along.
        std::string text = in.prec < Atom ? "(" + in.text + ")" : in.text;
        return Rendered{text + (o.getDims()[0] == 0 ? "[i]" : "[j]"), Atom};
      })
      .Case([&](arith::CmpFOp o) {
        StringRef sym = o.getPredicate() == arith::CmpFPredicate::OGE ? ">="
                        : o.getPredicate() == arith::CmpFPredicate::OLE
                            ? "<="
                            : arith::stringifyCmpFPredicate(o.getPredicate());
        return Rendered{wrap(o.getLhs(), Product) + " " + sym.str() + " " +
                            wrap(o.getRhs(), Product),
                        Sum};
      })
      .Case([&](arith::SelectOp) { return call("select"); })
      .Case([&](arith::MinimumFOp) { return call("min"); })
      .Case([&](arith::MaximumFOp) { return call("max"); })
      .Case([&](SumOp) { return call("sum"); })
      .Case([&](SignOp) { return call("sign"); })
      .Default([&](Operation *other) {
        StringRef fn = other->getName().stripDialect();
        return call(fn);
      });
}

} // namespace

/// One line per result of `func` (primed for a step's next states), then the
/// shared subexpressions.
static std::string printRule(func::FuncOp func, bool primeStates) {
  RulePrinter printer(func, primeStates);
  auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
  std::string lines;
  for (auto [i, value] : llvm::enumerate(ret.getOperands())) {
    auto name = func.getResultAttrOfType<StringAttr>(i, "miras.name");
    std::string lhs = name ? name.str() : ("r" + std::to_string(i));
    if (primeStates && i + 1 < ret.getNumOperands())
      lhs += "'";
    lines += lhs + " = " + printer.render(value, /*top=*/true).text + "\n";
  }
  if (printer.definitions.empty())
    return lines;
  return lines + "where\n" + printer.definitions;
}

std::string miras::printUpdateRule(func::FuncOp step) {
  return printRule(step, /*primeStates=*/true);
}

std::string miras::printReverseRule(func::FuncOp backward) {
  std::string rule = printRule(backward, /*primeStates=*/false);
  // The arguments miras-tape-recomputed-products made of the step's products:
  // what they are, in the step's terms.
  auto step = dyn_cast_or_null<func::FuncOp>(SymbolTable::lookupNearestSymbolFrom(
      backward, StringAttr::get(backward.getContext(), "step")));
  if (!step)
    return rule;
  RulePrinter printer(step, /*primeStates=*/true, /*tempPrefix=*/"s");
  std::string taped;
  for (unsigned i = 0; i < backward.getNumArguments(); ++i) {
    auto index = backward.getArgAttrOfType<IntegerAttr>(i, kTapeAttrName);
    auto name = backward.getArgAttrOfType<StringAttr>(i, "miras.name");
    if (!index || !name)
      continue;
    if (Operation *product = tapedProduct(step, index.getInt()))
      taped += "  " + name.str() + " = " +
               printer.render(product->getResult(0), /*top=*/true).text + "\n";
  }
  if (taped.empty())
    return rule;
  rule += "from the recompute (the step's products, not computed again)\n" + taped;
  return printer.definitions.empty() ? rule : rule + "where\n" + printer.definitions;
}
