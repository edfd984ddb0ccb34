"""lit test format of test/lit/Examples: manifest.py crossed with the modes.

Each applicable (entry, mode) is one test "Examples/<mode>/<name>.test". Discovery lists
them without writing anything; running one writes its generated script to the build tree
(next to its Output/ directory, as <name>.test) and runs it as an ordinary ShTest, so
REQUIRES, substitutions and FileCheck behave as in a hand-written file, and the script
that ran can be read there. `python3 examples_format.py MODE NAME` prints one script.
"""

import os

import manifest

try:
    import lit.Test
    from lit.formats import ShTest
except ImportError:  # run as a script, to print one test: no lit needed
    ShTest = object

CHECK_MODULE = "%python %numeric/check_module.py --mirasc mirasc --miras miras"

# Mode -> (one-line description for the generated header, extra mirasc arguments of the
# chunked family).
MODES = {
    "reference": "compiled and run, vs the independent float64 numpy reference",
    "chunked": "the chunked kernel gives the sequential kernel's numbers on the same "
               "inputs (SPEC section 7; a short last chunk), and both follow the float64 "
               "reference with gradients at each chunk's anchor",
    "simt": "SIMT form on the CPU (mirasc --simt-on-cpu): the CUDA kernels' distribution "
            "over 40 threads per block (not a multiple of a warp), every thread loop run "
            "in turn; both algorithms, against each other and the float64 reference",
    "cuda-on-cpu": "the CUDA kernel's own code on the CPU (mirasc --cuda-on-cpu): block per "
                   "pair, shared memory and workspace as placed for the GPU, each block's 40 "
                   "threads run in turn (last first) from one barrier to the next, so a "
                   "missing barrier changes the numbers",
    "ptx": "mirasc --emit=ptx gives both CUDA kernels (f32 and bf16 inputs) for sm_90, with "
           "no calls out of them (libdevice linked in, copies are loops), and ptxas accepts "
           "them",
    "device": "the CUDA kernels of a --target=cpu,cuda library on the GPU against its CPU "
              "kernel and the float64 reference, with float32 inputs (1e-4) and with bfloat16 "
              "q, k, v and gates (1e-2; those are bfloat16 values for the CPU run and the "
              "reference too, so the check measures the kernel, not the rounding)",
    "step-backward": "the reverse step (mirasc --emit=backward, miras-derive-backward) "
                     "against central finite differences of the step, both evaluated "
                     "from the IR in float64 (check_step_backward.py); with anchors too "
                     "where the module takes a chunk",
    "seq-backward": "the reverse step composed over a sequence (forward keeping the "
                    "states and chunk anchors, reverse sweep with the anchors' adjoints "
                    "added to their chunk's start state) against central finite "
                    "differences of the float64 reference forward (check_seq_backward.py, "
                    "grad_reference.py), plus two calls chained by the state and a "
                    "corrupted reverse step that must fail; the compiled backward kernel "
                    "(mirasc --backward, float32) against the same differences (1e-3) and "
                    "as two kernel calls chained by the state; chunk 1, then chunk 3 over "
                    "T = 8 where the module takes a chunk, and the rule read from the "
                    "module (dsl) where the reference mode checks that too",
    "continuation": "any split of a sequence into calls, each given every state the one "
                    "before returned (the weights; with a chunk the anchors and the chunk "
                    "position too), gives one call's numbers: splits at, inside and across "
                    "chunk boundaries and T = 1 decode steps, forward and backward, both "
                    "algorithms, the glue's refusal of a bad chunk position, and two `miras "
                    "run` calls chained through their output files (check_continuation.py)",
}
GPU_FORMS = {"simt": ["--mirasc-arg=--simt-on-cpu", "--mirasc-arg=--gpu-threads=40"],
             "cuda-on-cpu": ["--mirasc-arg=--cuda-on-cpu", "--mirasc-arg=--gpu-threads=40"]}


def entries():
    return {e["name"]: e for e in manifest.ENTRIES}


def applies(entry, mode):
    if mode == "step-backward":  # every module has a reverse step
        return entry.get("step_backward", True)
    if mode == "seq-backward":
        return entry.get("seq_backward", True)
    if mode == "continuation":  # every module, at its chunked size (or with chunk 1)
        return entry.get("continuation", True)
    return mode in entry.get("modes", manifest.ALL)


def _state_checks(entry, directive):
    return ["# %s: %s: max_rel_err={{.*}} OK" % (directive, n) for n in ["o"] + entry["states"]]


def _reference(e):
    first = "--model %s %s --workdir %s" % (e["model"], e["size"], e.get("workdir", "%t"))
    runs = ["# RUN: %s --module %s %s | FileCheck %%s" % (CHECK_MODULE, e["module"], args)
            for args in [first] + e.get("runs", [])]
    runs += ["# RUN: " + c for c in e.get("commands", [])]
    return ["# RUN: rm -rf %t"] + runs + _state_checks(e, "CHECK")


