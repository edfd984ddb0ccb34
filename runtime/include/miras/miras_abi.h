/*
 * miras_abi.h: the binary interface between a compiled miras module (lib<name>.so)
 * and whoever loads it (the miras runtime, or a host program that links it directly).
 *
 * This header is self-contained C99 and is copied verbatim into every generated
 * <name>.h, so it must not include any other miras header. Bump MIRAS_ABI_VERSION on
 * any change to the structs or entry-point signatures below.
 *
 * Tensor layout (SPEC.md section 8), all C-contiguous float32 (on CUDA, q, k, v and
 * the gates may instead all be bfloat16; state and o stay float32):
 *   q, o          [B, T, H, Dk] / [B, T, H, Dv]
 *   k, v          [B, T, H, Dk] / [B, T, H, Dv]; with steps > 1 (multistep(n),
 *                 DeltaProduct) one pair per step: [B, T, H, steps, Dk] / [..., Dv]
 *   scalar gate   [B, T, H]; a per-step gate [B, T, H, steps]
 *   channel gate  [B, T, H, Dk] or [B, T, H, Dv] (see miras_gate_info.axis)
 *   state tensor  [B, H, <state shape>]
 */
#ifndef MIRAS_ABI_H
#define MIRAS_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version history (a loader accepts exactly its own version; the runtime reports a
 * mismatch as MIRAS_ERR_ABI_VERSION with both numbers, before touching anything else):
 *   10 miras_module_metadata ends with backward_flops_per_token, the backward's work
 *      per token (miras bench: its GFLOP/s): libraries built for 9 must be recompiled.
 *   9  miras_forward_args and miras_backward_args end with checkpoints: the forward
 *      can save the states the backward would otherwise recompute in a first pass
 *      (MIRAS_CHECKPOINTS below): libraries built for 8 must be recompiled.
 *   8  miras_state_info carries the state's role (carried, anchor, chunk position:
 *      the exact continuation of chunked modules) and its declared initial value
 *      (init, init_scale, init_seed): libraries built for 7 must be recompiled.
 *   7  miras_module_metadata ends with cuda_backward, the backward's CUDA kernel
 *      (--backward with a cuda target): libraries built for 6 must be recompiled.
 *   6  the backward pass: miras_module_metadata ends with backward_segment,
 *      miras_module_entry with backward and backward_range (miras_backward_args), and
 *      the statuses MIRAS_ERR_ALLOC and MIRAS_ERR_UNSUPPORTED: libraries built for 5 must be recompiled.
 *   5  miras_gate_info carries the gate's declared range (has_range, range_lo, range_hi,
 *      range_lo_closed, range_hi_closed): libraries built for 4 must be recompiled.
 *   4  the CUDA table (miras_cuda_binary). */
#define MIRAS_ABI_VERSION 10u

/* Status codes returned by every entry point (0 is success). */
typedef enum miras_status {
  MIRAS_OK = 0,
  MIRAS_ERR_NULL_POINTER = 1,   /* a required pointer argument is NULL */
  MIRAS_ERR_SHAPE = 2,          /* a dimension is non-positive or mismatched */
  MIRAS_ERR_DTYPE = 3,          /* a tensor has an unsupported element type */
  MIRAS_ERR_ABI_VERSION = 4,    /* library and loader disagree on MIRAS_ABI_VERSION */
  MIRAS_ERR_LOAD = 5,           /* the library could not be opened or is not a miras module */
  MIRAS_ERR_IO = 6,             /* a file could not be read or written */
  MIRAS_ERR_DEVICE = 7,         /* the requested device is not available */
  MIRAS_ERR_INVALID_ARGUMENT = 8, /* any other invalid argument */
  MIRAS_ERR_ALLOC = 9,           /* a workspace could not be allocated (ABI 6) */
  MIRAS_ERR_UNSUPPORTED = 10,    /* the library lacks the entry point (e.g. built
                                    without --backward; ABI 6) */
  MIRAS_ERR_NON_FINITE = 11      /* a NaN or infinity in a tensor, found by the runtime's
                                    opt-in check (runtime.h: MIRAS_CHECK_FINITE); modules
                                    never return it */
} miras_status;

