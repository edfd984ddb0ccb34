// miras-linalg-to-llvm vectorises (miras-vectorize) and lowers every vector
// op to the LLVM dialect; vector-width=0 keeps the scalar loops.
// RUN: miras-opt %s --miras-linalg-to-llvm | FileCheck %s
// RUN: miras-opt %s --miras-linalg-to-llvm=vector-width=0 | FileCheck %s --check-prefix=SCALAR

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>

// CHECK-LABEL: llvm.func @matvec_erf(
// CHECK: llvm.load {{.*}} -> vector<64xf32>
// CHECK: "llvm.intr.vector.reduce.fadd"({{.*}}) <{fastmathFlags = #llvm.fastmath<contract, reassoc>}> : (f32, vector<64xf32>) -> f32
// erf on a vector is a polynomial (miras-approximate-vector-math), not a libm
// call per lane.
// CHECK-NOT: llvm.call @erff
// CHECK: llvm.intr.fma({{.*}}) : (vector<64xf32>, vector<64xf32>, vector<64xf32>) -> vector<64xf32>
// CHECK: llvm.store {{.*}} : vector<64xf32>
// CHECK-NOT: {{ vector\.}}
// SCALAR-LABEL: llvm.func @matvec_erf(
// SCALAR-NOT: vector<
func.func @matvec_erf(%W: memref<64x64xf32>, %k: memref<64xf32>, %y: memref<64xf32>, %e: memref<128xf32>, %z: memref<128xf32>) {
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%W, %k : memref<64x64xf32>, memref<64xf32>) outs(%y : memref<64xf32>) {
  ^bb0(%w: f32, %x: f32, %acc: f32):
    %m = arith.mulf %w, %x fastmath<reassoc,contract> : f32
    %s = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]}
      ins(%e : memref<128xf32>) outs(%z : memref<128xf32>) {
  ^bb0(%a: f32, %o: f32):
    %t = math.erf %a : f32
    linalg.yield %t : f32
  }
  return
}
