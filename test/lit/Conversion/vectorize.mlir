// miras-vectorize: linalg.generic on memrefs -> vector tiles of the contiguous
// (innermost) dimension; generics that do not qualify are left alone.
// RUN: miras-opt %s --miras-vectorize --split-input-file | FileCheck %s
// RUN: miras-opt %s --miras-vectorize=vector-width=8 --split-input-file | FileCheck %s --check-prefix=AVX2
// RUN: miras-opt %s --miras-vectorize=vector-width=0 --split-input-file | FileCheck %s --check-prefix=OFF

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>

// Matvec along the contiguous axis: one vector<64xf32> (4 x 16 lanes) per
// row, one horizontal reduction per row with the old y as its accumulator.
// CHECK-LABEL: func.func @matvec(
// CHECK-SAME: %[[W:.*]]: memref<64x64xf32>, %[[K:.*]]: memref<64xf32>, %[[Y:.*]]: memref<64xf32>)
// CHECK: %[[KV:.*]] = vector.transfer_read %[[K]][%{{.*}}], %{{.*}} {in_bounds = [true]} : memref<64xf32>, vector<64xf32>
// CHECK: scf.for %[[I:.*]] =
// CHECK: %[[Y0:.*]] = memref.load %[[Y]][%[[I]]]
// CHECK: %[[WV:.*]] = vector.transfer_read %[[W]][%[[I]], %{{.*}}], %{{.*}} {in_bounds = [true]} : memref<64x64xf32>, vector<64xf32>
// CHECK: %[[P:.*]] = arith.mulf %[[WV]], %[[KV]] fastmath<reassoc,contract> : vector<64xf32>
// CHECK: %[[R:.*]] = vector.reduction <add>, %{{.*}}, %[[Y0]] fastmath<reassoc,contract> : vector<64xf32> into f32
// CHECK: memref.store %[[R]], %[[Y]][%[[I]]]
// CHECK-NOT: linalg.generic
// AVX2-LABEL: func.func @matvec(
// AVX2: vector<32xf32>
// AVX2: scf.for
// AVX2: vector.reduction <add>, %{{.*}} : vector<32xf32> into f32
// OFF-LABEL: func.func @matvec(
// OFF: linalg.generic
// OFF-NOT: vector.
func.func @matvec(%W: memref<64x64xf32>, %k: memref<64xf32>, %y: memref<64xf32>) {
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%W, %k : memref<64x64xf32>, memref<64xf32>) outs(%y : memref<64xf32>) {
  ^bb0(%w: f32, %x: f32, %acc: f32):
    %m = arith.mulf %w, %x fastmath<reassoc,contract> : f32
    %s = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %s : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>

// The in-place rank-1 update W = a W - u k^T: rows of scalars broadcast,
// k read once before the row loop, each row written back as one tile.
// CHECK-LABEL: func.func @update(
// CHECK-SAME: %[[W:.*]]: memref<64x64xf32, strided<[64, 1], offset: ?>>, %[[U:.*]]: memref<64xf32>, %[[K:.*]]: memref<64xf32>, %[[A:.*]]: f32)
// CHECK: %[[KV:.*]] = vector.transfer_read %[[K]]
// CHECK: scf.for %[[I:.*]] =
// CHECK-DAG: %[[WV:.*]] = vector.transfer_read %[[W]][%[[I]], %{{.*}}]{{.*}} vector<64xf32>
// CHECK-DAG: %[[UI:.*]] = memref.load %[[U]][%[[I]]]
// CHECK-DAG: %[[AB:.*]] = vector.broadcast %[[A]] : f32 to vector<64xf32>
// CHECK-DAG: %[[UB:.*]] = vector.broadcast %[[UI]] : f32 to vector<64xf32>
// CHECK: arith.mulf %[[UB]], %[[KV]] : vector<64xf32>
// CHECK: arith.subf
// CHECK: vector.transfer_write %{{.*}}, %[[W]][%[[I]], %{{.*}}] {in_bounds = [true]} : vector<64xf32>
func.func @update(%W: memref<64x64xf32, strided<[64, 1], offset: ?>>, %u: memref<64xf32>, %k: memref<64xf32>, %a: f32) {
  linalg.generic {indexing_maps = [#mat, #row, #col, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%W, %u, %k : memref<64x64xf32, strided<[64, 1], offset: ?>>, memref<64xf32>, memref<64xf32>)
      outs(%W : memref<64x64xf32, strided<[64, 1], offset: ?>>) {
  ^bb0(%w: f32, %ui: f32, %kj: f32, %o: f32):
    %aw = arith.mulf %a, %w : f32
    %uk = arith.mulf %ui, %kj : f32
    %d = arith.subf %aw, %uk : f32
    linalg.yield %d : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>

// y[j] += W[i, j] x[i] (reduction over the outer dim): 256 columns in four
// tiles of 64, the rows summed in order with the tile carried in registers.
// CHECK-LABEL: func.func @matvec_t(
// CHECK: scf.for %[[J:.*]] = %{{.*}} to %{{.*}} step %c64
// CHECK: %[[Y0:.*]] = vector.transfer_read %{{.*}}[%[[J]]]{{.*}} vector<64xf32>
// CHECK: %[[S:.*]] = scf.for %[[I:.*]] = {{.*}} iter_args(%[[ACC:.*]] = %[[Y0]]) -> (vector<64xf32>)
// CHECK: memref.load %{{.*}}[%[[I]]]
// CHECK: arith.addf %[[ACC]], %{{.*}} fastmath<reassoc,contract> : vector<64xf32>
// CHECK: vector.transfer_write %[[S]], %{{.*}}[%[[J]]]
func.func @matvec_t(%W: memref<64x256xf32>, %x: memref<64xf32>, %y: memref<256xf32>) {
  linalg.generic {indexing_maps = [#mat, #row, #col], iterator_types = ["reduction", "parallel"]}
      ins(%W, %x : memref<64x256xf32>, memref<64xf32>) outs(%y : memref<256xf32>) {
  ^bb0(%w: f32, %xi: f32, %acc: f32):
    %m = arith.mulf %w, %xi fastmath<reassoc,contract> : f32
    %s = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %s : f32
  }
  return
}

// -----

#id = affine_map<(d0) -> (d0)>

// 20 elements: one full tile of 16 and a masked tail of 4 (of 16 lanes).
// CHECK-LABEL: func.func @tail(
// CHECK: vector.transfer_read %{{.*}}[%c0]{{.*}} vector<16xf32>
// CHECK: math.exp %{{.*}} : vector<16xf32>
// CHECK: vector.transfer_write %{{.*}}[%c0] {in_bounds = [true]} : vector<16xf32>
// CHECK: %[[M:.*]] = vector.constant_mask [4] : vector<16xi1>
// CHECK: vector.transfer_read %{{.*}}[%c16], %{{.*}}, %[[M]] {in_bounds = [true]}
// CHECK: vector.transfer_write %{{.*}}[%c16], %[[M]] {in_bounds = [true]}
func.func @tail(%x: memref<20xf32>, %y: memref<20xf32>) {
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%x : memref<20xf32>) outs(%y : memref<20xf32>) {
  ^bb0(%a: f32, %o: f32):
    %e = math.exp %a : f32
    linalg.yield %e : f32
  }
  return
}

// -----

#id = affine_map<(d0) -> (d0)>
#scalar = affine_map<(d0) -> ()>

// A sum without fastmath<reassoc> would change its order: left alone.
// CHECK-LABEL: func.func @ordered_sum(
// CHECK: linalg.generic
// CHECK-NOT: vector.
func.func @ordered_sum(%x: memref<64xf32>, %s: memref<f32>) {
  linalg.generic {indexing_maps = [#id, #scalar], iterator_types = ["reduction"]}
      ins(%x : memref<64xf32>) outs(%s : memref<f32>) {
  ^bb0(%a: f32, %acc: f32):
    %r = arith.addf %acc, %a : f32
    linalg.yield %r : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#all = affine_map<(d0, d1) -> ()>

// sum(A * B) over a matrix (a decay gate's adjoint): one vector accumulator
// carried across the rows and the tiles, one horizontal reduction at the end
// with the old sum as its accumulator.
// CHECK-LABEL: func.func @matrix_sum(
// CHECK: %[[S0:.*]] = memref.load %{{.*}}[] : memref<f32>
// CHECK: %[[ACC:.*]] = scf.for %{{.*}} = %c0 to %c64 step %c1 iter_args(%[[A:.*]] = %{{.*}}) -> (vector<64xf32>)
// CHECK-NOT: vector.reduction
// CHECK: arith.addf %[[A]], %{{.*}} fastmath<reassoc,contract> : vector<64xf32>
// CHECK: scf.yield
// CHECK: %[[R:.*]] = vector.reduction <add>, %[[ACC]], %[[S0]] fastmath<reassoc,contract> : vector<64xf32> into f32
// CHECK: memref.store %[[R]], %{{.*}}[] : memref<f32>
func.func @matrix_sum(%a: memref<64x64xf32>, %b: memref<64x64xf32>, %s: memref<f32>) {
  linalg.generic {indexing_maps = [#mat, #mat, #all], iterator_types = ["reduction", "reduction"]}
      ins(%a, %b : memref<64x64xf32>, memref<64x64xf32>) outs(%s : memref<f32>) {
  ^bb0(%x: f32, %y: f32, %acc: f32):
    %m = arith.mulf %x, %y fastmath<reassoc,contract> : f32
    %r = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %r : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#all = affine_map<(d0, d1) -> ()>

// Rows of 20 (a tile of 16 and a masked tail): one horizontal reduction per
// row, as for a matvec.
// CHECK-LABEL: func.func @matrix_sum_tail(
// CHECK: scf.for %{{.*}} = %c0 to %c8 step %c1 {
// CHECK: vector.reduction <add>, %{{.*}} : vector<16xf32> into f32
// CHECK: vector.reduction <add>, %{{.*}} : vector<16xf32> into f32
func.func @matrix_sum_tail(%a: memref<8x20xf32>, %s: memref<f32>) {
  linalg.generic {indexing_maps = [#mat, #all], iterator_types = ["reduction", "reduction"]}
      ins(%a : memref<8x20xf32>) outs(%s : memref<f32>) {
  ^bb0(%x: f32, %acc: f32):
    %r = arith.addf %acc, %x fastmath<reassoc,contract> : f32
    linalg.yield %r : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#tr = affine_map<(d0, d1) -> (d1, d0)>

// The innermost loop walks a column of %x (stride 64): left alone, as are
// i1 buffers (bits in vectors, bytes in memory) and dimensions under 4.
// CHECK-LABEL: func.func @rejected(
// CHECK-COUNT-3: linalg.generic
// CHECK-NOT: vector.
func.func @rejected(%x: memref<64x64xf32>, %y: memref<64x64xf32>, %m: memref<64x64xi1>, %z: memref<64x3xf32>) {
  linalg.generic {indexing_maps = [#tr, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%x : memref<64x64xf32>) outs(%y : memref<64x64xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  }
  linalg.generic {indexing_maps = [#mat, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%x : memref<64x64xf32>) outs(%m : memref<64x64xi1>) {
  ^bb0(%a: f32, %o: i1):
    %c = arith.cmpf ogt, %a, %a : f32
    linalg.yield %c : i1
  }
  linalg.generic {indexing_maps = [#mat, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%z : memref<64x3xf32>) outs(%z : memref<64x3xf32>) {
  ^bb0(%a: f32, %o: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>
#id = affine_map<(d0) -> (d0)>

// fuse-rows: y = W k, u = y - v, W -= u k^T, o = W q as one loop over blocks
// of 16 rows (one pass over W); each matrix op is an inner loop over the
// block, the [64] subtraction one vector<16> per block. The fills touch
// nothing the loop has touched before them: they stay before it.
// RUN: miras-opt %s --miras-vectorize=fuse-rows=1 --split-input-file | FileCheck %s --check-prefix=FUSED
// FUSED-LABEL: func.func @step(
// FUSED-SAME: %[[W:[^:]*]]: memref<64x64xf32>
// FUSED: linalg.fill
// FUSED: linalg.fill
// FUSED: scf.for %[[B:.*]] = %{{.*}} to %{{.*}} step %c16
// FUSED: scf.for %[[I:.*]] = %[[B]] to
// FUSED: vector.reduction <add>
// FUSED: vector.transfer_read %{{.*}}[%[[B]]]{{.*}} vector<16xf32>
// FUSED: arith.subf %{{.*}} : vector<16xf32>
// FUSED: scf.for %[[I:.*]] = %[[B]] to
// FUSED: vector.transfer_write %{{.*}}, %[[W]][%[[I]], %{{.*}}]
// FUSED: scf.for %[[I:.*]] = %[[B]] to
// FUSED: vector.reduction <add>
// FUSED-NOT: linalg.
// Without the option: one loop per op (the [64] subtraction is one tile).
// CHECK-LABEL: func.func @step(
// CHECK: linalg.fill
// CHECK-COUNT-3: scf.for %{{.*}} = %c0{{.*}} to %c64{{.*}} step %c1
func.func @step(%W: memref<64x64xf32>, %k: memref<64xf32>, %v: memref<64xf32>, %q: memref<64xf32>,
                %y: memref<64xf32>, %u: memref<64xf32>, %o: memref<64xf32>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%y : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%W, %k : memref<64x64xf32>, memref<64xf32>) outs(%y : memref<64xf32>) {
  ^bb0(%w: f32, %x: f32, %acc: f32):
    %m = arith.mulf %w, %x fastmath<reassoc,contract> : f32
    %s = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = [#id, #id, #id], iterator_types = ["parallel"]}
      ins(%y, %v : memref<64xf32>, memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %b: f32, %r: f32):
    %d = arith.subf %a, %b : f32
    linalg.yield %d : f32
  }
  linalg.generic {indexing_maps = [#mat, #row, #col, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%W, %u, %k : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) outs(%W : memref<64x64xf32>) {
  ^bb0(%w: f32, %ui: f32, %kj: f32, %r: f32):
    %uk = arith.mulf %ui, %kj : f32
    %n = arith.subf %w, %uk : f32
    linalg.yield %n : f32
  }
  linalg.fill ins(%zero : f32) outs(%o : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%W, %q : memref<64x64xf32>, memref<64xf32>) outs(%o : memref<64xf32>) {
  ^bb0(%w: f32, %x: f32, %acc: f32):
    %m = arith.mulf %w, %x fastmath<reassoc,contract> : f32
    %s = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %s : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>
#id = affine_map<(d0) -> (d0)>

// fuse-rows, the reverse step's shapes: u = G k (rows), dq[j] += W[i, j] u[i]
// (columns accumulated over the rows), s = sum(W * G), G -= u k^T in place:
// one loop. dq's columns are carried in registers across each block (one
// read and one write per block); the sum's vector accumulator across the
// whole loop, one horizontal reduction after it. dk = -dq reads the columns
// and the load reads the sum: both move after the loop, in their order.
// FUSED-LABEL: func.func @reverse(
// FUSED-SAME: %[[W:[^:]*]]: memref<64x64xf32>, %[[G:[^:]*]]: memref<64x64xf32>, %{{[^:]*}}: memref<64xf32>, %[[U:[^:]*]]: memref<64xf32>, %[[DQ:[^:]*]]: memref<64xf32>, %[[DK:[^:]*]]: memref<64xf32>, %[[S:[^:]*]]: memref<f32>
// FUSED-COUNT-3: linalg.fill
// FUSED: %[[SUM:.*]] = scf.for %[[B:.*]] = %{{.*}} to %{{.*}} step %c16 iter_args(%[[ACC:.*]] = %{{.*}}) -> (vector<64xf32>)
// FUSED: scf.for %[[I:.*]] = %[[B]] to
// FUSED: memref.store %{{.*}}, %[[U]][%[[I]]]
// FUSED: %[[DQ0:.*]] = vector.transfer_read %[[DQ]][%c0
// FUSED: %[[DQ1:.*]] = scf.for %[[I:.*]] = %[[B]] to {{.*}} iter_args(%{{.*}} = %[[DQ0]])
// FUSED: vector.transfer_write %[[DQ1]], %[[DQ]][%c0
// FUSED-NOT: vector.reduction
// FUSED: %[[SV:.*]] = scf.for %[[I:.*]] = %[[B]] to {{.*}} iter_args(%{{.*}} = %[[ACC]])
// FUSED-NOT: vector.reduction
// FUSED: scf.for %[[I:.*]] = %[[B]] to
// FUSED: vector.transfer_write %{{.*}}, %[[G]][%[[I]], %{{.*}} : vector<64xf32>, memref<64x64xf32>{{$}}
// FUSED-NEXT: }
// FUSED-NEXT: scf.yield %[[SV]]
// FUSED-NEXT: }
// FUSED-NEXT: %[[S0:.*]] = memref.load %[[S]][]
// FUSED-NEXT: vector.reduction <add>, %[[SUM]], %[[S0]]
// FUSED-NEXT: memref.store %{{.*}}, %[[S]][]
// FUSED: %[[DQV:.*]] = vector.transfer_read %[[DQ]]
// FUSED: arith.negf %[[DQV]]
// FUSED: memref.load %[[S]][]
// FUSED-NEXT: memref.store
// FUSED-NOT: linalg.generic
// CHECK-LABEL: func.func @reverse(
func.func @reverse(%W: memref<64x64xf32>, %G: memref<64x64xf32>, %k: memref<64xf32>, %u: memref<64xf32>,
                   %dq: memref<64xf32>, %dk: memref<64xf32>, %s: memref<f32>, %out: memref<f32>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%u : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%G, %k : memref<64x64xf32>, memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%g: f32, %x: f32, %acc: f32):
    %m = arith.mulf %g, %x fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  linalg.fill ins(%zero : f32) outs(%dq : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #row, #col], iterator_types = ["reduction", "parallel"]}
      ins(%W, %u : memref<64x64xf32>, memref<64xf32>) outs(%dq : memref<64xf32>) {
  ^bb0(%w: f32, %ui: f32, %acc: f32):
    %m = arith.mulf %w, %ui fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%dq : memref<64xf32>) outs(%dk : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.fill ins(%zero : f32) outs(%s : memref<f32>)
  linalg.generic {indexing_maps = [#mat, #mat, affine_map<(d0, d1) -> ()>], iterator_types = ["reduction", "reduction"]}
      ins(%W, %G : memref<64x64xf32>, memref<64x64xf32>) outs(%s : memref<f32>) {
  ^bb0(%w: f32, %g: f32, %acc: f32):
    %m = arith.mulf %w, %g fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  %sum = memref.load %s[] : memref<f32>
  memref.store %sum, %out[] : memref<f32>
  linalg.generic {indexing_maps = [#mat, #row, #col, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%G, %u, %k : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) outs(%G : memref<64x64xf32>) {
  ^bb0(%g: f32, %ui: f32, %kj: f32, %r: f32):
    %uk = arith.mulf %ui, %kj : f32
    %n = arith.subf %g, %uk : f32
    linalg.yield %n : f32
  }
  return
}

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>
#id = affine_map<(d0) -> (d0)>

// fuse-rows: z = G u reads u by columns, which u = G k writes by rows: z
// cannot join u's loop, nor can the update of G that z reads (it would write
// G before z read it). u = G k alone is not worth a loop and stays as it is;
// the scan starts again at z, which the update joins (row i of z reads row i
// of G before the update writes it).
// FUSED-LABEL: func.func @column_read(
// FUSED-SAME: %[[G:[^:]*]]: memref<64x64xf32>
// FUSED: scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c1
// FUSED: vector.reduction <add>
// FUSED: linalg.fill
// FUSED: scf.for %[[B:.*]] = %{{.*}} to %{{.*}} step %c16
// FUSED: scf.for %[[I:.*]] = %[[B]] to
// FUSED: vector.reduction <add>
// FUSED: scf.for %[[I:.*]] = %[[B]] to
// FUSED: vector.transfer_write %{{.*}}, %[[G]][%[[I]], %{{.*}}]
// CHECK-LABEL: func.func @column_read(
func.func @column_read(%G: memref<64x64xf32>, %k: memref<64xf32>, %u: memref<64xf32>, %z: memref<64xf32>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%u : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%G, %k : memref<64x64xf32>, memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%g: f32, %x: f32, %acc: f32):
    %m = arith.mulf %g, %x fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  linalg.fill ins(%zero : f32) outs(%z : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%G, %u : memref<64x64xf32>, memref<64xf32>) outs(%z : memref<64xf32>) {
  ^bb0(%g: f32, %x: f32, %acc: f32):
    %m = arith.mulf %g, %x fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  linalg.generic {indexing_maps = [#mat, #row, #col, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%G, %u, %k : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) outs(%G : memref<64x64xf32>) {
  ^bb0(%g: f32, %ui: f32, %kj: f32, %r: f32):
    %uk = arith.mulf %ui, %kj : f32
    %n = arith.subf %g, %uk : f32
    linalg.yield %n : f32
  }
  return
}
