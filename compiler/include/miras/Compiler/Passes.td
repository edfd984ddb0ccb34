//===- Passes.td - miras lowering passes --------------------*- tablegen -*-===//
#ifndef MIRAS_COMPILER_PASSES_TD
#define MIRAS_COMPILER_PASSES_TD

include "mlir/Pass/PassBase.td"

def MirasLowerToLinalg : Pass<"miras-lower-to-linalg", "::mlir::ModuleOp"> {
  let summary = "Lowers each derived miras.module to a fused sequential kernel";
  let description = [{
    Replaces every `miras.module` (after `miras-derive-update`) by
    `func.func @<name>_kernel`, which runs the step function over a whole
    `[B, T, H, D]` sequence: `scf.for` over batch and head, then over time,
    with the state slice of that (batch, head) updated in place.

    The step body becomes `linalg.generic` ops on memrefs. Vectors are
    materialised into small buffers allocated once at kernel entry; matrix
    values (the decayed state, the rank-1 gradient `psi k^T`, their sum) are
    never materialised: they are fused element by element into the single
    generic that writes the new state in place, or into the matvec that reads
    them. One pass over time keeps the state hot in cache.

    With chunk C > 1 and `algorithm=chunked` (or `auto`) the kernel walks
    each sequence chunk by chunk (ChunkedForm.cpp). Gradients read the
    chunk's anchor, so everything that reads no state is computed for the
    whole chunk first: token loops store per-token values into [C, ...]
    buffers, and products with the anchor (or a function of it) become
    matrix products over the chunk's tokens. Then:
      * dual form ("chunked"): when every state is updated as
        `W' = s W -/+ u w^T` (scalar or Dk-column decay; or momentum,
        `W' = s W + S'`) and read only through `W x`, every read is
        `diag(g) X W0^T -/+ (R .* X Wk^T) U` and the state at the chunk's end
        is `g W0 -/+ U^T diag(r) Wk` (R, g, r: in-chunk decay products),
        with the per-token ops between reads (an MLP's activation) in token
        loops of their own;
      * scan form ("chunked-scan"), otherwise (mirror maps, Dv-row gates):
        the state-reading part runs token by token on the current state.
    Both give the sequential algorithm's numbers for the same C.

    ```mlir
    func.func @deltanet_kernel(%begin: index, %end: index, %q: memref<?x?x?x16xf32>, %k: memref<?x?x?x16xf32>,
        %v: memref<?x?x?x16xf32>, %eta: memref<?x?x?xf32>,
        %W: memref<?x?x16x16xf32>, %o: memref<?x?x?x16xf32>)
        attributes {llvm.emit_c_interface} {
      scf.for %pair = %begin to %end step %c1 {   // flattened (batch, head)
        %b = arith.divui %pair, %H : index
        %h = arith.remui %pair, %H : index
          %Wbh = memref.subview %W[%b, %h, 0, 0] [1, 1, 16, 16] [1, 1, 1, 1] : ...
          scf.for %t = %c0 to %T step %c1 {
            linalg.generic ... // y = W k, fused with the residual where possible
            linalg.generic ... ins(%Wbh, %u, %kt) outs(%Wbh)  // W -= u k^T
            linalg.generic ... // o = W q
          }
      }
      return
    }
    ```
  }];
  let options = [
    Option<"algorithm", "algorithm", "std::string", /*default=*/"\"auto\"",
           "Kernel algorithm for chunk C > 1 (SPEC section 7): 'sequential' "
           "(token by token, gradients at the chunk's anchor), 'chunked' (per "
           "chunk, the dual form or the scan form; an error with chunk 1 or "
           "above 1024), or 'auto' (chunked where it "
           "applies and, for the dual form, a state has at least 128 x 128 "
           "entries; else sequential)">
  ];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::func::FuncDialect"];
}

def MirasLowerBackwardKernel
    : Pass<"miras-lower-backward-kernel", "::mlir::ModuleOp"> {
  let summary = "Builds the sequence-level backward kernel of each miras.module";
  let description = [{
    For every derived `miras.module` with a reverse step (`@step_backward`,
    from `miras-derive-backward`), adds `func.func @<name>_backward_kernel`
    before the module and erases the reverse step; `miras-lower-to-linalg`
    then builds the forward kernel as before. Arguments (BackwardKernelLayout
    in StepSignature.h): the pair range, q, k, v, the gates, `do`, the state
    adjoints (in: of the final states; out: of the initial states), dq, dk,
    dv, the gate adjoints, then per state `[P, ceil(T/S), shape]` checkpoints
    (slot 0 of each of the range's P pairs: its initial state) and an
    `[S, shape]` segment workspace.

    Per (batch, head) pair it runs the forward from the initial state keeping
    the state before every segment of `segment` = S tokens, then walks the
    segments from the last: restores the segment's checkpoint, recomputes its
    states into the workspace and applies the reverse step token by token
    backwards, each new state adjoint written over the running one where
    that is safe (`planAdjointWrites`), else into a second buffer that
    alternates with it token by token. Each body is lowered with the forward kernel's op lowering; a
    recomputing step skips what only `o` needs.

    With chunk C > 1 this is the reverse of the sequential algorithm with
    anchors (SPEC section 7; the chunked forms give its numbers): `segment`
    must be a multiple of C, so a chunk's anchor is one of its segment's
    recomputed states; the anchors' adjoints are summed over the chunk and
    added to the running state adjoint at the chunk's first token.

    ```mlir
    func.func @deltanet_backward_kernel(%begin: index, %end: index,
        %q: memref<?x?x?x16xf32>, %k: ..., %v: ..., %eta: memref<?x?x?xf32>,
        %do: memref<?x?x?x16xf32>, %dW: memref<?x?x16x16xf32>,
        %dq: ..., %dk: ..., %dv: ..., %deta: memref<?x?x?xf32>,
        %Wckpt: memref<?x?x16x16xf32>, %Wseg: memref<?x16x16xf32>)
        attributes {llvm.emit_c_interface, miras.backward_segment = 64 : i64} {
      scf.for %pair = %begin to %end step %c1 {
        memref.copy %ckpt0, %slot0            // the initial state
        scf.for %c = %c1 to %segments step %c1 {
          scf.for %t = ... { linalg.generic ... outs(%slot0) }  // W -= u k^T
          memref.copy %slot0, %ckpt_c
        }
        scf.for %r = %c0 to %segments step %c1 {   // segment c = last - r
          memref.copy %ckpt_c, %slot0
          scf.for %j = %c1 to %count step %c1 { ... }   // slot j = step(slot j-1)
          scf.for %r2 = %c0 to %count step %c1 {         // token start + j
            linalg.generic ...   // dq, dk, dv, deta of token t
            linalg.generic ... outs(%dWbh)  // dW = dW' - ... (in place)
          }
        }
      }
      return
    }
    ```
  }];
  let options = [
    Option<"segment", "segment", "int64_t", /*default=*/"64",
           "Tokens per recomputed segment S (a multiple of the chunk): "
           "memory ceil(T/S) + S states per pair">,
    Option<"adjointsInPlace", "adjoints-in-place", "bool", /*default=*/"true",
           "Write each new state adjoint over the old one where that is "
           "safe; false: every state's into a second buffer, token by token "
           "(the fallback's path, for tests and debugging)">,
    Option<"fuseRows", "fuse-rows", "bool", /*default=*/"true",
           "Mark the reverse sweep (miras.row_block = 0) for miras-vectorize "
           "to fuse the row-local ops over each matrix's rows, the block "
           "chosen per loop; false: leave its loops as they are">
  ];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::func::FuncDialect"];
}

def MirasVectorize : Pass<"miras-vectorize", "::mlir::func::FuncOp"> {
  let summary = "Vectorises the kernel's linalg.generic ops along their contiguous dimension";
  let description = [{
    Rewrites each `linalg.generic` on memrefs (static loop ranges, one output)
    whose innermost loop dimension indexes the unit-stride last dimension of
    every operand using it into `scf.for` loops over vector tiles of that
    dimension: `vector.transfer_read`/`transfer_write` for operands indexed by
    it, scalar loads broadcast for the others, and the body's elementwise ops
    applied to vectors. A tile is `vector-width` lanes (16 f32 = 512 bits for
    AVX-512, 8 for AVX2, 4 portable) times an unroll of up to `max-unroll`
    registers; a remainder gets one narrower, masked tile.

    * Innermost dimension parallel: outer dims become scalar loops; any
      reduction dims loop inside the tile with the output tile carried in
      registers (same summation order as the sequential loops).
    * Innermost dimension a reduction (matvec `y[i] += W[i,j] k[j]`, dot
      products): a vector accumulator is carried across the tiles and reduced
      horizontally once per output element with `vector.reduction`; when the
      outer dims reduce too (`sum(A * B)` over a matrix) and the rows are
      whole tiles, one accumulator is carried across them as well. Only when
      the combiner is `arith.addf`/`mulf` with `fastmath<reassoc>`, or
      `maximumf`/`minimumf`; otherwise the generic is left alone.

    Generics that do not qualify (strided innermost access, dynamic shapes,
    non-elementwise body ops, i1 buffers, dimensions shorter than 4) are left
    unchanged for `convert-linalg-to-loops`. `vector-width=0` turns the pass
    off.

    `fuse-rows` (off by default; `mirasc --fuse-rows`) fuses the ops over
    the same rows of a matrix into one loop over blocks of `row-block` rows,
    each op an inner loop over the block (1-D ops one vector per block;
    columns accumulated and sums carried in registers across the block): a
    row is read by every op while it is in L1. Members: matvecs
    (`y[i] += W[i, j] k[j]`), updates of W in place, column accumulations
    over the rows (`dq[j] += W[i, j] u[i]`), sums (`sum(W * G)`), fills and
    1-D generics over [rows]. A group must be row-local: what one op writes
    by rows, the others touch by the same row only; what it accumulates
    across the rows, no other op touches. Between its first and last member,
    an op independent of the group stays before the loop; one that depends
    on it across the rows (`dk = -dq` reads the accumulated columns, a load
    of the sum) moves after the loop, with whatever depends on it. Ops whose
    memory effects are unknown (control flow, loops already fused) end a
    group. Measured on znver4 (one thread, B*H = 16, medians of 3, rounds
    interleaved): forward Titans 115-118 against 126-127 ms, GLA D=64 35-39
    against 40-41, Gated DeltaNet D=64 44-45 against 42-43, TTT-MLP 88-97
    against 80-93; the backward within noise, TTT-MLP's 5-10% slower. Not
    a default.

    The ops inside an op carrying `miras.row_block = N` (kRowBlockAttrName;
    a function, a loop) have their rows fused with or without the option
    (and in its blocks, not the option's): blocks of N rows, or for N = 0
    blocks chosen per group (`chooseRowBlock`): one row at a time, so that
    every member reads the row while it is in registers and the loop loads
    each matrix once per row; a group with more than 8 1-D ops (one scalar
    per row when fused) is left as it is. In a fused loop, a sum over the
    whole matrix (`sum(dW * W)`, columns whole tiles) carries its vector
    accumulator from block to block, with one horizontal reduction after
    the loop. `miras-lower-backward-kernel` marks the backward
    kernel's reverse sweep with 0 (its checkpointing pass and recompute stay
    lowered as the forward kernel is, to compute its states to the bit): its
    reverse step sweeps dW' and W several times per token (one thread, D =
    64, backward from checkpoints: Gated DeltaNet 117-121 -> 98-101 ms,
    Mamba2 101-102 -> 80-83; Titans 2241-2278 -> 1797-1839 ms).

    ```mlir
    // y[i] = sum_j W[i, j] * k[j], W: memref<64x64xf32>, vector-width=16
    linalg.generic {indexing_maps = [(i, j) -> (i, j), (i, j) -> (j), (i, j) -> (i)],
                    iterator_types = ["parallel", "reduction"]}
        ins(%W, %k : ...) outs(%y : memref<64xf32>) {
    ^bb0(%w: f32, %x: f32, %acc: f32):
      %m = arith.mulf %w, %x fastmath<reassoc,contract> : f32
      %s = arith.addf %acc, %m fastmath<reassoc,contract> : f32
      linalg.yield %s : f32
    }
    // becomes
    scf.for %i = %c0 to %c64 step %c1 {
      %w = vector.transfer_read %W[%i, %c0], %pad {in_bounds = [true]} : memref<64x64xf32>, vector<64xf32>
      %x = vector.transfer_read %k[%c0], %pad {in_bounds = [true]} : memref<64xf32>, vector<64xf32>
      %m = arith.mulf %w, %x fastmath<reassoc,contract> : vector<64xf32>
      %s = arith.addf %neg_zero, %m fastmath<reassoc,contract> : vector<64xf32>
      %r = vector.reduction <add>, %s fastmath<reassoc,contract> : vector<64xf32> into f32
      %y0 = memref.load %y[%i] : memref<64xf32>
      %y1 = arith.addf %y0, %r fastmath<reassoc,contract> : f32
      memref.store %y1, %y[%i] : memref<64xf32>
    }
    ```
  }];
  let options = [
    Option<"vectorWidth", "vector-width", "int64_t", /*default=*/"16",
           "Lanes of one vector register (16: AVX-512, 8: AVX2, 4: SSE/NEON; "
           "0: no vectorisation)">,
    Option<"maxUnroll", "max-unroll", "int64_t", /*default=*/"4",
           "Most vector registers per tile along the contiguous dimension">,
    Option<"fuseRows", "fuse-rows", "bool", /*default=*/"false",
           "Fuse the row-local ops over the same rows of a matrix into one "
           "loop over blocks of rows">,
    Option<"rowBlock", "row-block", "int64_t", /*default=*/"16",
           "Rows per block of a fused row loop">,
  ];
  let dependentDialects = ["::mlir::vector::VectorDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def MirasApproximateVectorMath
    : Pass<"miras-approximate-vector-math", "::mlir::func::FuncOp"> {
  let summary = "Rewrites math functions on vectors into polynomial approximations";
  let description = [{
    LLVM has no vector routine for most math intrinsics and lowers
    `llvm.exp` (`log`, `tanh`, `erf`, ...) on a vector into one scalar libm
    call per lane. After `miras-vectorize`, a row softmax (Memora's mirror
    map) or a GELU layer would then cost one call per element. This pass
    rewrites `math.exp`, `expm1`, `log`, `log1p`, `log2`, `tanh` and `erf` on
    vectors into MLIR's polynomial approximations (vector arithmetic only,
    relative error a few ulp), ahead of `convert-math-to-llvm`; scalar ops keep
    their libm calls.

    ```mlir
    %e = math.exp %x : vector<16xf32>
    // becomes a range reduction (x = k ln 2 + r), a polynomial in r and a
    // scaling by 2^k built from the exponent bits: arith and vector ops only.
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect"];
}

def MirasUnstageStates : Pass<"miras-unstage-states", "::mlir::func::FuncOp"> {
  let summary = "Removes a CPU kernel's aligned copies of its state slices (before the SIMT form)";
  let description = [{
    `miras-to-linalg` and `miras-lower-backward-kernel` sweep each state slice
    of a caller's buffer in place when it starts on a cache line (or the call
    is shorter than 8 tokens), and else in an aligned copy (a vector that
    spans two lines splits every load and store). On the GPU the buffers
    start on 256 bytes and `miras-distribute-threads` moves the states to
    block buffers itself, so the first step of the CUDA lowering takes the
    slice again and drops the copy: the ops marked `miras.staged` and the
    alignment test.

    ```mlir
    // Before:
    %ok = arith.andi %misaligned, %long_call : i1
    scf.if %ok { memref.copy %slice, %cast : ... } {miras.staged}
    %buffer = arith.select %ok, %cast, %slice {miras.staged} : memref<64x64xf32, strided<[64, 1], offset: ?>>
    ... token loops on %buffer ...
    scf.if %ok { memref.copy %buffer, %slice : ... } {miras.staged}
    // After: the token loops on %slice, the copy's alloc gone.
    ```
  }];
}

def MirasDistributeThreads : Pass<"miras-distribute-threads", "::mlir::func::FuncOp"> {
  let summary = "Distributes a kernel's parallel loops over the threads of one block (SIMT form)";
  let description = [{
    The first half of the CUDA lowering, kept on ordinary `func.func` code so
    that it also runs on the CPU (mirasc `--simt-on-cpu`) and the GPU mapping
    is checked numerically on machines without a GPU.

    Input: a `<name>_kernel` after `convert-linalg-to-parallel-loops` (one
    `scf.parallel` per linalg op, reductions as `scf.for` inside it). The loop
    over (batch, head) pairs becomes "one block per pair" and everything in it
    runs on `threads` threads:

      * each `scf.parallel` becomes a threads region
        `scf.parallel (%tid) = (0) to (threads) {miras.threads}` whose thread
        walks the flattened iteration space from `%tid` in steps of `threads`
        (consecutive threads take consecutive innermost indices);
      * an op that writes memory outside any parallel loop (a scalar store)
        becomes a threads region in which only thread 0 runs it;
      * loops and ifs around threads regions stay: every thread runs them, on
        block-uniform bounds; pure ops and loads run redundantly on every
        thread;
      * each state slice of the pair that fits in `shared-budget` bytes (with
        the kernel's buffers and the states before it) is copied into a buffer
        of its own at the start (its own threads region) and back at the end,
        so the token loop reads and writes the copy (shared memory on the GPU).

    Threads regions never race (each thread writes the elements it owns), so
    running them one after another, as the CPU does, gives the GPU's result;
    `miras-simt-to-gpu` turns each into the thread's code plus barriers.

    ```mlir
    // before: y[i] = sum_j W[i, j] k[j]
    scf.parallel (%i) = (%c0) to (%c64) step (%c1) {
      scf.for %j = %c0 to %c64 step %c1 { ... memref.store %s, %y[%i] }
    }
    // after (threads = 128)
    scf.parallel (%tid) = (%c0) to (%c128) step (%c1) {
      scf.for %lin = %tid to %c64 step %c128 {
        scf.for %j = %c0 to %c64 step %c1 { ... memref.store %s, %y[%lin] }
      }
    } {miras.threads}
    ```
  }];
  let options = [
    Option<"threads", "threads", "int64_t", /*default=*/"0",
           "Threads per block; 0 picks one from the largest loop (a multiple "
           "of 32 between 32 and 512, about 16 iterations per thread)">,
    Option<"sharedBudget", "shared-budget", "int64_t", /*default=*/"231424",
           "Bytes of shared memory a block may use (226 KiB: sm_90 allows 227 KiB "
           "per block, less the kernel's few static bytes); states are promoted "
           "in order while they fit">,
    Option<"reverseThreads", "reverse-threads", "bool", /*default=*/"false",
           "Number the threads of each region from the last (for --simt-on-cpu: "
           "the CPU then runs them in the opposite order, so a region whose "
           "result depends on the order of its threads fails the tests)">,
  ];
  let dependentDialects = ["::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def MirasSimtToGPU : Pass<"miras-simt-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Turns the SIMT-form kernel into CUDA kernels in a gpu.module";
  let description = [{
    Replaces the kernel built by `miras-distribute-threads` with
    `gpu.module @<name>_cuda` holding two `gpu.func` kernels with the launch
    contract of `miras_cuda_binary` (miras_abi.h): `<name>_f32` and
    `<name>_bf16` (q, k, v and gates in bfloat16, widened on load).

      * Parameters `(i64 B, i64 T, i64 H, memref<?xT> per tensor,
        memref<?xi8> workspace)`; each flat tensor is reinterpreted with its
        `[B, T, H, ...]` or `[B, H, ...]` shape.
      * The pair loop becomes `gpu.block_id x`; each threads region the code
        of thread `gpu.thread_id x`, followed by `gpu.barrier`, and preceded
        by one when a block-uniform load since the last barrier read a buffer
        the region may overwrite.
      * Buffers go to dynamic shared memory in order while they fit in
        `shared-budget` bytes, the rest to the pair's slice of the workspace.

    The gpu.module carries `miras.block_threads`, `miras.shared_bytes` and
    `miras.workspace_bytes` for the launch table.

    ```mlir
    gpu.module @deltanet_cuda {
      gpu.func @deltanet_f32(%B: i64, %T: i64, %H: i64, %q: memref<?xf32>, ...,
                             %ws: memref<?xi8>) kernel
          attributes {known_block_size = array<i32: 128, 1, 1>} {
        %pair = gpu.block_id x
        %tid = gpu.thread_id x
        ...
        gpu.barrier
        gpu.return
      }
    }
    ```
  }];
  let options = [
    Option<"sharedBudget", "shared-budget", "int64_t", /*default=*/"231424",
           "Bytes of dynamic shared memory a block may use">,
    Option<"keepKernel", "keep-kernel", "bool", /*default=*/"false",
           "Keep the SIMT-form func.func next to the gpu.module (for "
           "miras-gpu-lockstep)">,
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def MirasGPULockstep : Pass<"miras-gpu-lockstep", "::mlir::ModuleOp"> {
  let summary = "Runs a CUDA kernel's code on the CPU, threads in turn between barriers";
  let description = [{
    A check of the CUDA lowering on machines without a GPU (mirasc
    `--cuda-on-cpu`). Replaces the body of each `<name>_kernel` kept by
    `miras-simt-to-gpu{keep-kernel}` with the code of `<name>_f32` from the
    gpu.module (then erased): one pair per block as on the GPU, its shared
    memory a stack buffer, its workspace a heap buffer, and its threads run
    in lockstep: the code between two barriers (a "segment") runs for thread
    `threads - 1` down to 0 before the next segment starts.

    That is one schedule a GPU may choose, so correct code gives the same
    numbers; a barrier missing between a write and another thread's read (or
    a read and another thread's later write) changes them. Values a segment
    passes to later code go through a slot each thread writes (the last one's
    value is used): they must be the same on every thread, as in correct
    code. Ops that neither touch memory nor depend on the thread run once,
    outside the segments.
  }];
  let dependentDialects = ["::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif
