// miras-unstage-states, the first step of the CUDA lowering: the CPU kernel's
// aligned copy of a misaligned state slice (miras.staged) goes, and the token
// loop sweeps the slice itself (device buffers start on 256 bytes; the SIMT
// form moves the state to a block buffer). The alignment test goes with it.
// RUN: miras-opt %s --miras-derive --miras-lower-to-linalg --miras-unstage-states | FileCheck %s

// CHECK-LABEL: func.func @gdn_kernel(
// CHECK-SAME: %[[W:arg7]]: memref<?x?x4x4xf32>
// CHECK-NOT: memref.alloc()
// CHECK: %[[SLICE:.*]] = memref.subview %[[W]]
// CHECK-NOT: miras.staged
// CHECK-NOT: extract_aligned_pointer
// CHECK: linalg.generic {{.*}} ins(%[[SLICE]], %{{.*}}) outs(%[[SLICE]] :
// CHECK-NOT: memref.dealloc
// CHECK-NOT: miras.staged
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