/* Kind of a gate (per-token input computed by the host model). */
typedef enum miras_gate_kind {
  MIRAS_GATE_SCALAR = 0, /* [B, T, H] */
  MIRAS_GATE_CHANNEL = 1 /* [B, T, H, dim] */
} miras_gate_kind;

/* Which memory axis a channel gate runs along. */
typedef enum miras_axis {
  MIRAS_AXIS_NONE = 0,
  MIRAS_AXIS_KEY = 1,   /* length Dk */
  MIRAS_AXIS_VALUE = 2  /* length Dv */
} miras_axis;

typedef struct miras_param_info {
  const char *name;
  double value;       /* value the module was compiled with (after -D overrides) */
  int32_t is_integer; /* 1 when declared with an integer literal */
} miras_param_info;

/*
 * A gate's range is the set of values the module is declared for, written in the
 * .miras file in interval notation (`gate alpha : scalar in (0, 1];`). It is a contract
 * on the host's inputs (the kernel does not check the values), and what `miras bench`
 * and the tests draw random inputs from. has_range = 0: none declared (any value), the
 * other range fields are then 0. Otherwise range_lo <= range_hi, an unbounded end is
 * -HUGE_VAL / HUGE_VAL and open, and the interval holds at least one value.
 */
typedef struct miras_gate_info {
  const char *name;
  int32_t kind;  /* miras_gate_kind */
  int32_t axis;  /* miras_axis; MIRAS_AXIS_NONE for scalar gates */
  int64_t dim;   /* channel length; 1 for scalar gates */
  int32_t per_step; /* 1: one value per step of a multistep module */
  int32_t has_range;       /* 1: the range below was declared (ABI 5) */
  double range_lo;         /* lower end, -HUGE_VAL when unbounded */
  double range_hi;         /* upper end, HUGE_VAL when unbounded */
  int32_t range_lo_closed; /* 1: range_lo itself is allowed ('['), 0: open ('(') */
  int32_t range_hi_closed; /* 1: range_hi itself is allowed (']'), 0: open (')') */
} miras_gate_info;

#define MIRAS_MAX_STATE_RANK 4

/*
 * What a state tensor is (ABI 8). A module with chunk C > 1 evaluates every gradient at
 * its chunk's anchor (SPEC section 7), so to continue a sequence exactly a call must
 * also carry the anchor and the position in the chunk: such a module lists, after its
 * carried states, one MIRAS_STATE_ANCHOR per memory weight (named "<weight>_anchor",
 * shaped like it) and one MIRAS_STATE_CHUNK_POSITION ("chunk_position", shape {1}).
 * They are states like the others (state_in / state_out, in place allowed), and
 * optional on input: a NULL chunk_position is position 0, where the next token starts
 * a chunk and the anchors are not read, which is how a call starts a sequence.
 */
typedef enum miras_state_role {
  MIRAS_STATE_CARRIED = 0,        /* a weight of the memory, its dual, or an optimizer
                                     state (momentum): what the update rule carries */
  MIRAS_STATE_ANCHOR = 1,         /* the anchor of states[anchor_of]: its value at the
                                     start of the chunk that holds the next token (on
                                     output, the final state when chunk_position is 0) */
  MIRAS_STATE_CHUNK_POSITION = 2  /* tokens of that chunk already consumed: an integer
                                     0 <= p < chunk stored as a float (anything else is
                                     MIRAS_ERR_INVALID_ARGUMENT); no adjoint (zeros) */
} miras_state_role;

/* How a state starts when no initial state is given (the DSL's `init`; ABI 8). The
 * module's own entry points read a NULL state_in as zeros; the runtime (and with it the
 * CLI and the Python API) fills a NULL state_in with the declared value instead
 * (runtime.h: miras_library_initial_state). */
typedef enum miras_state_init {
  MIRAS_INIT_ZEROS = 0,    /* every entry 0 */
  MIRAS_INIT_IDENTITY = 1, /* init_scale on the diagonal of the last two axes, 0 elsewhere */
  MIRAS_INIT_UNIFORM = 2,  /* every entry init_scale (1/n: uniform on the simplex) */
  MIRAS_INIT_NORMAL = 3    /* independent N(0, init_scale^2) entries drawn from init_seed
                              (runtime.h gives the generator) */
} miras_state_init;

