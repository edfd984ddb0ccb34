// miras-gpu-lockstep (mirasc --cuda-on-cpu): the CUDA kernel's code back in the host
// kernel, one pair per block, shared memory a stack buffer, and the code between two
// barriers run for thread 31 down to 0 before the next; a value read before a barrier
// and used after it passes through a slot.
// RUN: miras-opt %S/simt-to-gpu.mlir --pass-pipeline='builtin.module(miras-simt-to-gpu{keep-kernel=1},miras-gpu-lockstep,canonicalize,cse)' | FileCheck %s
// RUN: miras-opt %S/simt-to-gpu.mlir --pass-pipeline='builtin.module(miras-simt-to-gpu{keep-kernel=1},miras-gpu-lockstep)' | FileCheck %s --check-prefix=NOGPU
// NOGPU-NOT: gpu.

// CHECK: func.func @toy_kernel({{.*}}: memref<?x?x?x32xf32>, {{.*}}: memref<?x?x8x32xf32>, {{.*}}: memref<?x?x?x8xf32>)
// CHECK-DAG: %[[SLOT:.*]] = memref.alloca() : memref<f32>
// CHECK-DAG: %[[SHARED:.*]] = memref.alloca() : memref<1092xi8>
// CHECK: scf.for %[[PAIR:.*]] = %{{.*}} to %{{.*}} step %c1 {
// CHECK: %[[WPAD:.*]] = memref.view %[[SHARED]][%c0][] : memref<1092xi8> to memref<8x33xf32>
// CHECK: %[[S:.*]] = memref.view %[[SHARED]][%c1088][] : memref<1092xi8> to memref<f32>
// Segment 1: the copy-in, every thread in turn.
// CHECK: scf.for %[[T1:.*]] = %c0 to %c32 step %c1 {
// CHECK-NEXT: %[[TID1:.*]] = arith.subi %c31, %[[T1]] : index
// CHECK-NEXT: scf.for %{{.*}} = %[[TID1]] to %c256 step %c32 {
// The token loop is uniform; the load of s before its barrier goes through the slot.
// CHECK: scf.for %{{.*}} = %c0 to %{{.*}} step %c1 {
// CHECK-NEXT: scf.for %{{.*}} = %c0 to %c32 step %c1 {
// CHECK-NEXT: %[[X:.*]] = memref.load %[[S]][] : memref<f32>
// CHECK-NEXT: memref.store %[[X]], %[[SLOT]][] : memref<f32>
// CHECK: %[[SCALE:.*]] = memref.load %[[SLOT]][] : memref<f32>
// CHECK: scf.for %[[T2:.*]] = %c0 to %c32 step %c1 {
// CHECK: iter_args(%{{.*}} = %[[SCALE]]) -> (f32)
// The thread-0 store, its own segment: each thread tests its own id.
// CHECK: scf.for %[[T3:.*]] = %c0 to %c32 step %c1 {
// CHECK-NEXT: %[[TID3:.*]] = arith.subi %c31, %[[T3]] : index
// CHECK-NEXT: %[[FIRST:.*]] = arith.cmpi eq, %[[TID3]], %c0 : index
// CHECK-NEXT: scf.if %[[FIRST]] {
