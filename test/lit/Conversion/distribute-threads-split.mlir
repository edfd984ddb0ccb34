// miras-distribute-threads shares a short row loop's sum over threads (partial sums in a
// loop of their own, run before the row loop) only when the sum's terms read nothing the
// row's body writes: in a fused loop that first computes a row's value into a buffer and
// then sums against it, the partials would read that buffer before it is written.
// RUN: miras-opt %s --pass-pipeline='builtin.module(func.func(miras-distribute-threads{threads=64}),canonicalize,cse)' | FileCheck %s

// Accepted: y[i] = sum_j W[i, j] x[j], 8 rows over 64 threads: 4 lanes per row, 8 x 4
// partial sums.
// CHECK-LABEL: func.func @sum_of_inputs
// CHECK: memref.alloca() : memref<32xf32>
func.func @sum_of_inputs(%begin: index, %end: index, %x: memref<?x?x?x4xf32>,
                         %W: memref<?x?x8x4xf32>, %y: memref<?x?x?x8xf32>)
    attributes {miras.algorithm = "sequential"} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0.0 : f32
  scf.for %pair = %begin to %end step %c1 {
    scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
      %sum = scf.for %j = %c0 to %c4 step %c1 iter_args(%acc = %zero) -> (f32) {
        %w = memref.load %W[%c0, %pair, %i, %j] : memref<?x?x8x4xf32>
        %xj = memref.load %x[%c0, %c0, %pair, %j] : memref<?x?x?x4xf32>
        %m = arith.mulf %w, %xj fastmath<reassoc,contract> : f32
        %n = arith.addf %acc, %m fastmath<reassoc,contract> : f32
        scf.yield %n : f32
      }
      memref.store %sum, %y[%c0, %c0, %pair, %i] : memref<?x?x?x8xf32>
      scf.reduce
    }
  }
  return
}

// Refused: the row first writes u[i], then sums W[i, j] * u[i] (the fused form of two
// loops); no partial sums, the row's sum stays with its thread.
// CHECK-LABEL: func.func @sum_of_row_value
// CHECK-NOT: memref<32xf32>
// CHECK: return
func.func @sum_of_row_value(%begin: index, %end: index, %x: memref<?x?x?x8xf32>,
                            %W: memref<?x?x8x4xf32>, %y: memref<?x?x?x8xf32>)
    attributes {miras.algorithm = "sequential"} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0.0 : f32
  %two = arith.constant 2.0 : f32
  %u = memref.alloca() : memref<8xf32>
  scf.for %pair = %begin to %end step %c1 {
    scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
      %xi = memref.load %x[%c0, %c0, %pair, %i] : memref<?x?x?x8xf32>
      %ui = arith.mulf %xi, %two : f32
      memref.store %ui, %u[%i] : memref<8xf32>
      %sum = scf.for %j = %c0 to %c4 step %c1 iter_args(%acc = %zero) -> (f32) {
        %w = memref.load %W[%c0, %pair, %i, %j] : memref<?x?x8x4xf32>
        %r = memref.load %u[%i] : memref<8xf32>
        %m = arith.mulf %w, %r fastmath<reassoc,contract> : f32
        %n = arith.addf %acc, %m fastmath<reassoc,contract> : f32
        scf.yield %n : f32
      }
      memref.store %sum, %y[%c0, %c0, %pair, %i] : memref<?x?x?x8xf32>
      scf.reduce
    }
  }
  return
}
