// The verifier rejects ill-formed modules with located errors.
// RUN: miras-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{must contain exactly one miras.optimizer, found 0}}
miras.module @no_optimizer attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
}

// -----

miras.module @bad_gate_ref attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  // expected-error @+1 {{argument 'lr' refers to undeclared gate @eta}}
  miras.optimizer "gd" {lr = @eta}
}

// -----

miras.module @bad_decay attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{argument 'decay' must be a number in (0, 1], a scalar gate or a channel gate, got 1.5}}
  miras.retention "l2" {decay = 1.5 : f64}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @channel_lr attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @eta : channel along "dk" dim 4
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  // expected-error @+1 {{argument 'lr' needs a scalar gate, but @eta is a channel gate}}
  miras.optimizer "gd" {lr = @eta}
}

// -----

miras.module @implicit_needs_l2 attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  // expected-error @+1 {{optimizer 'implicit' requires a linear memory and the 'l2' bias (its closed-form step solves the l2 problem exactly), but this module has memory 'linear' and bias 'dot'}}
  miras.optimizer "implicit" {lr = 0.5 : f64}
}

// -----

miras.module @bias_arity attributes {chunk = 1 : i64, dk = 4 : i64, dv = 8 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 8 : i64}
  // expected-error @+1 {{region arguments must be 'tensor<8xf32>' (dv = 8)}}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @loss_not_scalar attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  // expected-error @+1 {{a loss bias must yield a scalar f32, got 'tensor<4xf32>'}}
  miras.bias "expression" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %e = arith.subf %y, %v : tensor<4xf32>
    miras.yield %e : tensor<4xf32>
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @unknown_memory attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{unknown memory 'tree' (supported: 'linear', 'diagonal' or 'mlp')}}
  miras.memory "tree" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

func.func @matvec_shape(%W: tensor<4x8xf32>, %k: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{shape mismatch: [4x8] times [4] gives [4], not [4]}}
  %y = miras.matvec %W, %k : tensor<4x8xf32>, tensor<4xf32> -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @broadcast_dims(%k: tensor<8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{input dim 0 does not match result dim 0}}
  %c = miras.broadcast %k [0] : tensor<8xf32> -> tensor<4x8xf32>
  return %c : tensor<4x8xf32>
}

// -----

miras.module @momentum_mirror attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{retention 'lq' is a mirror map (it keeps a dual state): mirror retentions combine with gd only for now, but the optimizer is 'momentum'}}
  miras.retention "lq" {decay = 1.0 : f64, q = 4.0 : f64}
  // expected-note @+1 {{optimizer 'momentum' is declared here}}
  miras.optimizer "momentum" {lr = 0.5 : f64, beta = 0.9 : f64}
}

// -----

miras.module @mlp_before_gradient attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-note @+1 {{memory 'mlp' is declared here}}
  miras.memory "mlp" {dk = 4 : i64, dv = 4 : i64, depth = 2.0 : f64, expansion = 2.0 : f64, act = "gelu"}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{before_gradient needs a linear memory}}
  miras.retention "l2" {decay = 0.9 : f64, order = "before_gradient"}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @mlp_channel_decay attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{a channel gate needs a memory that takes them, but the memory is 'mlp'}}
  miras.gate @alpha : channel along "dk" dim 4
  miras.memory "mlp" {dk = 4 : i64, dv = 4 : i64, depth = 2.0 : f64, expansion = 2.0 : f64, act = "gelu"}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "l2" {decay = @alpha}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @mlp_act attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-error @+1 {{argument 'act' must be 'gelu', 'gelu_tanh', 'silu', 'relu' or 'identity', got "tanh"}}
  miras.memory "mlp" {dk = 4 : i64, dv = 4 : i64, depth = 2.0 : f64, expansion = 2.0 : f64, act = "tanh"}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @lq_q attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{argument 'q' must be a number > 1, got 1}}
  miras.retention "lq" {decay = 1.0 : f64, q = 1.0 : f64}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @prox_momentum attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{retention 'elastic_net' is a proximal step whose closed form assumes one gd step, but the optimizer is 'momentum'}}
  miras.retention "elastic_net" {a = 1.0 : f64, b = 1.0 : f64}
  // expected-note @+1 {{optimizer 'momentum' is declared here}}
  miras.optimizer "momentum" {lr = 0.5 : f64, beta = 0.9 : f64}
}

// -----

miras.module @ftrl_missing attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{requires argument 'a'}}
  miras.retention "ftrl_elastic" {eta = 1.0 : f64, decay = 1.0 : f64}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

miras.module @steps_without_multistep attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true, steps = 2 : i64} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  // expected-error @+1 {{takes 1 step(s) per token, but the module's steps is 2}}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

func.func @extract_range(%k: tensor<2x8xf32>) -> tensor<8xf32> {
  // expected-error @+1 {{index 2 out of range [0, 2)}}
  %k2 = miras.extract %k [2] : tensor<2x8xf32> -> tensor<8xf32>
  return %k2 : tensor<8xf32>
}

// -----

// expected-error @+1 {{widths must be positive, got dk = -4, dv = 4}}
miras.module @negative_width attributes {chunk = 1 : i64, dk = -4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = -4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

// A gate's declared range must fit the argument it is passed to (the rule the
// frontend checks too): a decay is in (0, 1].
miras.module @gate_range_misfit attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.gate @alpha : scalar in (0.0, 2.0]
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{argument 'decay' must be in (0, 1], but @alpha is declared in (0, 2]}}
  miras.retention "l2" {decay = @alpha}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

// Row-normalising retentions need matrix weights: the rule is the retention's,
// shared with the frontend.
miras.module @kl_on_a_vector attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  // expected-note @+1 {{memory 'diagonal' is declared here}}
  miras.memory "diagonal" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  // expected-error @+1 {{retention 'kl' normalises each row of a matrix, but a diagonal memory's state is a vector}}
  miras.retention "kl" {decay = 1.0 : f64}
  miras.optimizer "gd" {lr = 0.5 : f64}
}

// -----

// An unknown kind is a located parse error naming the registered kinds.
miras.module @unknown_optimizer attributes {chunk = 1 : i64, dk = 4 : i64, dv = 4 : i64, read_after_write = true} {
  miras.memory "linear" {dk = 4 : i64, dv = 4 : i64}
  miras.bias "dot" loss {
  ^bb0(%y: tensor<4xf32>, %v: tensor<4xf32>):
    %p = arith.mulf %y, %v : tensor<4xf32>
    %s = miras.sum %p : tensor<4xf32>
    miras.yield %s : f32
  }
  miras.retention "none" {}
  // expected-error @+1 {{unknown optimizer 'adam' (supported: 'gd', 'implicit', 'ftrl', 'multistep' or 'momentum')}}
  miras.optimizer "adam" {lr = 0.5 : f64}
}