typedef struct miras_state_info {
  const char *name;                     /* "W", "A", "S", "W1", ... */
  int32_t rank;                         /* rank of the per-(batch, head) shape */
  int64_t shape[MIRAS_MAX_STATE_RANK];  /* per-(batch, head) shape, e.g. {Dv, Dk} */
  int32_t role;                         /* miras_state_role (ABI 8) */
  int32_t anchor_of;                    /* MIRAS_STATE_ANCHOR: index of the state it
                                           anchors; else -1 */
  int32_t init;                         /* miras_state_init (ABI 8) */
  double init_scale;                    /* the value, diagonal or deviation of init */
  uint64_t init_seed;                   /* MIRAS_INIT_NORMAL's seed; else 0 */
} miras_state_info;

/*
 * The CUDA kernels of a module built with --target=cuda or cpu,cuda (NULL otherwise).
 * The library holds them as plain data: the loader (the miras runtime) loads them
 * through the CUDA driver API on first use, so a module never links against CUDA.
 *
 * Launch: grid (B * H, 1, 1), one block per (batch, head) pair, block
 * (block_threads, 1, 1), shared_bytes of dynamic shared memory. Kernel parameters, in
 * order, each passed as a pointer to its value in cuLaunchKernel's array:
 *   int64 B, int64 T, int64 H,
 *   q, k, v, gates[0 .. num_gates), states[0 .. num_states), o, workspace
 * where every tensor is a device pointer (CUdeviceptr) laid out as above. The states
 * are read as the initial state and overwritten with the final one (the caller copies
 * state_in there, or zero-fills it, before the launch). workspace is a device buffer of
 * B * H * workspace_bytes bytes (NULL when workspace_bytes is 0).
 *
 * The backward's table (miras_module_metadata.cuda_backward) has the same fields, with
 * kernel_f32 its one entry (kernel_bf16 NULL: float32 inputs only) and this launch:
 * grid (B * H, 1, 1), block (block_threads, 1, 1), shared_bytes; parameters
 *   int64 B, int64 T, int64 H, int64 first_pair,
 *   q, k, v, gates[0 .. num_gates), d_o, d_states[0 .. num_states),
 *   d_q, d_k, d_v, d_gates[0 .. num_gates),
 *   checkpoints[0 .. num_states), segments[of each MIRAS_STATE_CARRIED state], workspace
 * Block b runs pair first_pair + b. d_states[i] holds the adjoint of the final state
 * (the caller copies d_state_out there, or zero-fills it) and is overwritten with the
 * initial state's. checkpoints[i] of a carried state is [pairs, N, shape] floats with
 * N = ceil((T + chunk - 1) / S) (S = backward_segment; pairs = the launch's grid), of an
 * anchor or the chunk position [pairs, 1, shape]; the caller stores each pair's initial
 * state (state_in, or zeros) in slot 0. segments[i] is [pairs, S, slot shape] floats
 * of scratch, a slot being the state's shape with its first extent grown by
 * ceil(16 / row) rows (row = the product of the other extents; a scalar state: one
 * float). Checkpoints and segments are indexed by pair - first_pair, the workspace
 * (B * H * workspace_bytes bytes, as the forward's) by the absolute pair.
 */
typedef struct miras_cuda_binary {
  const char *arch;              /* "sm_90": the PTX target and the cubin's architecture */
  const char *ptx;               /* NUL-terminated PTX (the driver JIT-compiles it for
                                    newer GPUs) */
  const unsigned char *cubin;    /* cubin assembled by ptxas for arch, or NULL when mirasc
                                    ran without ptxas */
  uint64_t cubin_size;
  const char *kernel_f32;        /* entry for float32 q, k, v and gates */
  const char *kernel_bf16;       /* entry for bfloat16 q, k, v and gates (f32 state, o
                                    and accumulation) */
  uint32_t block_threads;
  uint32_t shared_bytes;         /* dynamic shared memory per block; above 48 KiB it needs
                                    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
  uint64_t workspace_bytes;      /* global scratch per (batch, head) pair */
} miras_cuda_binary;

