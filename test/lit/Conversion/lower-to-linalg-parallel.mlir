// The chunked parallel form (SPEC section 7): per chunk of 3 tokens, token
// loops store the keys, then (after one product with the anchor for all
// tokens) the rank-1 factors u, the scaled errors at the anchor, into [3, 4]
// buffers; contractions then give the chunk's outputs and its final state.
// RUN: miras-opt %s --pass-pipeline='builtin.module(miras-derive,miras-to-linalg{algorithm=chunked})' | FileCheck %s
// RUN: miras-opt %s --pass-pipeline='builtin.module(miras-derive,miras-to-linalg)' | FileCheck %s --check-prefix=AUTO

// CHECK-LABEL: func.func @decayed_kernel
// CHECK-SAME: miras.algorithm = "chunked"
// CHECK-DAG: %[[C3:.*]] = arith.constant 3 : index
// CHECK: scf.for %[[PAIR:.*]] =
// CHECK: %[[SLICE:.*]] = memref.subview
// CHECK: %[[W:.*]] = arith.select %{{.*}}, %{{.*}}, %[[SLICE]] {miras.staged}
// A call may start inside a chunk (its chunk position): the head, the tokens
// up to the first chunk start, runs token by token; then whole chunks.
// CHECK: %[[HEAD:.*]] = arith.minui %{{.*}}, %{{.*}}
// CHECK: scf.for %{{.*}} = %c0 to %[[HEAD]]
// CHECK: scf.for %[[START:.*]] = %[[HEAD]] to %[[TAIL:.*]] step %[[C3]]
// CHECK: %[[LEFT:.*]] = arith.subi %{{.*}}, %[[START]]
// CHECK: %[[SIZE:.*]] = arith.minui %[[LEFT]], %[[C3]]
// Stage 0: the chunk's keys (and queries) into [3, 4] rows.
// CHECK: scf.for %[[T0:.*]] = %{{.*}} to %[[SIZE]]
// CHECK: memref.subview %[[KEYS:.*]][%[[T0]], 0]
// The gradient's product with the anchor (the state itself until the chunk
// ends), for all tokens at once: P = K W^T.
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} ins(%[[KEYS]], %[[W]] :
// Stage 1: the errors at the anchor from P's rows, into U.
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[SIZE]]
// CHECK: arith.subf
// The decay products (scalar loops), then S = Q Wk^T, O = g Q W^T + (R .* S) U.
// CHECK: arith.select
// CHECK: iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: iterator_types = ["parallel", "parallel", "reduction"]{{.*}} ins({{.*}}, %[[W]] :
// CHECK: iterator_types = ["parallel", "reduction", "parallel"]
// CHECK: arith.subf
// The state at the chunk's end, in place: W = g W, then W -= U^T diag(r) Wk.
// CHECK: outs(%[[W]] :
// CHECK: iterator_types = ["parallel", "reduction", "parallel"]{{.*}} outs(%[[W]] :
// No per-token branch in the chunk; the tail (a last partial chunk) runs token
// by token too (a decode step costs a token, not a chunk), then the position.
// CHECK-NOT: scf.if
// CHECK: scf.for %{{.*}} = %[[TAIL]] to
// CHECK: memref.store {{.*}} : memref<1xf32

// auto takes the dual form only for states of 128 x 128 entries or more (it
// was slower than the sequential kernel below that): this 4 x 4 one stays
// sequential.
// AUTO-LABEL: func.func @decayed_kernel
// AUTO-SAME: miras.algorithm = "sequential"
miras.module @decayed attributes {chunk = 3 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @alpha : scalar
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha, order = "decoupled"}
  miras.optimizer "gd" {lr = 1.0e-01 : f64}
}
