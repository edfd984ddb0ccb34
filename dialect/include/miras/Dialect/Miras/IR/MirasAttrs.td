//===- MirasAttrs.td - The four choices as typed attributes -*- tablegen -*-===//
//
// A spec-level component op (miras.memory, miras.retention, miras.optimizer)
// carries its choice as one of these attributes: the definition of its kind,
// resolved in the ChoiceRegistry (Choices/Choice.h) when the attribute is
// built or parsed, and the component's arguments. Passes ask the definition
// (its weights, mirror map, step, extra states) instead of comparing names,
// the way a gpu.module asks its #nvvm.target through TargetAttrInterface.
//
//===----------------------------------------------------------------------===//
#ifndef MIRAS_ATTRS_TD
#define MIRAS_ATTRS_TD

include "miras/Dialect/Miras/IR/MirasDialect.td"
include "mlir/IR/AttrTypeBase.td"

def Miras_ChoiceAttrInterface : AttrInterface<"ChoiceAttrInterface"> {
  let cppNamespace = "::miras";
  let description = [{
    One of the four MIRAS choices of a module: the registered definition of
    its kind and the arguments it was given. The verifier checks any such
    attribute's arguments against its definition's argument table, and runs
    the definitions' combination rules, without knowing the kinds.
  }];
  let methods = [
    InterfaceMethod<"The definition of this kind in the ChoiceRegistry",
      "const ::miras::choices::Choice &", "getChoiceDefinition", (ins),
      [{ return *$_attr.getDefinition(); }]>,
    InterfaceMethod<"The component's arguments: numbers (f64), gate symbols, "
                    "keywords (strings), integer widths",
      "::mlir::DictionaryAttr", "getChoiceArgs", (ins),
      [{ return $_attr.getArgs(); }]>,
  ];
}

class Miras_ChoiceAttr<string name, string attrMnemonic, string definition>
    : AttrDef<Miras_Dialect, name, [Miras_ChoiceAttrInterface]> {
  let mnemonic = attrMnemonic;
  let parameters = (ins
    AttrParameter<"const ::miras::choices::" # definition # " *",
                  "the registered definition of the kind">:$definition,
    "::mlir::DictionaryAttr":$args);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def Miras_MemoryAttr : Miras_ChoiceAttr<"Memory", "memory", "MemoryChoice"> {
  let summary = "A memory architecture and its arguments";
  let description = [{
    ```mlir
    #miras.memory<"linear", {dk = 16 : i64, dv = 16 : i64}>
    ```
  }];
}

def Miras_RetentionAttr
    : Miras_ChoiceAttr<"Retention", "retention", "RetentionChoice"> {
  let summary = "A retention and its arguments";
  let description = [{
    ```mlir
    #miras.retention<"lq", {decay = @alpha, q = 4.0 : f64}>
    ```
  }];
}

def Miras_OptimizerAttr
    : Miras_ChoiceAttr<"Optimizer", "optimizer", "OptimizerChoice"> {
  let summary = "An optimizer and its arguments";
  let description = [{
    ```mlir
    #miras.optimizer<"momentum", {beta = @mu, lr = @theta}>
    ```
  }];
}

#endif // MIRAS_ATTRS_TD