def _chunked(e, mode):
    extra = GPU_FORMS.get(mode, [])
    if "chunked" not in e:  # a module that takes no chunk: one run of the GPU form
        return (["# RUN: rm -rf %t",
                 "# RUN: %s --module %s --model %s %s --workdir %%t %s | FileCheck %%s" % (
                     CHECK_MODULE, e["module"], e["model"], e["unchunked"], " ".join(extra))]
                + _state_checks(e, "CHECK"))
    c = e["chunked"]
    args = ["--mirasc-arg=--chunk=%d" % c["chunk"], "--compare-algorithms"] + extra + [
        "--tol", "1e-4"]
    lines = ["# RUN: rm -rf %t",
             "# RUN: %s --module %s --model %s %s --workdir %%t %s | FileCheck %%s" % (
                 CHECK_MODULE, e["module"], e["model"], c["size"], " ".join(args))]
    label = " ".join(["--chunk=%d" % c["chunk"]] + [a.split("=", 1)[1] for a in extra])
    lines.append("# CHECK: %s vs sequential kernel (%s):" % (c["form"], label))
    lines += _state_checks(e, "CHECK-NEXT")
    if c["header"] == "named":
        lines.append("# CHECK-NEXT: chunked vs float64 reference of model '%s':" % e["model"])
        lines += _state_checks(e, "CHECK-NEXT")
    elif c["header"] == "prefix":
        lines.append("# CHECK-NEXT: chunked vs float64 reference of model")
        lines += _state_checks(e, "CHECK-NEXT")
    else:  # the reference block's first line unchecked
        checks = _state_checks(e, "CHECK-NEXT")
        lines += [checks[0].replace("CHECK-NEXT:", "CHECK:", 1)] + checks[1:]
    return lines


def _step_backward(e):
    """The -D flags of the entry's sizes; a second run with anchors (chunk 3) for a
    module that takes a chunk."""
    size = e.get("size") or e.get("chunked", {}).get("size") or e.get("unchunked", "")
    defines = " ".join(t for t in size.split() if t.startswith("-D"))
    check = "%python %numeric/check_step_backward.py | FileCheck %s --implicit-check-not=FAIL"
    runs = ["# RUN: mirasc %s %s --emit=backward --mlir-print-op-generic | %s" % (
        e["module"], defines, check)]
    if "chunked" in e:
        runs.append("# RUN: mirasc %s %s --chunk=3 --emit=backward --mlir-print-op-generic "
                    "| %s --check-prefix=ANCHORS" % (e["module"], defines, check))
        runs.append("# ANCHORS: d{{[A-Z][0-9]*}}_anchor: max_rel_err={{.*}} OK")
        runs.append("# ANCHORS: step_backward: {{[0-9]+}} adjoints OK")
    return runs + ["# CHECK: step_backward: {{[0-9]+}} adjoints OK"]


SEQ_BACKWARD = ("%python %numeric/check_seq_backward.py --mirasc mirasc --miras miras "
                "--T 8 --H 2 --negative-control --kernel")


def _seq_backward(e):
    """D = 4 (full finite differences over every coordinate stay cheap) with the entry's
    other -D flags; a second run with chunk 3 (T = 8: two full chunks and a partial one)
    for a module that takes a chunk, and one against the rule read from the module
    (--model dsl) where the reference mode has such a run."""
    size = e.get("size") or e.get("chunked", {}).get("size") or e.get("unchunked", "")
    defines = " ".join(["-DD=4"] + [t for t in size.split()
                                    if t.startswith("-D") and not t.startswith("-DD=")])
    runs = [("CHECK", e["model"], "")]
    if "chunked" in e:
        runs.append(("CHUNK3", e["model"], " --chunk 3"))
    if e["model"] != "dsl" and any("--model dsl" in r for r in e.get("runs", [])):
        runs.append(("DSL", "dsl", ""))
    lines = []
    for prefix, model, extra in runs:
        lines.append("# RUN: %s --module %s --model %s %s%s%s | FileCheck %%s "
                     "--implicit-check-not=FAIL --check-prefix=%s" % (
                         SEQ_BACKWARD, e["module"], model, defines, extra,
                         " " + e["seq_args"] if "seq_args" in e else "", prefix))
    for prefix, _, extra in runs:
        lines.append("# %s: forward o: max_rel_err={{.*}} OK" % prefix)
        lines += ["# %s: d%s: max_rel_err={{.*}} OK" % (prefix, n)
                  for n in ["q", "k", "v"] + e["states"]]
        lines.append("# %s: split at t={{[0-9]+}} (at a chunk boundary): chained calls vs "
                     "single call: max_rel_err={{.*}} OK" % prefix)
        if extra:
            lines.append("# %s: split at t={{[0-9]+}} (inside a chunk): chained calls vs "
                         "FD of the reference as the same two calls: max_rel_err={{.*}} OK"
                         % prefix)
        lines += ["# %s: kernel (S={{[0-9]+}}) d%s vs FD of the reference: max_rel_err={{.*}} OK"
                  % (prefix, n) for n in ["q", "k", "v"] + e["states"]]
        lines.append("# %s: kernel: split at t={{[0-9]+}}: chained calls (state adjoint passed "
                     "back) vs single call: max_rel_err={{.*}} OK" % prefix)
        lines.append("# %s: negative control ({{.*}}): max_rel_err={{.*}} detected" % prefix)
        lines.append("# %s: seq_backward: {{[0-9]+}} adjoints OK" % prefix)
    return lines


