// miras-distribute-threads: parallel loops become threads regions, stores outside them
// run on thread 0, state slices of the pair are copied into block buffers, reduction
// accumulators move into registers, short row loops share each row's sum over threads.
// RUN: miras-opt %s --pass-pipeline='builtin.module(func.func(miras-distribute-threads{threads=64}),canonicalize,cse)' | FileCheck %s
// With reverse-threads (mirasc --simt-on-cpu) region i is run by thread 63 - i, so the
// CPU runs each region's threads last first.
// RUN: miras-opt %s --pass-pipeline='builtin.module(func.func(miras-distribute-threads{threads=64 reverse-threads=1}),canonicalize,cse)' | FileCheck %s --check-prefix=REVERSE
// REVERSE: scf.parallel (%[[I:.*]]) = (%c0) to (%c64) step (%c1) {
// REVERSE-NEXT: %[[TID:.*]] = arith.subi %c63, %[[I]] : index
// REVERSE-NEXT: arith.cmpi eq, %[[TID]], %c0

// A decayed state and a scalar state: W = a * W + v k^T; o = W q; s += a; and a scan
// (powers of a in a scratch buffer, the last one scaling it) like the chunked form's.
func.func @toy_kernel(%begin: index, %end: index, %q: memref<?x?x?x4xf32>,
                      %k: memref<?x?x?x4xf32>, %v: memref<?x?x?x8xf32>, %a: memref<?x?x?xf32>,
                      %W: memref<?x?x8x4xf32>, %s: memref<?x?xf32>, %o: memref<?x?x?x8xf32>)
    attributes {miras.algorithm = "sequential"} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  %zero = arith.constant 0.0 : f32
  %one = arith.constant 1.0 : f32
  %scan = memref.alloca() : memref<4xf32>
  %T = memref.dim %q, %c1 : memref<?x?x?x4xf32>
  %H = memref.dim %q, %c2 : memref<?x?x?x4xf32>
  scf.for %pair = %begin to %end step %c1 {
    %b = arith.divui %pair, %H : index
    %h = arith.remui %pair, %H : index
    scf.for %t = %c0 to %T step %c1 {
      %at = memref.load %a[%b, %t, %h] : memref<?x?x?xf32>
      memref.prefetch %q[%b, %t, %h, %c0], read, locality<3>, data : memref<?x?x?x4xf32>
      scf.parallel (%i, %j) = (%c0, %c0) to (%c8, %c4) step (%c1, %c1) {
        %w = memref.load %W[%b, %h, %i, %j] : memref<?x?x8x4xf32>
        %vi = memref.load %v[%b, %t, %h, %i] : memref<?x?x?x8xf32>
        %kj = memref.load %k[%b, %t, %h, %j] : memref<?x?x?x4xf32>
        %d = arith.mulf %at, %w : f32
        %p = arith.mulf %vi, %kj : f32
        %n = arith.addf %d, %p : f32
        memref.store %n, %W[%b, %h, %i, %j] : memref<?x?x8x4xf32>
        scf.reduce
      }
      scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
        memref.store %zero, %o[%b, %t, %h, %i] : memref<?x?x?x8xf32>
        scf.for %j = %c0 to %c4 step %c1 {
          %w = memref.load %W[%b, %h, %i, %j] : memref<?x?x8x4xf32>
          %qj = memref.load %q[%b, %t, %h, %j] : memref<?x?x?x4xf32>
          %acc = memref.load %o[%b, %t, %h, %i] : memref<?x?x?x8xf32>
          %m = arith.mulf %w, %qj fastmath<reassoc,contract> : f32
          %n = arith.addf %acc, %m fastmath<reassoc,contract> : f32
          memref.store %n, %o[%b, %t, %h, %i] : memref<?x?x?x8xf32>
        }
        scf.reduce
      }
      %g = scf.for %j = %c0 to %c4 step %c1 iter_args(%p = %one) -> (f32) {
        memref.store %p, %scan[%j] : memref<4xf32>
        %n = arith.mulf %p, %at : f32
        scf.yield %n : f32
      }
      scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
        %x = memref.load %scan[%i] : memref<4xf32>
        %y = arith.mulf %x, %g : f32
        memref.store %y, %scan[%i] : memref<4xf32>
        scf.reduce
      }
      %old = memref.load %s[%b, %h] : memref<?x?xf32>
      %new = arith.addf %old, %at : f32
      memref.store %new, %s[%b, %h] : memref<?x?xf32>
    }
  }
  return
}

