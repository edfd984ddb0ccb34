// miras.row_block on a kernel function: miras-vectorize fuses its rows without
// the fuse-rows option (the backward kernel carries it, miras-lower-backward-
// kernel fuse-rows). 0: the block chosen per loop (chooseRowBlock): one row at
// a time, however wide the columns the group accumulates; a group with more
// than 8 1-D ops is left as it is.
// RUN: miras-opt %s --miras-vectorize --split-input-file | FileCheck %s

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>
#id = affine_map<(d0) -> (d0)>


// Chosen: u = G k per row, dq += W^T u carried across the rows, G -= u k^T,
// one loop over single rows; dq written once after it.
// CHECK-LABEL: func.func @chosen(
// CHECK-SAME: %[[W:[^:]*]]: memref<64x64xf32>, %[[G:[^:]*]]: memref<64x64xf32>
// CHECK: scf.for %[[R:.*]] = %{{.*}} to %c64 step %c1 {
// CHECK: scf.for %[[I:.*]] = %[[R]] to
// CHECK: vector.reduction <add>
// CHECK: scf.for %[[J:.*]] = %[[R]] to {{.*}} iter_args(
// CHECK: vector.transfer_read %[[W]][%[[J]],
// CHECK: scf.for %[[K:.*]] = %[[R]] to
// CHECK: vector.transfer_write %{{.*}}, %[[G]][%[[K]],
// CHECK-NOT: linalg.generic
// CHECK: return
func.func @chosen(%W: memref<64x64xf32>, %G: memref<64x64xf32>, %k: memref<64xf32>, %u: memref<64xf32>, %dq: memref<64xf32>) attributes {miras.row_block = 0 : i64} {
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


// Given: blocks of 4 rows.
// CHECK-LABEL: func.func @given(
// CHECK: scf.for %{{.*}} = %{{.*}} to %c64 step %c4 {
// CHECK-NOT: linalg.generic
// CHECK: return
func.func @given(%W: memref<64x64xf32>, %G: memref<64x64xf32>, %k: memref<64xf32>, %u: memref<64xf32>, %dq: memref<64xf32>) attributes {miras.row_block = 4 : i64} {
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


// Unmarked, without the option: one loop per op.
// CHECK-LABEL: func.func @unmarked(
// CHECK-COUNT-3: scf.for %{{.*}} = %c0{{.*}} to %c64{{.*}} step %c1
// CHECK-NOT: scf.for
// CHECK: return
func.func @unmarked(%W: memref<64x64xf32>, %G: memref<64x64xf32>, %k: memref<64xf32>, %u: memref<64xf32>, %dq: memref<64xf32>) {
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


// Nine 1-D ops over the rows between u = G k and its readers: that group is
// left as it is (the 1-D ops stay whole vectors), and the scan goes on with
// dq += W^T u and G -= u k^T, fused.
// CHECK-LABEL: func.func @many_row_ops(
// CHECK-SAME: %[[W:[^:]*]]: memref<64x64xf32>, %[[G:[^:]*]]: memref<64x64xf32>
// CHECK: scf.for %{{.*}} = %c0{{.*}} to %c64 step %c1 {
// CHECK-COUNT-9: arith.negf %{{.*}} : vector<64xf32>
// CHECK: scf.for %[[R:.*]] = %{{.*}} to %c64{{.*}} step %c1{{.*}} {
// CHECK: scf.for %[[J:.*]] = %[[R]] to {{.*}} iter_args(
// CHECK: vector.transfer_read %[[W]][%[[J]],
// CHECK: scf.for %[[K:.*]] = %[[R]] to
// CHECK: vector.transfer_write %{{.*}}, %[[G]][%[[K]],
// CHECK-NOT: linalg.generic
// CHECK: return
func.func @many_row_ops(%W: memref<64x64xf32>, %G: memref<64x64xf32>, %k: memref<64xf32>, %u: memref<64xf32>, %dq: memref<64xf32>) attributes {miras.row_block = 0 : i64} {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%u : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%G, %k : memref<64x64xf32>, memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%g: f32, %x: f32, %acc: f32):
    %m = arith.mulf %g, %x fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%u : memref<64xf32>) outs(%u : memref<64xf32>) {
  ^bb0(%a: f32, %r: f32):
    %n = arith.negf %a : f32
    linalg.yield %n : f32
  }
  linalg.fill ins(%zero : f32) outs(%dq : memref<64xf32>)
  linalg.generic {indexing_maps = [#mat, #row, #col], iterator_types = ["reduction", "parallel"]}
      ins(%W, %u : memref<64x64xf32>, memref<64xf32>) outs(%dq : memref<64xf32>) {
  ^bb0(%w: f32, %ui: f32, %acc: f32):
    %m = arith.mulf %w, %ui fastmath<reassoc,contract> : f32
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

// -----

#mat = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
#row = affine_map<(d0, d1) -> (d0)>

// Columns of 512 accumulated over the rows (32 registers of 16 lanes): still
// one row at a time (they are read and written per row in L1).
// CHECK-LABEL: func.func @wide(
// CHECK: scf.for %{{.*}} = %{{.*}} to %c16 step %c1 {
// CHECK-NOT: linalg.generic
// CHECK: return
func.func @wide(%W: memref<16x512xf32>, %G: memref<16x512xf32>, %k: memref<512xf32>, %u: memref<16xf32>, %dq: memref<512xf32>) attributes {miras.row_block = 0 : i64} {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%u : memref<16xf32>)
  linalg.generic {indexing_maps = [#mat, #col, #row], iterator_types = ["parallel", "reduction"]}
      ins(%G, %k : memref<16x512xf32>, memref<512xf32>) outs(%u : memref<16xf32>) {
  ^bb0(%g: f32, %x: f32, %acc: f32):
    %m = arith.mulf %g, %x fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  linalg.fill ins(%zero : f32) outs(%dq : memref<512xf32>)
  linalg.generic {indexing_maps = [#mat, #row, #col], iterator_types = ["reduction", "parallel"]}
      ins(%W, %u : memref<16x512xf32>, memref<16xf32>) outs(%dq : memref<512xf32>) {
  ^bb0(%w: f32, %ui: f32, %acc: f32):
    %m = arith.mulf %w, %ui fastmath<reassoc,contract> : f32
    %a = arith.addf %acc, %m fastmath<reassoc,contract> : f32
    linalg.yield %a : f32
  }
  linalg.generic {indexing_maps = [#mat, #row, #col, #mat], iterator_types = ["parallel", "parallel"]}
      ins(%G, %u, %k : memref<16x512xf32>, memref<16xf32>, memref<512xf32>) outs(%G : memref<16x512xf32>) {
  ^bb0(%g: f32, %ui: f32, %kj: f32, %r: f32):
    %uk = arith.mulf %ui, %kj : f32
    %n = arith.subf %g, %uk : f32
    linalg.yield %n : f32
  }
  return
}
