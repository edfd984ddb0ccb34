// Kernels the CUDA lowering rejects, each with a located error.
// RUN: miras-opt %s --split-input-file --verify-diagnostics --pass-pipeline='builtin.module(func.func(miras-distribute-threads{threads=64}),miras-simt-to-gpu)'

// expected-error @+1 {{has no loop over (batch, head) pairs from its first two arguments}}
func.func @no_pairs_kernel(%begin: index, %end: index, %o: memref<?x?x?x4xf32>)
    attributes {miras.algorithm = "sequential"} {
  return
}

// -----

func.func @reduction_kernel(%begin: index, %end: index, %o: memref<?x?x?x4xf32>)
    attributes {miras.algorithm = "sequential"} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.0 : f32
  scf.for %pair = %begin to %end step %c1 {
    // expected-error @+1 {{with reductions is not supported on the GPU}}
    %sum = scf.parallel (%i) = (%c0) to (%c4) step (%c1) init (%zero) -> f32 {
      scf.reduce(%zero : f32) {
      ^bb0(%a: f32, %b: f32):
        %s = arith.addf %a, %b : f32
        scf.reduce.return %s : f32
      }
    }
  }
  return
}

// -----

func.func @vector_scan_kernel(%begin: index, %end: index, %o: memref<?x?x?x4xf32>)
    attributes {miras.algorithm = "sequential"} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %init = arith.constant dense<0.0> : vector<4xf32>
  %buf = memref.alloca() : memref<4xf32>
  scf.for %pair = %begin to %end step %c1 {
    // expected-error @+1 {{yields a 'vector<4xf32>' outside any parallel loop; only scalars can be passed between threads}}
    %v = scf.for %j = %c0 to %c4 step %c1 iter_args(%acc = %init) -> (vector<4xf32>) {
      %x = memref.load %buf[%j] : memref<4xf32>
      memref.store %x, %buf[%j] : memref<4xf32>
      scf.yield %acc : vector<4xf32>
    }
  }
  return
}

// -----

func.func @dynamic_buffer_kernel(%begin: index, %end: index, %o: memref<?x?x?x4xf32>)
    attributes {miras.algorithm = "sequential"} {
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %H = memref.dim %o, %c2 : memref<?x?x?x4xf32>
  // expected-error @+1 {{needs a static shape on the GPU}}
  %buf = memref.alloca(%H) : memref<?xf32>
  scf.for %pair = %begin to %end step %c1 {
  }
  return
}
