// A negative miras.row_block is refused with a located error.
// RUN: not miras-opt %s --miras-vectorize 2>&1 | FileCheck %s
// CHECK: error: miras-vectorize: a row block must be >= 0 (0: chosen per loop), got -1
func.func @negative(%x: memref<64xf32>) attributes {miras.row_block = -1 : i64} {
  return
}
