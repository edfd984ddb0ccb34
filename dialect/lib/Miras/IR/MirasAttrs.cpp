//===- MirasAttrs.cpp - The four choices as typed attributes --------------===//
#include "miras/Dialect/Miras/IR/MirasAttrs.h"
#include "miras/Dialect/Miras/IR/MirasOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace miras;
using choices::ChoiceRegistry;
using choices::Role;

#include "miras/Dialect/Miras/IR/MirasAttrInterfaces.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "miras/Dialect/Miras/IR/MirasAttrs.cpp.inc"

void MirasDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "miras/Dialect/Miras/IR/MirasAttrs.cpp.inc"
      >();
}

namespace {

/// `<"kind", {args}>`: the kind resolved in the registry, or a located error
/// listing the kinds of the role.
template <typename AttrT>
Attribute parseChoice(AsmParser &parser, Role role) {
  std::string kind;
  DictionaryAttr args;
  SMLoc at = parser.getCurrentLocation();
  if (parser.parseLess() || parser.parseString(&kind))
    return {};
  if (succeeded(parser.parseOptionalComma()) && parser.parseAttribute(args))
    return {};
  if (parser.parseGreater())
    return {};
  const ChoiceRegistry &registry = ChoiceRegistry::get();
  auto *definition = static_cast<decltype(std::declval<AttrT>().getDefinition())>(
      registry.find(role, kind));
  if (!definition) {
    parser.emitError(at) << "unknown " << choices::roleName(role) << " '" << kind
                         << "' (supported: " << registry.namesOf(role) << ")";
    return {};
  }
  if (!args)
    args = parser.getBuilder().getDictionaryAttr({});
  return AttrT::get(parser.getContext(), definition, args);
}

template <typename AttrT> void printChoice(AsmPrinter &printer, AttrT attr) {
  printer << "<\"" << attr.getDefinition()->name() << "\", " << attr.getArgs()
          << ">";
}

LogicalResult verifyChoice(function_ref<InFlightDiagnostic()> emitError,
                           const choices::Choice *definition, DictionaryAttr args) {
  if (!definition)
    return emitError() << "a choice needs a registered definition";
  if (!args)
    return emitError() << "a choice needs an argument dictionary";
  return success();
}

} // namespace

Attribute MemoryAttr::parse(AsmParser &parser, Type) {
  return parseChoice<MemoryAttr>(parser, Role::Memory);
}
void MemoryAttr::print(AsmPrinter &printer) const { printChoice(printer, *this); }
LogicalResult MemoryAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 const choices::MemoryChoice *definition,
                                 DictionaryAttr args) {
  return verifyChoice(emitError, definition, args);
}

Attribute RetentionAttr::parse(AsmParser &parser, Type) {
  return parseChoice<RetentionAttr>(parser, Role::Retention);
}
void RetentionAttr::print(AsmPrinter &printer) const { printChoice(printer, *this); }
LogicalResult RetentionAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    const choices::RetentionChoice *definition,
                                    DictionaryAttr args) {
  return verifyChoice(emitError, definition, args);
}

Attribute OptimizerAttr::parse(AsmParser &parser, Type) {
  return parseChoice<OptimizerAttr>(parser, Role::Optimizer);
}
void OptimizerAttr::print(AsmPrinter &printer) const { printChoice(printer, *this); }
LogicalResult OptimizerAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    const choices::OptimizerChoice *definition,
                                    DictionaryAttr args) {
  return verifyChoice(emitError, definition, args);
}

choices::ArgLookup miras::argLookup(DictionaryAttr args, MemoryModuleOp module) {
  return choices::ArgLookup([args, module](const std::string &name) {
    choices::ArgValue value;
    Attribute attr = args ? args.get(name) : Attribute();
    if (auto f = dyn_cast_or_null<FloatAttr>(attr)) {
      value.kind = choices::ArgValue::Kind::Number;
      value.number = f.getValueAsDouble();
    } else if (auto i = dyn_cast_or_null<IntegerAttr>(attr)) {
      value.kind = choices::ArgValue::Kind::Number;
      value.number = static_cast<double>(i.getInt());
    } else if (auto ref = dyn_cast_or_null<FlatSymbolRefAttr>(attr)) {
      value.kind = choices::ArgValue::Kind::Gate;
      value.name = ref.getValue().str();
      auto gate = module ? dyn_cast_or_null<GateOp>(SymbolTable::lookupSymbolIn(
                               module, ref.getAttr()))
                         : GateOp();
      if (gate && gate.getChannel()) {
        value.channelGate = true;
        value.axis = gate.getAxis() ? gate.getAxis()->str() : "";
      }
    } else if (auto s = dyn_cast_or_null<StringAttr>(attr)) {
      value.kind = choices::ArgValue::Kind::Keyword;
      value.name = s.getValue().str();
    }
    return value;
  });
}
