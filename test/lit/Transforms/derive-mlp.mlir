// Reverse mode through an MLP memory: the gradient of each weight is an outer
// product of a backpropagated error and that layer's input, and the error
// flows back through W2 with a vecmat (W2^T g), never a transposed copy.
// RUN: miras-opt %s -split-input-file --miras-derive-update | FileCheck %s --check-prefix=RAW
// RUN: miras-opt %s -split-input-file --miras-derive | FileCheck %s --check-prefix=FINAL

// RAW-LABEL: miras.module @mlp_relu
// RAW: func.func private @step(%[[W1:.*]]: tensor<8x4xf32> {miras.name = "W1"}, %[[W2:.*]]: tensor<4x8xf32> {miras.name = "W2"}, %{{.*}}: tensor<4xf32> {miras.name = "q"}, %[[K:.*]]: tensor<4xf32> {miras.name = "k"}, %[[V:.*]]: tensor<4xf32> {miras.name = "v"}, %[[ETA:.*]]: f32 {miras.name = "eta"})
// Forward: h = relu(W1 k), y = W2 h.
// RAW: %[[Z:.*]] = miras.matvec %[[W1]], %[[K]] : tensor<8x4xf32>, tensor<4xf32> -> tensor<8xf32>
// RAW: %[[H:.*]] = arith.maximumf %[[Z]], %{{.*}} : tensor<8xf32>
// RAW: %[[Y:.*]] = miras.matvec %[[W2]], %[[H]]
// RAW: %[[E:.*]] = arith.subf %[[Y]], %[[V]]
// Backward: dh = W2^T e, masked by relu'; dW1 = dh k^T and dW2 = e h^T, each
// scaled on its vector side so that the rank-1 form survives.
// RAW: %[[DH:.*]] = miras.vecmat %[[E]], %[[W2]] : tensor<4xf32>, tensor<4x8xf32> -> tensor<8xf32>
// RAW: %[[MASK:.*]] = arith.cmpf oge, %[[Z]]
// RAW: %[[DZ:.*]] = arith.select %[[MASK]], %[[DH]]
// RAW: %[[LR1:.*]] = miras.broadcast %[[ETA]] [] : f32 -> tensor<8xf32>
// RAW: %[[U1:.*]] = arith.mulf %[[LR1]], %[[DZ]]
// RAW: %[[G1:.*]] = miras.outer %[[U1]], %[[K]] : tensor<8xf32>, tensor<4xf32> -> tensor<8x4xf32>
// RAW: %[[W1N:.*]] = arith.subf %[[W1]], %[[G1]] : tensor<8x4xf32>
// RAW: %[[LR2:.*]] = miras.broadcast %[[ETA]] [] : f32 -> tensor<4xf32>
// RAW: %[[U2:.*]] = arith.mulf %[[LR2]], %[[E]]
// RAW: %[[G2:.*]] = miras.outer %[[U2]], %[[H]] : tensor<4xf32>, tensor<8xf32> -> tensor<4x8xf32>
// RAW: %[[W2N:.*]] = arith.subf %[[W2]], %[[G2]] : tensor<4x8xf32>
// The read goes through the new weights.
// RAW: %[[R:.*]] = miras.matvec %[[W1N]]
// RAW: return %[[W1N]], %[[W2N]], %{{.*}} : tensor<8x4xf32>, tensor<4x8xf32>, tensor<4xf32>
// FINAL-LABEL: miras.module @mlp_relu
// FINAL: func.func private @step
// FINAL-COUNT-2: miras.outer
// FINAL-NOT: miras.outer
// FINAL: return
miras.module @mlp_relu attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "mlp" {act = "relu", depth = 2.0 : f64, dk = 4 : i64, dv = 4 : i64, expansion = 2.0 : f64, layernorm = 0.0 : f64, residual = 0.0 : f64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    %h = arith.constant 0.5 : f32
    %l = arith.mulf %h, %s : f32
    miras.yield %l : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = @eta}
}

// -----

// Momentum (Titans) carries S next to each weight; Memora's kl retention reads
// the weights through a row softmax of the dual state A.
// RAW-LABEL: miras.module @memora_momentum_free
// RAW: func.func private @step(%[[A1:.*]]: tensor<8x4xf32> {miras.name = "A1"}, %[[A2:.*]]: tensor<4x8xf32> {miras.name = "A2"}
// RAW: %[[M:.*]] = miras.row_max %[[A1]] : tensor<8x4xf32> -> tensor<8xf32>
// RAW: %[[MB:.*]] = miras.broadcast %[[M]] [0] : tensor<8xf32> -> tensor<8x4xf32>
// RAW: %[[SH:.*]] = arith.subf %[[A1]], %[[MB]]
// RAW: %[[EX:.*]] = math.exp %[[SH]]
// RAW: %[[Z:.*]] = miras.row_sum %[[EX]]
// RAW: %[[ZB:.*]] = miras.broadcast %[[Z]] [0]
// RAW: %[[W1:.*]] = arith.divf %[[EX]], %[[ZB]]
// RAW: miras.matvec %[[W1]]
miras.module @memora_momentum_free attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : scalar
  miras.memory "mlp" {act = "gelu", depth = 2.0 : f64, dk = 4 : i64, dv = 4 : i64, expansion = 2.0 : f64, layernorm = 0.0 : f64, residual = 0.0 : f64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "kl" {decay = 0.9 : f64}
  miras.optimizer "gd" {lr = @eta}
}

// -----

// RAW-LABEL: miras.module @titans
// RAW: func.func private @step(%[[W1:.*]]: tensor<8x4xf32> {miras.name = "W1"}, %[[W2:.*]]: tensor<4x8xf32> {miras.name = "W2"}, %[[S1:.*]]: tensor<8x4xf32> {miras.name = "S1"}, %[[S2:.*]]: tensor<4x8xf32> {miras.name = "S2"}
// RAW-SAME: -> (tensor<8x4xf32> {miras.name = "W1"}, tensor<4x8xf32> {miras.name = "W2"}, tensor<8x4xf32> {miras.name = "S1"}, tensor<4x8xf32> {miras.name = "S2"}, tensor<4xf32> {miras.name = "o"})
// S1' = mu S1 - theta g1 ; W1' = alpha W1 + S1'
// RAW: %[[MS:.*]] = arith.mulf %{{.*}}, %[[S1]] : tensor<8x4xf32>
// RAW: %[[S1N:.*]] = arith.subf %[[MS]], %{{.*}} : tensor<8x4xf32>
// RAW: %[[W1N:.*]] = arith.addf %{{.*}}, %[[S1N]] : tensor<8x4xf32>
miras.module @titans attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @theta : scalar
  miras.gate @mu : scalar
  miras.gate @alpha : scalar
  miras.memory "mlp" {act = "silu", depth = 2.0 : f64, dk = 4 : i64, dv = 4 : i64, expansion = 2.0 : f64, layernorm = 0.0 : f64, residual = 0.0 : f64}
  miras.bias "l2" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    %sq = arith.mulf %e, %e : tensor<4xf32>
    %s = miras.sum %sq : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha}
  miras.optimizer "momentum" {lr = @theta, beta = @mu}
}