typedef struct miras_module_metadata {
  uint32_t abi_version;      /* MIRAS_ABI_VERSION the library was built for */
  const char *name;          /* module name from the .miras file */
  const char *source;        /* path of the .miras file it was compiled from */
  const char *compiler;      /* "mirasc <version>" */
  int64_t dk;                /* key/query width */
  int64_t dv;                /* value/output width */
  int64_t chunk;             /* chunk size C of SPEC section 7 (1 = exact sequential) */
  int64_t steps;             /* (k, v) pairs per token: 1, or n for multistep(n) */
  int32_t read_after_write;  /* 1: o_t = f(W_t; q_t); 0: o_t = f(W_{t-1}; q_t) */
  int32_t num_params;
  const miras_param_info *params;
  int32_t num_gates;
  const miras_gate_info *gates;   /* order of miras_forward_args.gates */
  int32_t num_states;
  const miras_state_info *states; /* order of state_in / state_out */
  const char *targets;       /* comma separated, e.g. "cpu" */
  const char *rule;          /* the derived update rule, one line per state tensor */
  double flops_per_token;    /* floating-point operations of the derived rule per token and
                                head (one update plus one read; a multiply-add counts 2):
                                the work measure behind achieved GFLOP/s */
  const char *algorithm;     /* how the kernel walks a sequence (SPEC section 7):
                                "sequential" token by token; "chunked" the dual form,
                                matrix products per chunk; "chunked-scan" the state-free
                                part per chunk, the rest token by token. Same numbers. */
  const miras_cuda_binary *cuda; /* NULL unless targets names "cuda" */
  int64_t backward_segment;  /* 0: built without --backward (no backward entry points);
                                else the backward's segment S: it recomputes the states S
                                tokens at a time, keeping ceil((T + chunk - 1) / S) + S
                                of each carried state per (batch, head) pair (ABI 6) */
  const miras_cuda_binary *cuda_backward; /* NULL unless built with --backward for a cuda
                                target: the backward's kernel (launch above; ABI 7) */
  double backward_flops_per_token; /* 0 without a backward; else its work per token and
                                head, as flops_per_token counts: the derived reverse step
                                plus one recompute of the state update (a backward from
                                saved checkpoints; ABI 10) */
} miras_module_metadata;

/*
 * Arguments of one forward call over a whole sequence (T = 1 is a decode step).
 * gates[i] follows metadata->gates[i]; state_in[i] / state_out[i] follow
 * metadata->states[i]. state_in[i] may equal state_out[i] (in-place continuation);
 * a NULL state_in[i] means a zero initial state (for a chunked module's anchors and
 * chunk position: a call that starts a sequence). Every state_out together is what the
 * next call over the same sequence needs as its state_in: any split of a sequence into
 * calls, T = 1 steps included, gives one call's numbers.
 */
typedef struct miras_forward_args {
  int64_t batch;  /* B */
  int64_t length; /* T */
  int64_t heads;  /* H */
  const float *q;
  const float *k;
  const float *v;
  const float *const *gates;
  const float *const *state_in;
  float *const *state_out;
  float *o;
  /* NULL: nothing saved. Else (a library built with --backward only, otherwise
   * MIRAS_ERR_UNSUPPORTED) one buffer per MIRAS_STATE_CARRIED state, in metadata order,
   * each of MIRAS_CHECKPOINTS(T, chunk, backward_segment) states per (batch, head)
   * pair, [B, H, N, shape]: the forward also stores there what the backward's first pass
   * would compute (below), at the cost of one state copy every S tokens (ABI 9). */
  float *const *checkpoints;
} miras_forward_args;

