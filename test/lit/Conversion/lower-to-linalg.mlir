// miras-lower-to-linalg: one fused kernel; the new state is written in place by
// a single generic that reads W, the scaled error and k (no D x D temporary).
// RUN: miras-opt %s --miras-derive --miras-lower-to-linalg | FileCheck %s

// CHECK-DAG: #[[MAT:.*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG: #[[COL:.*]] = affine_map<(d0, d1) -> (d1)>
// CHECK-DAG: #[[ROW:.*]] = affine_map<(d0, d1) -> (d0)>
// CHECK-NOT: miras.
// CHECK-LABEL: func.func @gdn_kernel(
// CHECK-SAME: %[[BEGIN:.*]]: index, %[[END:.*]]: index, %[[Q:.*]]: memref<?x?x?x4xf32>, %[[K:.*]]: memref<?x?x?x4xf32>, %[[V:.*]]: memref<?x?x?x4xf32>, %[[ETA:.*]]: memref<?x?x?xf32>, %[[ALPHA:.*]]: memref<?x?x?xf32>, %[[W:.*]]: memref<?x?x4x4xf32>, %[[O:.*]]: memref<?x?x?x4xf32>)
// CHECK-SAME: attributes {llvm.emit_c_interface, miras.algorithm = "sequential"}
// The one heap buffer: the aligned copy of the state slice, for a slice that
// does not start on a cache line (no D x D temporary).
// CHECK: %[[COPY:.*]] = memref.alloc() {alignment = 64 : i64} : memref<4x4xf32>
// CHECK-NOT: memref.alloc()
// The flattened (batch, head) pairs of this call's range.
// CHECK: %[[HEADS:.*]] = memref.dim %[[Q]], %c2
// CHECK: scf.for %[[PAIR:.*]] = %[[BEGIN]] to %[[END]]
// CHECK-DAG: %[[B:.*]] = arith.divui %[[PAIR]], %[[HEADS]]
// CHECK-DAG: %[[H:.*]] = arith.remui %[[PAIR]], %[[HEADS]]
// CHECK: %[[SLICE:.*]] = memref.subview %[[W]][%[[B]], %[[H]], 0, 0] [1, 1, 4, 4]
// CHECK: %[[PTR:.*]] = memref.extract_aligned_pointer_as_index %[[SLICE]]
// CHECK: %[[MISALIGNED:.*]] = arith.cmpi ne
// A call of 8 tokens or more: the copies cost two sweeps of the state.
// CHECK: %[[LONG:.*]] = arith.cmpi uge, %{{.*}}, %c8
// CHECK: %[[STAGED:.*]] = arith.andi %[[MISALIGNED]], %[[LONG]]
// CHECK: %[[CAST:.*]] = memref.cast %[[COPY]]
// CHECK: scf.if %[[STAGED]] {
// CHECK-NEXT: memref.copy %[[SLICE]], %[[CAST]]
// CHECK: } {miras.staged}
// CHECK: %[[WBH:.*]] = arith.select %[[STAGED]], %[[CAST]], %[[SLICE]] {miras.staged}
// CHECK: scf.for %[[T:.*]] =
// CHECK-DAG: %[[A:.*]] = memref.load %[[ALPHA]][%[[B]], %[[T]], %[[H]]]
// CHECK-DAG: %[[KT:.*]] = memref.subview %[[K]][%[[B]], %[[T]], %[[H]], 0]
// CHECK-DAG: %[[OT:.*]] = memref.subview %[[O]][%[[B]], %[[T]], %[[H]], 0]
// The next token's inputs are prefetched, and its output row for writing.
// CHECK-DAG: %[[NEXT:.*]] = arith.addi %[[T]], %{{.*}} : index
// CHECK-DAG: memref.prefetch %[[Q]][%[[B]], %[[NEXT]], %[[H]], %{{.*}}], read, locality<3>, data
// CHECK-DAG: memref.prefetch %[[K]][%[[B]], %[[NEXT]], %[[H]], %{{.*}}], read, locality<3>, data
// CHECK-DAG: memref.prefetch %[[V]][%[[B]], %[[NEXT]], %[[H]], %{{.*}}], read, locality<3>, data
// CHECK-DAG: memref.prefetch %[[O]][%[[B]], %[[NEXT]], %[[H]], %{{.*}}], write, locality<3>, data
// y = (alpha W) k as alpha (W k): the matvec reads W itself, the decay scales
// its 4 results instead of the 16 entries of W.
// CHECK: linalg.generic {indexing_maps = [#[[MAT]], #[[COL]], #[[ROW]]], iterator_types = ["parallel", "reduction"]} ins(%[[WBH]], %[[KT]] : {{.*}}) outs(%[[Y:.*]] :
// CHECK-NOT: arith.mulf %[[A]]
// CHECK: linalg.generic {{.*}} outs(%[[Y]] :
// CHECK-NEXT: ^bb0
// CHECK-NEXT: arith.mulf %{{.*}}, %[[A]]
// The update: one parallel generic over [4, 4], in place.
// CHECK: linalg.generic {indexing_maps = [#[[MAT]], #[[ROW]], #[[COL]], #[[MAT]]], iterator_types = ["parallel", "parallel"]} ins(%[[WBH]], %{{.*}}, %[[KT]] : {{.*}}) outs(%[[WBH]] :
// o = W' q, written straight into the output slice
// CHECK: linalg.generic {{.*}} outs(%[[OT]]
// After the token loop, the copy goes back to the caller's slice.
// CHECK: scf.if %[[STAGED]] {
// CHECK-NEXT: memref.copy %[[WBH]], %[[SLICE]]
// CHECK: } {miras.staged}
miras.module @gdn attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.gate @alpha : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    %h = arith.constant 0.5 : f32
    %l = arith.mulf %h, %s : f32
    miras.yield %l : f32
  }
  miras.retention "l2" {decay = @alpha, order = "before_gradient"}
  miras.optimizer "gd" {lr = @eta}
}