// CHECK-LABEL: func.func @toy_kernel
// CHECK-SAME: miras.simt_threads = 64
// State slices in block buffers (shared memory on the GPU), and a buffer that passes the
// scan's result from thread 0 to the others.
// CHECK-DAG: %[[SCAN:.*]] = memref.alloca() : memref<4xf32>
// CHECK-DAG: %[[PASS:.*]] = memref.alloca() : memref<f32>
// CHECK-DAG: %[[PART:.*]] = memref.alloca() : memref<32xf32>
// CHECK-DAG: %[[SW:.*]] = memref.alloca() {miras.promoted_state} : memref<8x4xf32>
// CHECK-DAG: %[[SS:.*]] = memref.alloca() {miras.promoted_state} : memref<f32>
// CHECK: scf.for %[[PAIR:.*]] = %{{.*}} to %{{.*}} step
// CHECK: %[[B:.*]] = arith.divui %[[PAIR]]
// CHECK: %[[H:.*]] = arith.remui %[[PAIR]]
// Copy-in: the scalar state by thread 0, the 32 elements of W over 64 threads.
// CHECK: scf.parallel (%[[T0:.*]]) = (%c0) to (%c64) step (%c1) {
// CHECK:   arith.cmpi eq, %[[T0]], %c0
// CHECK:   memref.store %{{.*}}, %[[SS]][] : memref<f32>
// CHECK: } {miras.threads}
// CHECK: scf.parallel (%[[T1:.*]]) = (%c0) to (%c64) step (%c1) {
// CHECK:   scf.for %{{.*}} = %[[T1]] to %c32 step %c64 {
// CHECK:     memref.load %{{.*}}[%[[B]], %[[H]], %{{.*}}, %{{.*}}] : memref<?x?x8x4xf32>
// CHECK:     memref.store %{{.*}}, %[[SW]]
// CHECK: } {miras.threads}
// The token loop stays uniform and carries s in a register; the prefetch is gone.
// CHECK: %[[S0:.*]] = memref.load %[[SS]][] : memref<f32>
// CHECK: %[[SEND:.*]] = scf.for %[[T:.*]] = %c0 to %{{.*}} step %c1 iter_args(%{{.*}} = %[[S0]]) -> (f32) {
// CHECK-NOT: memref.prefetch
// The rank-1 update: (i, j) flattened, j fastest across threads.
// CHECK: scf.parallel (%[[T2:.*]]) = (%c0) to (%c64) step (%c1) {
// CHECK:   scf.for %[[L:.*]] = %[[T2]] to %c32 step %c64 {
// CHECK:     %[[J:.*]] = arith.remui %[[L]], %c4
// CHECK:     %[[I:.*]] = arith.divui %[[L]], %c4
// CHECK:     memref.load %[[SW]][%[[I]], %[[J]]]
// CHECK:     memref.store %{{.*}}, %[[SW]][%[[I]], %[[J]]]
// CHECK: } {miras.threads}
// The matvec, 8 rows on 64 threads: 4 threads per row (one per term here) sum every 4th
// term into partials, then each row adds its partials to its accumulator o[b, t, h, i],
// carried in a register.
// CHECK: scf.parallel (%[[T4:.*]]) = (%c0) to (%c64) step (%c1) {
// CHECK:   scf.for %[[L4:.*]] = %[[T4]] to %c32 step %c64 {
// CHECK:     %[[LANE:.*]] = arith.remui %[[L4]], %c4
// CHECK:     %[[R4:.*]] = arith.divui %[[L4]], %c4
// CHECK:     %[[P:.*]] = scf.for %{{.*}} = %[[LANE]] to %c4 step %c4 iter_args(%{{.*}} = %cst{{.*}}) -> (f32) {
// CHECK:     %[[SLOT:.*]] = arith.addi %{{.*}}, %[[LANE]]
// CHECK:     memref.store %[[P]], %[[PART]][%[[SLOT]]] : memref<32xf32>
// CHECK: } {miras.threads}
// CHECK: scf.parallel
// CHECK:   scf.for %[[ROW:.*]] = %{{.*}} to %c8 step %c64 {
// CHECK:     %[[INIT:.*]] = memref.load %{{.*}}[%[[B]], %[[T]], %[[H]], %[[ROW]]]
// CHECK:     %[[SUM:.*]] = scf.for %{{.*}} = %c0 to %c4 step %c1 iter_args(%[[ACC:.*]] = %[[INIT]]) -> (f32) {
// CHECK:       memref.load %[[PART]]
// CHECK:       arith.addf %[[ACC]]
// CHECK:     memref.store %[[SUM]], %{{.*}}[%[[B]], %[[T]], %[[H]], %[[ROW]]]
// CHECK: } {miras.threads}
// The scan writes memory and yields a value: thread 0 runs it and passes the value on.
// CHECK: scf.parallel (%[[T3:.*]]) = (%c0) to (%c64) step (%c1) {
// CHECK:   %[[FIRST:.*]] = arith.cmpi eq, %[[T3]], %c0
// CHECK:   scf.if %[[FIRST]] {
// CHECK:     %[[G:.*]] = scf.for
// CHECK:       memref.store %{{.*}}, %[[SCAN]]
// CHECK:     memref.store %[[G]], %[[PASS]][] : memref<f32>
// CHECK: } {miras.threads}
// CHECK: %[[GALL:.*]] = memref.load %[[PASS]][] : memref<f32>
// CHECK: scf.parallel
// CHECK:   arith.mulf %{{.*}}, %[[GALL]]
// CHECK: } {miras.threads}
// Copy-out after the token loop.
// CHECK: memref.store %[[SEND]], %[[SS]][] : memref<f32>
// CHECK: memref.store %{{.*}}, %{{.*}}[%[[B]], %[[H]], %{{.*}}, %{{.*}}] : memref<?x?x8x4xf32>
// CHECK: memref.store %{{.*}}, %{{.*}}[%[[B]], %[[H]]] : memref<?x?xf32>
