// With chunk > 1 the sequential algorithm's gradient reads an anchor copy of
// the state, refreshed at the first token of every chunk (SPEC section 7); the
// anchor lives on the heap.
// RUN: miras-opt %s --pass-pipeline='builtin.module(miras-derive,miras-to-linalg{algorithm=sequential})' | FileCheck %s

// CHECK-LABEL: func.func @chunked_kernel
// CHECK: %[[ANCHOR:.*]] = memref.alloc() : memref<4x4xf32>
// CHECK: scf.for
// CHECK: %[[WBH:.*]] = memref.subview
// CHECK: scf.for %[[T:.*]] =
// CHECK: %[[R:.*]] = arith.remui %[[T]], %c3
// CHECK: %[[START:.*]] = arith.cmpi eq, %[[R]]
// CHECK: scf.if %[[START]] {
// CHECK-NEXT: memref.copy %[[WBH]], %[[ANCHOR]]
// CHECK: linalg.generic {{.*}} ins(%[[ANCHOR]]
// CHECK: memref.dealloc %[[ANCHOR]]
miras.module @chunked attributes {chunk = 3 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}