/*
 * Arguments of one backward call (mirasc --backward): the adjoints of a loss L with
 * respect to every input of the forward call over the same sequence, given dL/do and
 * dL/d(final state). q, k, v, gates and state_in are the forward's inputs (as in
 * miras_forward_args; a NULL state_in, or entry, is a zero initial state). d_o is
 * [B, T, H, Dv]; d_state_out[i] is the adjoint of the final state i (NULL array or
 * entry: zero). Outputs, each shaped like its input: d_q, d_k, d_v, d_gates[i] and
 * d_state_in[i] (the adjoint of the initial state; it may equal d_state_out[i] or
 * state_in[i]). The outputs must not overlap the inputs otherwise. With chunk > 1 these are the adjoints
 * of the sequential algorithm with anchors (SPEC section 7), whose numbers the chunked
 * forms give too.
 */
typedef struct miras_backward_args {
  int64_t batch;  /* B */
  int64_t length; /* T */
  int64_t heads;  /* H */
  const float *q;
  const float *k;
  const float *v;
  const float *const *gates;
  const float *const *state_in;
  const float *d_o;
  const float *const *d_state_out;
  float *d_q;
  float *d_k;
  float *d_v;
  float *const *d_gates;
  float *const *d_state_in;
  /* NULL: the backward computes its checkpoints in a first pass over the sequence (about
   * two thirds of a forward). Else the checkpoints a forward over the same inputs saved
   * (miras_forward_args.checkpoints), which the backward only reads; a forward of the
   * chunked algorithm saves the chunked form's states, a few ulps from the sequential
   * pass's (ABI 9). */
  const float *const *checkpoints;
} miras_backward_args;

/* Every compiled module exports, next to its named entry points, this table under the
 * fixed symbol "miras_module_v1" so that a loader can find it without knowing the name.
 * Its function pointers are those named entry points: the runtime accepts only the start
 * of an exported function of the library itself, and every pointer of the metadata must
 * lie in the library's memory (strings terminated there), or the module is refused as
 * damaged. */
typedef struct miras_module_entry {
  uint32_t abi_version;
  const miras_module_metadata *(*metadata)(void);
  /* forward and forward_range are NULL when targets does not name "cpu". */
  int32_t (*forward)(const miras_forward_args *args); /* returns miras_status */
  /* Runs only the (batch, head) pairs begin <= b * H + h < end of the flattened B * H
   * range; forward(args) is forward_range(args, 0, B * H). Disjoint ranges touch disjoint
   * parts of state_out and o, so they may run concurrently from different threads: this
   * is how a host splits one forward over its own thread pool.
   * The CPU entry points compute with subnormal floats flushed to zero (x86 FTZ and DAZ,
   * AArch64 FZ: a decaying state reaches that range after thousands of tokens, where x86
   * is about a hundred times slower) and restore the calling thread's float mode before
   * they return. */
  int32_t (*forward_range)(const miras_forward_args *args, int64_t begin, int64_t end);
  /* NULL unless metadata->backward_segment > 0 (ABI 6). backward_range, like
   * forward_range, runs only the pairs [begin, end) (allocating its own workspace, so
   * disjoint ranges may run concurrently; the pairs of a range run one after the other);
   * MIRAS_ERR_ALLOC when the workspace of ceil((T + chunk - 1) / S) + S states per
   * carried state tensor cannot be allocated. */
  int32_t (*backward)(const miras_backward_args *args);
  int32_t (*backward_range)(const miras_backward_args *args, int64_t begin, int64_t end);
} miras_module_entry;

#define MIRAS_MODULE_ENTRY_SYMBOL "miras_module_v1"

/*
 * Checkpoints (ABI 9): the backward's recompute starts every S tokens (S =
 * backward_segment) from the state there. Counted in the chunk-aligned time u = p + t
 * (p the chunk position the call starts at, 0 without one), checkpoint 0 is the state
 * before the call's first token and checkpoint c >= 1 the state before the token with
 * u = c * S; a call of T tokens uses ceil((p + T) / S) of them, at most
 * MIRAS_CHECKPOINTS(T, chunk, S). The rest of the buffer is not read.
 */
#define MIRAS_CHECKPOINTS(length, chunk, segment) \
  (((length) + (chunk) - 1 + (segment) - 1) / (segment))

#ifdef __cplusplus
}
#endif

#endif /* MIRAS_ABI_H */
