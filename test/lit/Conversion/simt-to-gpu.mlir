// miras-simt-to-gpu: a SIMT-form kernel becomes a gpu.module with f32 and bf16 kernels:
// block per pair, threads regions as each thread's code between barriers, buffers in
// dynamic shared memory (rows of 32 words padded) or, past the budget, in the workspace.
// RUN: miras-opt %s --miras-to-gpu | FileCheck %s
// RUN: miras-opt %s --pass-pipeline='builtin.module(miras-to-gpu{shared-budget=1000})' | FileCheck %s --check-prefix=SPILL

func.func @toy_kernel(%begin: index, %end: index, %q: memref<?x?x?x32xf32>,
                      %W: memref<?x?x8x32xf32>, %o: memref<?x?x?x8xf32>)
    attributes {miras.algorithm = "sequential", miras.simt_threads = 32 : i64} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c8 = arith.constant 8 : index
  %c32 = arith.constant 32 : index
  %c256 = arith.constant 256 : index
  %w = memref.alloca() {miras.promoted_state} : memref<8x32xf32>
  %y = memref.alloca() : memref<8xf32>
  %s = memref.alloca() : memref<f32>
  %T = memref.dim %q, %c1 : memref<?x?x?x32xf32>
  %H = memref.dim %q, %c2 : memref<?x?x?x32xf32>
  scf.for %pair = %begin to %end step %c1 {
    %b = arith.divui %pair, %H : index
    %h = arith.remui %pair, %H : index
    scf.parallel (%tid) = (%c0) to (%c32) step (%c1) {
      scf.for %l = %tid to %c256 step %c32 {
        %j = arith.remui %l, %c32 : index
        %i = arith.divui %l, %c32 : index
        %x = memref.load %W[%b, %h, %i, %j] : memref<?x?x8x32xf32>
        memref.store %x, %w[%i, %j] : memref<8x32xf32>
      }
      scf.reduce
    } {miras.threads}
    scf.for %t = %c0 to %T step %c1 {
      // Read by every thread, then overwritten by thread 0 below: a barrier must
      // separate the read from that write on the next iteration.
      %scale = memref.load %s[] : memref<f32>
      scf.parallel (%tid) = (%c0) to (%c32) step (%c1) {
        scf.for %i = %tid to %c8 step %c32 {
          %acc = scf.for %j = %c0 to %c32 step %c1 iter_args(%a = %scale) -> (f32) {
            %wij = memref.load %w[%i, %j] : memref<8x32xf32>
            %qj = memref.load %q[%b, %t, %h, %j] : memref<?x?x?x32xf32>
            %m = arith.mulf %wij, %qj : f32
            %n = arith.addf %a, %m : f32
            scf.yield %n : f32
          }
          memref.store %acc, %o[%b, %t, %h, %i] : memref<?x?x?x8xf32>
          memref.store %acc, %y[%i] : memref<8xf32>
        }
        scf.reduce
      } {miras.threads}
      scf.parallel (%tid) = (%c0) to (%c32) step (%c1) {
        %first = arith.cmpi eq, %tid, %c0 : index
        scf.if %first {
          %y0 = memref.load %y[%c0] : memref<8xf32>
          memref.store %y0, %s[] : memref<f32>
        }
        scf.reduce
      } {miras.threads}
    }
  }
  return
}

// CHECK: module attributes {gpu.container_module}
// CHECK-NOT: func.func
// W's padded slice (8 x 33 words = 1056 bytes) first, then y (32) and s (4).
// CHECK: gpu.module @toy_cuda attributes {miras.block_threads = 32 : i64, miras.shared_bytes = 1092 : i64, miras.workspace_bytes = 0 : i64}
// CHECK: gpu.func @toy_f32(%[[B:.*]]: i64, %[[T:.*]]: i64, %[[H:.*]]: i64, %[[Q:.*]]: memref<1xf32>, %[[W:.*]]: memref<1xf32>, %[[O:.*]]: memref<1xf32>, %{{.*}}: memref<1xi8>) kernel attributes {known_block_size = array<i32: 32, 1, 1>}
// CHECK-DAG: %[[PAIR:.*]] = gpu.block_id x
// CHECK-DAG: %[[TID:.*]] = gpu.thread_id x
// CHECK-DAG: memref.reinterpret_cast %[[Q]] to offset: [0], sizes: [%{{.*}}, %{{.*}}, %{{.*}}, 32], strides: [%{{.*}}, %{{.*}}, 32, 1] : memref<1xf32> to memref<?x?x?x32xf32>
// CHECK-DAG: memref.reinterpret_cast %[[W]] to offset: [0], sizes: [%{{.*}}, %{{.*}}, 8, 32], strides: [%{{.*}}, 256, 32, 1] : memref<1xf32> to memref<?x?x8x32xf32>
// CHECK-DAG: %[[SHM:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK-DAG: %[[WPAD:.*]] = memref.view %[[SHM]][%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<8x33xf32, #gpu.address_space<workgroup>>
// CHECK-DAG: memref.subview %[[WPAD]][0, 0] [8, 32] [1, 1] : memref<8x33xf32, #gpu.address_space<workgroup>> to memref<8x32xf32, strided<[33, 1]>, #gpu.address_space<workgroup>>
// CHECK-DAG: memref.view %[[SHM]][%c1056][] : {{.*}} to memref<8xf32, #gpu.address_space<workgroup>>
// CHECK-DAG: memref.view %[[SHM]][%c1088][] : {{.*}} to memref<f32, #gpu.address_space<workgroup>>
// Copy-in by every thread, then a barrier.
// CHECK: scf.for %{{.*}} = %[[TID]] to %c256 step %c32 {
// CHECK: }
// CHECK-NEXT: gpu.barrier
// CHECK-NEXT: scf.for
// CHECK-NEXT: memref.load %{{.*}}[] : memref<f32, #gpu.address_space<workgroup>>
// CHECK-NEXT: gpu.barrier
// CHECK-NEXT: scf.for %{{.*}} = %[[TID]] to %c8 step %c32 {
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<8xf32, #gpu.address_space<workgroup>>
// CHECK-NEXT: }
// CHECK-NEXT: gpu.barrier
// CHECK-NEXT: arith.cmpi eq, %[[TID]], %c0
// CHECK-NEXT: scf.if
// CHECK: }
// CHECK-NEXT: gpu.barrier
// CHECK-NEXT: }
// CHECK-NEXT: gpu.return
// The bf16 kernel reads q as bfloat16 and widens it; W and o stay float32.
// CHECK: gpu.func @toy_bf16(%{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: memref<1xbf16>, %{{.*}}: memref<1xf32>, %{{.*}}: memref<1xf32>, %{{.*}}: memref<1xi8>) kernel
// CHECK: %[[QB:.*]] = memref.load %{{.*}} : memref<?x?x?x32xbf16>
// CHECK-NEXT: arith.extf %[[QB]] : bf16 to f32

// With 1000 bytes of shared memory W's slice (1024 bytes unpadded) goes to the pair's
// part of the workspace.
// SPILL: gpu.module @toy_cuda attributes {miras.block_threads = 32 : i64, miras.shared_bytes = 36 : i64, miras.workspace_bytes = 1024 : i64}
// SPILL: %[[PAIR:.*]] = gpu.block_id x
// SPILL: %[[BASE:.*]] = arith.muli %[[PAIR]], %c1024
// SPILL: %[[WS:.*]] = memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [%{{.*}}], strides: [1] : memref<1xi8> to memref<?xi8>
// SPILL: memref.view %[[WS]][%{{.*}}][] : memref<?xi8> to memref<8x32xf32>
