# The example matrix: one entry per example (and per test module run in the same modes),
# crossed with the modes below by examples_format.py at lit time. Each (entry, mode) is one
# lit test, "Examples/<mode>/<name>.test"; its RUN and CHECK lines are generated
# (examples_format.py: script()), so the six near-copies per example this replaces
# (test/lit/Numeric, Numeric/parallel, Numeric/simt, Numeric/cuda-on-cpu, CUDA/ptx,
# CUDA/device) cannot drift apart.
#
# Modes (what each checks: examples_format.py, MODES):
#   reference    check_module.py against the float64 numpy reference
#   chunked      --chunk=C --compare-algorithms: chunked vs sequential kernel, both vs the
#                reference (SPEC section 7)
#   simt         the same from the CUDA kernels' thread-distributed form on the CPU
#   cuda-on-cpu  the same from the CUDA kernel code, threads in lockstep between barriers
#   ptx          --emit=ptx: both kernels, no external calls, ptxas accepts (REQUIRES: ptxas)
#   device       on a GPU, f32 and bf16 inputs, vs the CPU kernel and the reference
#                (REQUIRES: cuda-device)
#   step-backward  the reverse step against finite differences of the step, from the IR
#                (every entry unless step_backward=False; with anchors when chunked)
#   seq-backward   the reverse step composed over a whole sequence (and two chained calls)
#                against finite differences of the float64 reference, at D = 4 (every
#                entry unless seq_backward=False; again with chunk 3 when chunked, and
#                with --model dsl where the entry's runs have one)
#
# Fields:
#   name       test name; for ptx also the module name (the kernels are NAME_f32/NAME_bf16)
#   module     the .miras file (%examples/..., %numeric/modules/...)
#   model      the reference model of test/numeric/reference.py ("dsl": read the module)
#   states     the module's state tensors, in ABI order (each gets a CHECK line after o)
#   size       check_module.py arguments of the reference and device modes (-D, --T, --H)
#   runs       the reference mode's check_module.py runs after the first, each the
#              arguments after --module (model, sizes, seed, workdir); default none
#   commands   the reference mode's further RUN commands (another checker), default none
#   chunked    {"size", "chunk", "form", "header"} of the chunked, simt and cuda-on-cpu
#              modes: form "chunked" (dual form) or "chunked-scan" (what `miras info`
#              calls the algorithm), header how the reference block is checked: "named"
#              (the model's name), "prefix" (the line's start only), "none" (no line)
#   unchunked  size of the simt / cuda-on-cpu modes of a module that cannot take a chunk
#              (multistep): one run, no algorithm comparison
#   modes      the modes that apply (default: all six)
#   seq_args   check_seq_backward.py arguments after the defaults (--T 8 --H 2), e.g. a
#              longer T for a module's own chunk
#
# The gate values of every run come from the module's declared ranges (`miras info`:
# sample); see test/numeric/README.md.
#
# The tests have no files in the source tree, so lit is given the directory and a filter:
#   lit build/test/lit/Examples --filter 'Examples/simt/titans'
# and `python3 test/lit/Examples/examples_format.py simt titans` prints that test's script
# (the one that ran is kept as build/test/lit/Examples/simt/titans.test).

ALL = ("reference", "chunked", "simt", "cuda-on-cpu", "ptx", "device")
LINEAR = ["W"]
CHUNK8 = {"size": "-DD=16 --T 37 --H 2", "chunk": 8, "form": "chunked", "header": "named"}
MLP_CHUNK4 = {"size": "-DD=8 --T 19 --H 2", "chunk": 4, "form": "chunked", "header": "named"}
MLP_SIZE = "-DD=8 --T 24 --H 2"

