"""miras.compile / miras.load / Module: cache, diagnostics, validation, tensor handling."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
import torch

import miras
from conftest import BUILD, EXAMPLES
from inputs import call, random_inputs

GDN = EXAMPLES / "gated_deltanet.miras"


@pytest.fixture
def gdn():
    return miras.compile(GDN, D=8)


def test_metadata_is_what_miras_info_prints(gdn):
    info = subprocess.run([str(BUILD / "bin" / "miras"), "info", gdn.path], check=True,
                          capture_output=True, text=True).stdout
    assert gdn.metadata == json.loads(info)
    assert gdn.metadata["name"] == "gated_deltanet" and gdn.gate_names == ["eta", "alpha"]
    assert gdn.metadata["backward_segment"] > 0 and gdn.has_backward


def test_second_compile_is_a_cache_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRAS_CACHE_DIR", str(tmp_path / "cache"))
    first = miras.compile(GDN, D=8)
    start = time.perf_counter()
    again = miras.compile(GDN, D=8)
    assert again is first and time.perf_counter() - start < 0.05
    # Another process finds the library on disk and compiles nothing: the file is the
    # same, untouched.
    before = os.stat(first.path).st_mtime_ns
    script = f"import miras; print(miras.compile({str(GDN)!r}, D=8).path)"
    env = dict(os.environ, MIRAS_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([str(BUILD / "venv" / "bin" / "python"), "-c", script], env=env,
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out == first.path and os.stat(first.path).st_mtime_ns == before
    # Other parameters, options or source: another key, another library.
    assert miras.compile(GDN, D=16).path != first.path
    assert miras.compile(GDN, D=8, chunk=2).path != first.path
    copy = tmp_path / "gated_deltanet.miras"
    copy.write_text(GDN.read_text().replace("[0.85, 1]", "[0.8, 1]"))
    assert miras.compile(copy, D=8).path != first.path
    # Another compiler is another key: it runs, and its failure is raised.
    failing = tmp_path / "mirasc"
    failing.write_text("#!/bin/sh\necho 'this mirasc always fails' >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setenv("MIRAS_MIRASC", str(failing))
    with pytest.raises(miras.CompileError, match="this mirasc always fails") as err:
        miras.compile(GDN, D=8)
    assert err.value.returncode == 3


def test_bad_module_raises_the_located_diagnostic(tmp_path):
    bad = tmp_path / "bad.miras"
    bad.write_text("module bad {\n  param D = 4;\n  memory linear(dk = D, dv = D);\n"
                   "  bias l7;\n  retention none;\n  optimizer gd(lr = 0.1);\n}\n")
    with pytest.raises(miras.CompileError) as err:
        miras.compile(bad)
    text = str(err.value)
    assert f"{bad}:4:8: error: unknown bias 'l7'" in text
    assert "  bias l7;\n       ^" in text
    assert err.value.returncode == 1
    leftovers = [p for p in miras.cache_dir().rglob(".partial-*")]
    assert not leftovers, leftovers


def test_missing_file_and_bad_parameters():
    with pytest.raises(miras.CompileError, match="cannot read"):
        miras.compile(EXAMPLES / "no_such_module.miras")
    with pytest.raises(TypeError, match="is not a number"):
        miras.compile(GDN, D="64")
    with pytest.raises(miras.CompileError, match="--chunk expects"):
        miras.compile(GDN, chunk=0)


def test_load_rejects_a_file_that_is_not_a_module(tmp_path):
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(miras.MirasError) as err:
        miras.load(junk)
    assert err.value.status == "load error"
    loaded = miras.load(miras.compile(GDN, D=8).path)
    assert loaded.metadata["dk"] == 8


def test_shape_errors_name_the_tensor(gdn):
    x = random_inputs(gdn, 1, 5, 2)
    x["v"] = torch.randn(1, 5, 2, 7, dtype=torch.float64)
    with pytest.raises(miras.MirasError) as err:
        call(gdn, x)
    assert err.value.status == "shape error" and "'v'" in str(err.value)
    x = random_inputs(gdn, 1, 5, 2)
    x["eta"] = torch.rand(1, 4, 2, dtype=torch.float64)
    with pytest.raises(miras.MirasError, match="'eta'"):
        call(gdn, x)


def test_gate_and_state_names_are_checked(gdn):
    x = random_inputs(gdn, 1, 3, 1)
    with pytest.raises(TypeError, match="missing gate 'alpha'"):
        gdn(x["q"], x["k"], x["v"], eta=x["eta"])
    with pytest.raises(TypeError, match="unknown gate"):
        gdn(x["q"], x["k"], x["v"], eta=x["eta"], alpha=x["alpha"], beta=x["eta"])
    with pytest.raises(TypeError, match="unknown state"):
        gdn(x["q"], x["k"], x["v"], state={"S": x["W"]}, eta=x["eta"], alpha=x["alpha"])
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        gdn(x["q"], x["k"].numpy(force=True), x["v"], eta=x["eta"], alpha=x["alpha"])


def test_integer_tensors_are_refused(gdn):
    x = random_inputs(gdn, 1, 3, 1)
    x["q"] = torch.ones(1, 3, 1, 8, dtype=torch.int32)
    with pytest.raises(miras.MirasError) as err:
        call(gdn, x)
    assert err.value.status == "dtype error" and "'q'" in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_are_converted_not_misread(gdn, dtype):
    x = random_inputs(gdn, 2, 6, 2, dtype=dtype)
    o, states = call(gdn, x)
    assert o.dtype == dtype and states["W"].dtype == torch.float32
    exact = {n: t.detach().to(torch.float32) for n, t in x.items()}  # the same values
    o32, states32 = call(gdn, exact)
    assert torch.equal(o, o32.to(dtype)) and torch.equal(states["W"], states32["W"])


def test_non_contiguous_inputs_give_the_contiguous_results(gdn):
    x = random_inputs(gdn, 2, 6, 3, dtype=torch.float32)
    # The same values through strided views: [B, H, T, D] storage transposed to
    # [B, T, H, D], and a gate taken every other element of a wider tensor.
    strided = {}
    for name, t in x.items():
        if t.dim() == 4 and name in ("q", "k", "v"):
            strided[name] = t.detach().transpose(1, 2).contiguous().transpose(1, 2)
        else:
            wide = torch.stack([t.detach(), torch.full_like(t, float("nan"))], -1)
            strided[name] = wide[..., 0]
        assert not strided[name].is_contiguous() and torch.equal(strided[name], t)
        strided[name].requires_grad_()
    o, s = call(gdn, x)
    o2, s2 = call(gdn, strided)
    assert torch.equal(o, o2) and torch.equal(s["W"], s2["W"])
    g = torch.autograd.grad((o * o).sum() + s["W"].sum(), list(x.values()))
    g2 = torch.autograd.grad((o2 * o2).sum() + s2["W"].sum(), list(strided.values()))
    for a, b in zip(g, g2):
        assert torch.equal(a, b)


def test_missing_state_is_zeros_and_calls_continue_exactly(gdn):
    x = random_inputs(gdn, 1, 10, 2, dtype=torch.float32)
    gates = {g: x[g] for g in gdn.gate_names}
    o, s = gdn(x["q"], x["k"], x["v"], **gates)
    o0, s0 = gdn(x["q"], x["k"], x["v"], state={"W": torch.zeros_like(x["W"])}, **gates)
    assert torch.equal(o, o0) and torch.equal(s["W"], s0["W"])
    first = {n: t[:, :4] for n, t in list(x.items())[:5]}
    second = {n: t[:, 4:] for n, t in list(x.items())[:5]}
    oa, sa = gdn(first["q"], first["k"], first["v"], eta=first["eta"], alpha=first["alpha"])
    ob, sb = gdn(second["q"], second["k"], second["v"], state=sa, eta=second["eta"],
                 alpha=second["alpha"])
    assert torch.equal(torch.cat([oa, ob], 1), o) and torch.equal(sb["W"], s["W"])


def test_threads_do_not_change_results(gdn):
    x = random_inputs(gdn, 3, 9, 3, dtype=torch.float32)
    one = call(gdn, x, threads=1)
    three = call(gdn, x, threads=3)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1]["W"], three[1]["W"])
    with pytest.raises(ValueError, match="threads"):
        call(gdn, x, threads=-2)


def test_library_without_backward_runs_forward_and_refuses_gradients():
    m = miras.compile(GDN, D=8, backward=False)
    assert not m.has_backward and m.metadata["backward_segment"] == 0
    x = random_inputs(m, 1, 4, 1, dtype=torch.float32)
    o, _ = call(m, x)
    with pytest.raises(miras.MirasError, match="built without a backward pass"):
        o.sum().backward()


def test_the_gil_is_released_while_a_kernel_runs():
    m = miras.compile(GDN, D=64, backward=False)
    x = random_inputs(m, 1, 20000, 2, dtype=torch.float32)
    x = {n: t.detach() for n, t in x.items()}

    def ticks_while(busy):
        ticks = 0
        start = time.perf_counter()
        while busy():
            ticks += 1
        return ticks / (time.perf_counter() - start)

    # Pure-Python ticks per second alone, then while another thread runs the kernel:
    # with the GIL held by the call the main thread would get almost none (a switch
    # interval's worth before the call starts).
    stop = time.perf_counter() + 0.2
    alone = ticks_while(lambda: time.perf_counter() < stop)
    started, done = threading.Event(), threading.Event()

    def run():
        started.set()
        for _ in range(3):
            call(m, x, threads=1)
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    started.wait()
    time.sleep(0.01)  # into the first call
    during = ticks_while(lambda: not done.is_set())
    worker.join()
    assert during > 0.3 * alone, (during, alone)


def test_calls_from_threads_with_other_thread_counts_are_serialised(gdn):
    # Changing a library's thread count while another call runs on its pool would free
    # the pool under it: the binding serialises a library's calls.
    x = {n: t.detach() for n, t in random_inputs(gdn, 4, 16, 2, dtype=torch.float32).items()}
    want = call(gdn, x, threads=1)[0]
    failures = []

    def worker(threads):
        for _ in range(300):
            o, _ = call(gdn, x, threads=threads)
            if not torch.equal(o, want):
                failures.append(threads)

    workers = [threading.Thread(target=worker, args=(n,)) for n in (1, 2, 3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures


def test_backward_after_the_module_is_released():
    m = miras.load(miras.compile(GDN, D=8).path)  # not held by the compile cache
    x = random_inputs(m, 1, 4, 2, dtype=torch.float32)
    o, _ = call(m, x)
    del m
    import gc
    gc.collect()
    o.sum().backward()
    assert x["q"].grad is not None and x["q"].grad.abs().sum() > 0


def test_zero_length_is_a_shape_error(gdn):
    x = random_inputs(gdn, 1, 3, 1)
    with pytest.raises(miras.MirasError, match="B, T and H positive") as err:
        gdn(x["q"][:, :0], x["k"][:, :0], x["v"][:, :0], eta=x["eta"][:, :0],
            alpha=x["alpha"][:, :0])
    assert err.value.status == "shape error"


def test_check_finite_from_the_environment():
    # MIRAS_CHECK_FINITE=1 (read when a library is opened, so in a fresh process) makes a
    # NaN input an error naming the tensor and the index.
    script = "\n".join([
        "import torch, miras, sys",
        "sys.path.insert(0, %r)" % os.path.dirname(__file__),
        "from inputs import random_inputs",
        "m = miras.compile(%r, D=8)" % str(GDN),
        "x = random_inputs(m, 1, 3, 2)",
        "x['k'] = x['k'].detach().clone()",
        "x['k'][0, 2, 1, 5] = float('nan')",
        "try:",
        "    m(x['q'], x['k'], x['v'], eta=x['eta'], alpha=x['alpha'])",
        "except miras.MirasError as e:",
        "    print(e.status, '|', e)",
    ])
    env = dict(os.environ, MIRAS_CHECK_FINITE="1")
    out = subprocess.run([str(BUILD / "venv" / "bin" / "python"), "-c", script], env=env,
                         check=True, capture_output=True, text=True).stdout
    assert "non-finite value | " in out and "input tensor 'k' holds nan at [0, 2, 1, 5]" in out


def test_check_finite_per_module(gdn):
    m = miras.load(gdn.path)  # a handle of its own: the shared fixture stays unchecked
    assert m.check_finite is False
    x = random_inputs(m, 1, 3, 2)
    eta = x["eta"].detach().clone()
    eta[0, 1, 0] = float("inf")
    o, _ = m(x["q"], x["k"], x["v"], eta=eta, alpha=x["alpha"])  # unchecked: runs
    assert not torch.isfinite(o).all()
    m.check_finite = True
    with pytest.raises(miras.MirasError, match=r"input tensor 'eta' holds inf at \[0, 1, 0\]") as err:
        m(x["q"], x["k"], x["v"], eta=eta, alpha=x["alpha"])
    assert err.value.status == "non-finite value"
    # The backward checks too: a NaN adjoint of o.
    q = x["q"].detach().clone().requires_grad_()
    o, _ = m(q, x["k"], x["v"], eta=x["eta"], alpha=x["alpha"])
    with pytest.raises(miras.MirasError, match="adjoint tensor 'o' holds nan"):
        o.backward(torch.full_like(o, float("nan")))


def test_a_loss_on_the_final_state_alone(gdn):
    # Only the state reaches the loss: o's adjoint is zero.
    import eager
    x = random_inputs(gdn, 2, 5, 2)
    _, states = call(gdn, x)
    grads = torch.autograd.grad((states["W"] ** 2).sum(), list(x.values()))
    ref_x = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    _, ref_states = eager.run("gated_deltanet", gdn.metadata, ref_x)
    ref_grads = torch.autograd.grad((ref_states["W"] ** 2).sum(), list(ref_x.values()),
                                    allow_unused=True)
    assert ref_grads[0] is None and torch.equal(grads[0], torch.zeros_like(grads[0]))  # q: o only
    for name, a, b in list(zip(x, grads, ref_grads))[1:]:
        assert (a - b).abs().max() <= 1e-4 * b.abs().max(), name
