// With chunk > 1 the sequential algorithm's gradient reads the anchor, a
// kernel argument like the state (miras_abi.h miras_state_role): the call may
// start inside a chunk, at the chunk position the next argument holds. The
// anchor is refreshed at every token whose position (p + t) mod C is 0 (SPEC
// section 7); after the tokens the position (p + T) mod C is stored, and at a
// chunk start the anchor becomes the final state.
// RUN: miras-opt %s --pass-pipeline='builtin.module(miras-derive,miras-to-linalg{algorithm=sequential})' | FileCheck %s

// CHECK-LABEL: func.func @chunked_kernel
// CHECK-SAME: %[[WARG:arg[0-9]+]]: memref<?x?x4x4xf32>, %[[AARG:arg[0-9]+]]: memref<?x?x4x4xf32>, %[[PARG:arg[0-9]+]]: memref<?x?x1xf32>, %{{.*}}: memref<?x?x?x4xf32>)
// CHECK: scf.for
// The state and the anchor are swept in their slices, or in aligned copies.
// CHECK: %[[WSLICE:.*]] = memref.subview %[[WARG]]
// CHECK: %[[WBH:.*]] = arith.select %{{.*}}, %{{.*}}, %[[WSLICE]] {miras.staged}
// CHECK: %[[ASLICE:.*]] = memref.subview %[[AARG]]
// CHECK: %[[ANCHOR:.*]] = arith.select %{{.*}}, %{{.*}}, %[[ASLICE]] {miras.staged}
// CHECK: %[[PBH:.*]] = memref.subview %[[PARG]]
// CHECK: %[[PF:.*]] = memref.load %[[PBH]]
// CHECK: %[[PI:.*]] = arith.fptoui %[[PF]]
// CHECK: %[[PX:.*]] = arith.index_cast %[[PI]]
// CHECK: %[[P:.*]] = arith.remui %[[PX]], %c3
// CHECK: scf.for %[[T:.*]] =
// CHECK: %[[U:.*]] = arith.addi %[[P]], %[[T]]
// CHECK: %[[R:.*]] = arith.remui %[[U]], %c3
// CHECK: %[[START:.*]] = arith.cmpi eq, %[[R]]
// CHECK: scf.if %[[START]] {
// CHECK-NEXT: memref.copy %[[WBH]], %[[ANCHOR]]
// CHECK: linalg.generic {{.*}} ins(%[[ANCHOR]]
// CHECK: %[[END:.*]] = arith.addi %[[P]], %{{.*}}
// CHECK: %[[FINAL:.*]] = arith.remui %[[END]], %c3
// CHECK: %[[ATSTART:.*]] = arith.cmpi eq, %[[FINAL]]
// CHECK: scf.if %[[ATSTART]] {
// CHECK-NEXT: memref.copy %[[WBH]], %[[ANCHOR]]
// CHECK: %[[FI:.*]] = arith.index_cast %[[FINAL]]
// CHECK: %[[FF:.*]] = arith.uitofp %[[FI]]
// CHECK: memref.store %[[FF]], %[[PBH]]
// CHECK: memref.copy %[[WBH]], %[[WSLICE]]
// CHECK: } {miras.staged}
// CHECK: memref.copy %[[ANCHOR]], %[[ASLICE]]
// CHECK: } {miras.staged}
// CHECK-NOT: memref.alloc(
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
