// An unknown kind in the generic spelling of a choice attribute (choice-attrs.mlir).
"builtin.module"() ({
  "miras.module"() <{chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true, sym_name = "m"}> ({
    "miras.retention"() <{choice = #miras.retention<"forget", {}>}> : () -> ()
  }) : () -> ()
}) : () -> ()