def _ptx(e):
    return ["# REQUIRES: ptxas",
            "# RUN: mirasc %s --emit=ptx -o %%t.ptx" % e["module"],
            "# RUN: FileCheck %s < %t.ptx",
            "# RUN: not grep -q extern %t.ptx",
            "# RUN: %ptxas -arch=sm_90 %t.ptx -o %t.cubin",
            "# CHECK: .target sm_90",
            "# CHECK: .entry %s_f32(" % e["name"],
            "# CHECK: .entry %s_bf16(" % e["name"]]


def _device(e):
    runs = []
    for dtype, extra, tol in (("f32", "", "1e-4"), ("bf16", " --input-dtype bf16", "1e-2")):
        runs.append("# RUN: %s --module %s --model %s %s --workdir %%t/%s --device cuda%s "
                    "--tol %s | FileCheck %%s" % (CHECK_MODULE, e["module"], e["model"],
                                                 e["size"], dtype, extra, tol))
    return (["# REQUIRES: cuda-device", "# RUN: rm -rf %t"] + runs +
            ["# CHECK: cuda ({{f32|bf16}} inputs) vs cpu kernel:"] +
            _state_checks(e, "CHECK-NEXT") +
            ["# CHECK-NEXT: cuda vs float64 reference of model '%s':" % e["model"]] +
            _state_checks(e, "CHECK-NEXT"))


def _continuation(e):
    """One run at the entry's chunk (its -D flags), D = 4 for the speed of T = 1 steps;
    chunk 1 for a module that takes none."""
    size = e.get("chunked", {}).get("size") or e.get("unchunked") or e.get("size", "")
    defines = [t for t in size.split() if t.startswith("-D") and not t.startswith("-DD=")]
    chunk = e["chunked"]["chunk"] if "chunked" in e else 1
    args = " ".join(["-DD=4"] + defines + ["--chunk %d" % chunk, "--cli"])
    return ["# RUN: rm -rf %t",
            "# RUN: %%python %%numeric/check_continuation.py --mirasc mirasc --miras miras "
            "--module %s %s --workdir %%t | FileCheck %%s --implicit-check-not=FAIL" % (
                e["module"], args),
            "# CHECK: sequential forward, split T = 1 steps",
            "# CHECK: sequential backward, split T = 1 steps",
            "# CHECK: miras run twice",
            "# CHECK: continuation: OK"]


def script(mode, name):
    """The text of test Examples/<mode>/<name>.test."""
    e = entries()[name]
    if mode == "reference":
        body = _reference(e)
    elif mode in ("chunked", "simt", "cuda-on-cpu"):
        body = _chunked(e, mode)
    elif mode == "ptx":
        body = _ptx(e)
    elif mode == "device":
        body = _device(e)
    elif mode == "step-backward":
        body = _step_backward(e)
    elif mode == "seq-backward":
        body = _seq_backward(e)
    elif mode == "continuation":
        body = _continuation(e)
    else:
        raise ValueError("unknown mode '%s'" % mode)
    header = ["# Generated from test/lit/Examples/manifest.py (entry %s, mode %s): do not "
              "edit." % (name, mode),
              "# %s (%s): %s." % (name, e["module"], MODES[mode])]
    return "\n".join(header + body) + "\n"


if ShTest is not object:
    class GeneratedTest(lit.Test.Test):
        """A test whose script is generated into the build tree when it runs: its source
        is that file (a module-level class, so lit's workers can unpickle it)."""

        def getSourcePath(self):
            return self.getExecPath()


class ExamplesFormat(ShTest):
    """Tests from the manifest; the directory holds no test files of its own."""

    def __init__(self):
        super().__init__(execute_external=False)

    def getTestsInDirectory(self, testSuite, path_in_suite, litConfig, localConfig):
        if path_in_suite[-1:] != ("Examples",):
            return
        for mode in MODES:
            for e in manifest.ENTRIES:
                if applies(e, mode):
                    yield GeneratedTest(testSuite, path_in_suite + (mode, e["name"] + ".test"),
                                        localConfig)

    def execute(self, test, litConfig):
        mode, leaf = test.path_in_suite[-2:]
        path = test.getExecPath()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(script(mode, leaf[:-len(".test")]))
        # The runner reads RUN/REQUIRES/CHECK from the test's source: the script just written.
        return super().execute(test, litConfig)


if __name__ == "__main__":
    import sys
    sys.stdout.write(script(sys.argv[1], sys.argv[2]))
