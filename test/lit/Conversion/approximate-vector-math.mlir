// miras-approximate-vector-math: exp, log, tanh and erf on vectors become
// polynomials (arith and vector ops); on scalars they stay math ops (libm).
// RUN: miras-opt %s --miras-approximate-vector-math | FileCheck %s

// CHECK-LABEL: func.func @vectors(
// CHECK-NOT: math.exp
// CHECK-NOT: math.log
// CHECK-NOT: math.tanh
// CHECK-NOT: math.erf
// CHECK: arith.mulf {{.*}} : vector<16xf32>
// CHECK: return
func.func @vectors(%x: vector<16xf32>) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
  %e = math.exp %x : vector<16xf32>
  %l = math.log %x : vector<16xf32>
  %t = math.tanh %x : vector<16xf32>
  %f = math.erf %x : vector<16xf32>
  return %e, %l, %t, %f : vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
}

// CHECK-LABEL: func.func @scalars(
// CHECK: math.exp %{{.*}} : f32
// CHECK: math.erf %{{.*}} : f32
func.func @scalars(%x: f32) -> (f32, f32) {
  %e = math.exp %x : f32
  %f = math.erf %x : f32
  return %e, %f : f32, f32
}

// Functions without an approximation here are left alone, vector or not.
// CHECK-LABEL: func.func @others(
// CHECK: math.sqrt %{{.*}} : vector<16xf32>
func.func @others(%x: vector<16xf32>) -> vector<16xf32> {
  %s = math.sqrt %x : vector<16xf32>
  return %s : vector<16xf32>
}