ENTRIES = [
    dict(name="linear_attention", module="%examples/linear_attention.miras",
         model="linear_attention", states=LINEAR, size="-DD=16", chunked=CHUNK8),
    dict(name="retnet", module="%examples/retnet.miras", model="retnet", states=LINEAR,
         size="-DD=16", chunked=CHUNK8),
    dict(name="mamba2", module="%examples/mamba2.miras", model="mamba2", states=LINEAR,
         size="-DD=16", chunked=CHUNK8),
    dict(name="gla", module="%examples/gla.miras", model="gla", states=LINEAR,
         size="--T 32 -DD=32", chunked=CHUNK8),
    # HGRN2: the first run ties k_t = 1 - alpha_t (Model.key_from) and checks SPEC section 6
    # written literally; the second feeds independent keys and reads the module's own
    # declarations (--model dsl).
    dict(name="hgrn2", module="%examples/hgrn2.miras", model="hgrn2", states=LINEAR,
         size="-DD=16 --T 48", runs=["--model dsl -DD=8 --T 32 --seed 1 --workdir %t"],
         chunked=CHUNK8),
    dict(name="deltanet", module="%examples/deltanet.miras", model="deltanet", states=LINEAR,
         size="-DD=16", chunked=CHUNK8),
    dict(name="gated_deltanet", module="%examples/gated_deltanet.miras",
         model="gated_deltanet", states=LINEAR, size="-DD=16", chunked=CHUNK8),
    # The same example at its default D = 64.
    # (seq-backward runs at D = 4: this entry would repeat gated_deltanet's.)
    dict(name="gated_deltanet_d64", module="%examples/gated_deltanet.miras",
         model="gated_deltanet", states=LINEAR, size="--T 32 --H 2", modes=("reference",),
         step_backward=False, seq_backward=False),
    # DeltaProduct (multistep(2)): also against the Householder-product form of
    # check_retention.py; multistep modules take no chunk, so simt / cuda-on-cpu run it
    # once with chunk 1 (mirasc's refusal of --chunk is in Pipeline/driver-chunk-errors).
    dict(name="deltaproduct", module="%examples/deltaproduct.miras", model="deltaproduct",
         states=LINEAR, size="-DD=16 --T 32", workdir="%t/a",
         commands=["%python %numeric/retention/check_retention.py --rule product --steps 2 "
                   "--module %examples/deltaproduct.miras --workdir %t/b | FileCheck %s"],
         unchunked="-DD=16 --T 32", modes=("reference", "simt", "cuda-on-cpu", "ptx", "device")),
    dict(name="ttt_linear", module="%examples/ttt_linear.miras", model="ttt_linear",
         states=LINEAR, size="-DD=16", chunked=CHUNK8),
    dict(name="longhorn", module="%examples/longhorn.miras", model="longhorn", states=LINEAR,
         size="--T 32 -DD=32", chunked=CHUNK8),
    # rwkv7: the closed form (the rwkv7_simple rule), then the generic composition read
    # from the module (--model dsl).
    dict(name="rwkv7", module="%examples/rwkv7.miras", model="rwkv7", states=LINEAR,
         size="-DD=16 --T 48", runs=["--model dsl -DD=8 --T 32 --seed 1 --workdir %t"],
         chunked=CHUNK8),
    # A user-written bias sum(log(cosh(y - v))): psi by finite differences of the loss
    # (the model's primary reference), psi = tanh(e) by hand (generic:), and the rule read
    # from the module (dsl: the expression parsed and differentiated numerically).
    dict(name="logcosh_gated_delta", module="%examples/logcosh_gated_delta.miras",
         model="logcosh_gated_delta", states=LINEAR, size="-DD=16 --T 32",
         runs=["--model generic:logcosh_gated_delta -DD=16 --T 48 --seed 1 --workdir %t",
               "--model dsl -DD=16 --T 48 --seed 2 --workdir %t"],
         chunked=CHUNK8),
    # MLP memories (SPEC section 4): D = 8, and chunk 4 over T = 19.
    dict(name="ttt_mlp", module="%examples/ttt_mlp.miras", model="ttt_mlp",
         states=["W1", "W2"], size=MLP_SIZE, chunked=MLP_CHUNK4),
    dict(name="titans", module="%examples/titans.miras", model="titans",
         states=["W1", "W2", "S1", "S2"], size=MLP_SIZE,
         chunked=dict(MLP_CHUNK4, header="prefix")),
    # delta = 2.8 ~ sqrt(D): about half of the tokens are capped (||e|| > delta), so both
    # branches of psi run; the second run reads the module's own declarations.
    dict(name="robust_titans", module="%examples/robust_titans.miras", model="robust_titans",
         states=["W1", "W2", "S1", "S2"], size="-DD=8 -Ddelta=2.8 --T 24 --H 2",
         runs=["--model dsl -DD=8 -Ddelta=2.8 --T 24 --H 2 --seed 1 --workdir %t"],
         chunked=dict(MLP_CHUNK4, size="-DD=8 -Ddelta=2.8 --T 19 --H 2", header="prefix")),
    # Mirror retentions: the dual states A1 A2; the lq / kl normalisation reads the current
    # state, so the chunked algorithm takes its scan form.
    dict(name="moneta", module="%examples/moneta.miras", model="moneta",
         states=["A1", "A2"], size=MLP_SIZE, chunked=dict(MLP_CHUNK4, form="chunked-scan")),
    dict(name="memora", module="%examples/memora.miras", model="memora",
         states=["A1", "A2"], size=MLP_SIZE, chunked=dict(MLP_CHUNK4, form="chunked-scan")),
    dict(name="yaad", module="%examples/yaad.miras", model="yaad", states=["W1", "W2"],
         size=MLP_SIZE, chunked=MLP_CHUNK4),
    # Test modules run in the chunked modes too.
    # GLA read before write: the channel path of the chunked form with reads one token
    # behind, against the reference built from the module (dsl).
    dict(name="gla_before_write", module="%numeric/modules/gla_before_write.miras",
         model="dsl", states=LINEAR,
         chunked=dict(CHUNK8, header="none"), modes=("chunked", "simt", "cuda-on-cpu")),
    # A decay of W's Dv rows has no dual form: the scan form of the chunked algorithm.
    dict(name="gla_dv", module="%numeric/modules/gla_dv.miras", model="gla_dv",
         states=LINEAR, size="-DD=16",
         chunked={"size": "-DD=8 --T 19 --H 2", "chunk": 4, "form": "chunked-scan",
                  "header": "named"},
         modes=("reference", "chunked", "simt", "cuda-on-cpu")),
    dict(name="titans_before_write", module="%numeric/modules/titans_before_write.miras",
         model="dsl", states=["W1", "W2", "S1", "S2"],
         chunked=dict(MLP_CHUNK4, header="prefix"), modes=("chunked", "simt", "cuda-on-cpu")),
    # The test modules of test/numeric/modules that no entry above runs: their reverse
    # step and reverse sweep (the backward modes only; their forwards are checked by
    # test/lit/Numeric).
] + [
    dict(name=name, module="%%numeric/modules/%s.miras" % name, model=model, states=states,
         size="-DD=4", modes=(), **extra)
    for name, model, states, extra in [
        ("before_write", "before_write", LINEAR, {}),
        # The module's own chunks (4 and 8): T long enough for several, and a segment
        # of two chunks shorter than T.
        ("chunked", "chunked", LINEAR, {"seq_args": "--T 12"}),
        ("chunked_decoupled", "chunked_decoupled", LINEAR, {"seq_args": "--T 20"}),
        ("coupled", "coupled", LINEAR, {}),
        ("huber", "fd:huber", LINEAR, {}),
        ("huber_norm", "fd:huber_norm", LINEAR, {}),
        ("logcosh", "fd:logcosh", LINEAR, {}),
        ("lp3", "fd:lp3", LINEAR, {}),
        ("lp_smooth", "lp_smooth", LINEAR, {}),
        ("mlp_fd_gelu", "mlp_fd_gelu", ["W1", "W2"], {}),
        ("mlp_fd_gelu_tanh", "mlp_fd_gelu_tanh", ["W1", "W2"], {}),
        ("mlp_fd_relu", "mlp_fd_relu", ["W1", "W2", "W3"], {}),
        # Built for one token (eta up to 1, l_3 bias, three SiLU layers): over more its
        # weights overflow float64 within a few tokens, the forward's own numbers.
        ("mlp_fd_silu", "mlp_fd_silu", ["W1", "W2", "W3"], {"seq_args": "--T 2"}),
        ("pseudo_huber", "fd:pseudo_huber", LINEAR, {}),
        ("rwkv7_simple", "rwkv7_simple", LINEAR, {}),
        ("user_l2", "fd:user_l2", LINEAR, {}),
        ("user_value_shift", "fd:user_value_shift", LINEAR, {}),
        ("value_shift", "fd:value_shift", LINEAR, {}),
    ]
]
