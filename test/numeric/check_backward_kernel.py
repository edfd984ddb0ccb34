"""Checks the sequence-level backward kernel of a library built with `mirasc --backward`.

Builds lib<name>.so twice (backward segment S smaller than T and not dividing it, and
S >= T), runs <name>_forward and <name>_backward through ctypes on random [B, T, H]
inputs (gates drawn from their declared ranges), and compares the adjoints of q, k, v,
every gate and every initial state
  * with the float64 composition of @step / @step_backward over the sequence, both
    evaluated from the module's IR (mirasc --emit=backward, ir_eval.py): the reverse
    sweep the kernel implements, independent of its lowering;
  * with central finite differences of the compiled forward itself, along one random
    direction per tensor, of the loss L = sum(do * o) + sum(dS_T * S_T);
  * between the two segment lengths.
Prints one line per tensor and check, then "backward kernel: OK" (or FAIL); exits 1 on a
failure.

  check_backward_kernel.py --mirasc mirasc --module examples/deltanet.miras -DD=4
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np

import ir_eval
from check_step_backward import draw, gate_ranges

F32P = ctypes.POINTER(ctypes.c_float)
F32PP = ctypes.POINTER(F32P)


class ForwardArgs(ctypes.Structure):
    _fields_ = [('batch', ctypes.c_int64), ('length', ctypes.c_int64),
                ('heads', ctypes.c_int64), ('q', F32P), ('k', F32P), ('v', F32P),
                ('gates', F32PP), ('state_in', F32PP), ('state_out', F32PP), ('o', F32P),
                ('checkpoints', F32PP)]


class BackwardArgs(ctypes.Structure):
    _fields_ = [('batch', ctypes.c_int64), ('length', ctypes.c_int64),
                ('heads', ctypes.c_int64), ('q', F32P), ('k', F32P), ('v', F32P),
                ('gates', F32PP), ('state_in', F32PP), ('d_o', F32P),
                ('d_state_out', F32PP), ('d_q', F32P), ('d_k', F32P), ('d_v', F32P),
                ('d_gates', F32PP), ('d_state_in', F32PP), ('checkpoints', F32PP)]


def ptr(a):
    return a.ctypes.data_as(F32P)


def ptrs(arrays):
    """A C array of float pointers; None entries are NULL."""
    if not arrays:
        return None
    return (F32P * len(arrays))(*[ptr(a) if a is not None else None for a in arrays])


class Metadata(ctypes.Structure):
    """The leading fields of miras_module_metadata (miras_abi.h), up to the states."""
    _fields_ = [('abi_version', ctypes.c_uint32), ('name', ctypes.c_char_p),
                ('source', ctypes.c_char_p), ('compiler', ctypes.c_char_p),
                ('dk', ctypes.c_int64), ('dv', ctypes.c_int64), ('chunk', ctypes.c_int64),
                ('steps', ctypes.c_int64), ('read_after_write', ctypes.c_int32),
                ('num_params', ctypes.c_int32), ('params', ctypes.c_void_p),
                ('num_gates', ctypes.c_int32), ('gates', ctypes.c_void_p),
                ('num_states', ctypes.c_int32), ('states', ctypes.c_void_p)]


class StateInfo(ctypes.Structure):
    """miras_state_info (miras_abi.h, ABI 8): all of it, as arrays of it are indexed."""
    _fields_ = [('name', ctypes.c_char_p), ('rank', ctypes.c_int32),
                ('shape', ctypes.c_int64 * 4), ('role', ctypes.c_int32),
                ('anchor_of', ctypes.c_int32), ('init', ctypes.c_int32),
                ('init_scale', ctypes.c_double), ('init_seed', ctypes.c_uint64)]


class Module:
    """The step's argument groups read from the IR (StepSignature's order: states,
    anchors (chunk > 1: the weights at the chunk's start, one per weight), q, k, v,
    gates)."""

    def __init__(self, text, chunk):
        self.text = text
        self.chunk = chunk
        self.step_args, types, self.names, self.step = ir_eval.function(text, 'step')
        self.back_args, _, _, self.back = ir_eval.function(text, 'step_backward')
        self.shapes = [ir_eval.shape_of(t) for t in types]
        self.q = self.names.index('q')
        self.na = sum(n.endswith('_anchor') for n in self.names)
        self.ns = self.q - self.na
        self.ranges = gate_ranges(text)

    def states(self):
        return range(self.ns)

    def inputs(self):
        return range(self.q, len(self.names))


class Library:
    """The forward and backward of a compiled module on its carried states. A chunked
    module's further states (its anchors and chunk position, miras_abi.h
    miras_state_role) are passed as NULL, a call that starts a sequence, and their
    outputs dropped."""

    def __init__(self, path, name):
        self.lib = ctypes.CDLL(path)
        self.forward_fn = getattr(self.lib, name + '_forward')
        self.backward_fn = getattr(self.lib, name + '_backward')
        metadata = getattr(self.lib, name + '_metadata')
        metadata.restype = ctypes.POINTER(Metadata)
        m = metadata().contents
        infos = ctypes.cast(m.states, ctypes.POINTER(StateInfo))
        self.extra = [tuple(infos[i].shape[:infos[i].rank]) for i in range(m.num_states)
                      if infos[i].role != 0]
        self.chunk = m.chunk

    def checkpoint_buffers(self, T, segment, states_in):
        """NaN-filled [B, H, N, shape] buffers (miras_abi.h MIRAS_CHECKPOINTS), one per
        carried state."""
        n = (T + self.chunk - 1 + segment - 1) // segment
        return [np.full(s.shape[:2] + (n,) + s.shape[2:], np.nan, np.float32)
                for s in states_in]

    def _extra_outputs(self, B, H, fill):
        return [np.full((B, H) + shape, fill, np.float32) for shape in self.extra]

    def forward(self, B, T, H, dv, inputs, states_in, checkpoints=None, status=False):
        """(o, final states) of the compiled forward, float32; with `checkpoints`
        (checkpoint_buffers) it saves them there; with `status`, its status only."""
        o = np.zeros((B, T, H, dv), np.float32)
        outs = [np.zeros_like(s) for s in states_in]
        q, k, v, *gates = inputs
        # Named, so that the arrays live until the call returns.
        all_outs = outs + self._extra_outputs(B, H, 0.0)
        args = ForwardArgs(B, T, H, ptr(q), ptr(k), ptr(v), ptrs(gates),
                           ptrs(list(states_in) + [None] * len(self.extra)),
                           ptrs(all_outs), ptr(o), ptrs(checkpoints))
        rc = self.forward_fn(ctypes.byref(args))
        if status:
            return rc
        if rc != 0:
            raise SystemExit('forward returned %d' % rc)
        return o, outs

    def backward(self, B, T, H, inputs, states_in, d_o, d_states_out, checkpoints=None):
        q, k, v, *gates = inputs
        d_inputs = [np.full_like(x, np.nan) for x in inputs]
        d_states = [np.full_like(s, np.nan) for s in states_in]
        dq, dk, dv, *dgates = d_inputs
        none = [None] * len(self.extra)
        all_d_states = d_states + self._extra_outputs(B, H, np.nan)  # alive until return
        args = BackwardArgs(B, T, H, ptr(q), ptr(k), ptr(v), ptrs(gates),
                            ptrs(list(states_in) + none), ptr(d_o),
                            ptrs(list(d_states_out) + none) if d_states_out is not None
                            else None, ptr(dq), ptr(dk), ptr(dv), ptrs(dgates),
                            ptrs(all_d_states), ptrs(checkpoints))
        rc = self.backward_fn(ctypes.byref(args))
        if rc != 0:
            raise SystemExit('backward returned %d' % rc)
        return d_inputs, d_states


class Entry(ctypes.Structure):
    """miras_module_entry (miras_abi.h, ABI 10)."""
    _fields_ = [('abi_version', ctypes.c_uint32), ('metadata', ctypes.c_void_p),
                ('forward', ctypes.c_void_p), ('forward_range', ctypes.c_void_p),
                ('backward', ctypes.c_void_p), ('backward_range', ctypes.c_void_p)]


def check_glue(report_status, lib, plain, B, T, H, inputs, states_in, d_o, d_states_out):
    """The glue's answers to bad arguments (miras_abi.h status codes), and the entry
    tables of a library with and without --backward."""
    entry = Entry.in_dll(lib.lib, 'miras_module_v1')
    report_status('entry table has backward and backward_range',
                  entry.abi_version == 10 and bool(entry.backward) and bool(entry.backward_range))
    plain_entry = Entry.in_dll(plain, 'miras_module_v1')
    report_status('without --backward: NULL backward entries',
                  not plain_entry.backward and not plain_entry.backward_range)
    q, k, v, *gates = inputs
    d_inputs = [np.zeros_like(x) for x in inputs]
    d_states = [np.zeros_like(s) for s in states_in]
    dq, dk, dv, *dgates = d_inputs

    def call(changes=None, begin=None, end=None, batch=B, length=T):
        a = BackwardArgs(batch, length, H, ptr(q), ptr(k), ptr(v), ptrs(gates),
                         ptrs(states_in), ptr(d_o), ptrs(d_states_out), ptr(dq), ptr(dk),
                         ptr(dv), ptrs(dgates), ptrs(d_states))
        for field, value in (changes or {}).items():
            setattr(a, field, value)
        if begin is None:
            return lib.backward_fn(ctypes.byref(a))
        fn = lib.lib[lib.backward_fn.__name__ + '_range']
        return fn(ctypes.byref(a), ctypes.c_int64(begin), ctypes.c_int64(end))

    lib.backward_fn.argtypes = None
    report_status('NULL args -> MIRAS_ERR_NULL_POINTER', lib.backward_fn(None) == 1)
    report_status('NULL d_q -> MIRAS_ERR_NULL_POINTER', call({'d_q': None}) == 1)
    report_status('NULL d_o -> MIRAS_ERR_NULL_POINTER', call({'d_o': None}) == 1)
    if states_in:
        report_status('NULL d_state_in -> MIRAS_ERR_NULL_POINTER',
                      call({'d_state_in': None}) == 1)
    if gates:
        report_status('NULL d_gates -> MIRAS_ERR_NULL_POINTER', call({'d_gates': None}) == 1)
    report_status('batch 0 -> MIRAS_ERR_SHAPE', call(batch=0) == 2)
    report_status('overflowing length -> MIRAS_ERR_SHAPE', call(length=2 ** 61) == 2)
    # The shapes fit in int64, the workspace (ceil(T / S) checkpoints per pair) cannot be
    # allocated (hundreds of TB, past any address space, overcommit or not): the glue
    # says so before touching any buffer.
    report_status('unallocatable workspace -> MIRAS_ERR_ALLOC', call(length=2 ** 44) == 9)
    report_status('range past B * H -> MIRAS_ERR_INVALID_ARGUMENT',
                  call(begin=0, end=B * H + 1) == 8)
    report_status('empty range -> MIRAS_OK', call(begin=1, end=1) == 0)
    if states_in:
        # Checkpoints: a NULL entry is refused before anything is written, and a
        # library without a backward has none to save.
        null_entry = (F32P * len(states_in))()
        report_status('NULL checkpoints entry -> MIRAS_ERR_NULL_POINTER',
                      call({'checkpoints': null_entry}) == 1)
        o = np.zeros(d_o.shape, np.float32)
        outs = [np.zeros_like(s) for s in states_in]
        forward_args = ForwardArgs(B, T, H, ptr(q), ptr(k), ptr(v), ptrs(gates),
                                   ptrs(states_in), ptrs(outs), ptr(o), null_entry)
        report_status('forward: NULL checkpoints entry -> MIRAS_ERR_NULL_POINTER',
                      lib.forward_fn(ctypes.byref(forward_args)) == 1)
        buffers = lib.checkpoint_buffers(T, 1, states_in)
        forward_args.checkpoints = ptrs(buffers)
        report_status('forward without --backward: checkpoints -> MIRAS_ERR_UNSUPPORTED',
                      getattr(plain, lib.forward_fn.__name__)(ctypes.byref(forward_args)) == 10)
    # d_state_in in the place of state_in, and of d_state_out (miras_abi.h).
    want = lib.backward(B, T, H, inputs, states_in, d_o, d_states_out)
    if states_in:
        in_place = [s.copy() for s in states_in]
        call({'state_in': ptrs(in_place), 'd_state_in': ptrs(in_place)})
        report_status('d_state_in == state_in gives the same adjoints',
                      all(np.array_equal(a, b) for a, b in zip(in_place, want[1])))
        in_place = [s.copy() for s in d_states_out]
        call({'d_state_out': ptrs(in_place), 'd_state_in': ptrs(in_place)})
        report_status('d_state_in == d_state_out gives the same adjoints',
                      all(np.array_equal(a, b) for a, b in zip(in_place, want[1])))


def reference_backward(m, B, T, H, inputs, states_in, d_o, d_states_out):
    """The sweep in float64 from the IR: forward storing every state, then the reverse
    step from the last token to the first."""
    d_inputs = [np.zeros(x.shape) for x in inputs]
    d_states = [np.zeros(s.shape) for s in states_in]
    ns, na, C = m.ns, m.na, m.chunk
    for b in range(B):
        for h in range(H):
            S = [states_in[i][b, h].astype(float) for i in range(ns)]
            history = []
            tokens = []
            taped = []  # the step's products the reverse step takes (ir_eval.taped)
            for t in range(T):
                x = [inp[b, t, h].astype(float) if inp[b, t, h].ndim else float(inp[b, t, h])
                     for inp in inputs]
                history.append(S)
                tokens.append(x)
                anchors = history[t - t % C][:na]
                env = dict(zip(m.step_args, S + anchors + x))
                S = ir_eval.run(m.step, env)[:ns]
                taped.append(ir_eval.taped(m.step, env))
            dS = [d[b, h].astype(float) for d in d_states_out]
            d_anchors = [0.0] * na
            for t in reversed(range(T)):
                seeds = dS + [d_o[b, t, h].astype(float)]
                anchors = history[t - t % C][:na]
                adj = ir_eval.run(m.back, dict(zip(m.back_args, history[t] + anchors +
                                                   tokens[t] + seeds + taped[t])))
                dS = list(adj[:ns])
                d_anchors = [a + d for a, d in zip(d_anchors, adj[ns:ns + na])]
                if t % C == 0:  # the anchor is the state before this token
                    dS = [d + d_anchors[i] if i < na else d for i, d in enumerate(dS)]
                    d_anchors = [0.0] * na
                for i, a in enumerate(adj[ns + na:]):
                    d_inputs[i][b, t, h] = a
            for i in range(ns):
                d_states[i][b, h] = dS[i]
    return d_inputs, d_states


def rel(a, b):
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-6)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--mirasc', default='mirasc')
    parser.add_argument('--module', required=True)
    parser.add_argument('-D', action='append', default=[], dest='defines')
    parser.add_argument('--B', type=int, default=1)
    parser.add_argument('--T', type=int, default=7)
    parser.add_argument('--H', type=int, default=2)
    parser.add_argument('--segment', type=int, default=3)
    parser.add_argument('--chunk', type=int, default=None,
                        help="mirasc --chunk (default: the module's)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tol', type=float, default=1e-3,
                        help='float32 kernel vs float64 sweep, relative to the largest entry')
    parser.add_argument("--fd-tol", type=float, default=1e-2)
    parser.add_argument("--segment-tol", type=float, default=1e-5,
                        help="the two segment lengths against each other (the same "
                        "sums on the CPU; with --simt-on-cpu a recomputed state's sums "
                        "may be split differently)")
    parser.add_argument("--fd-h", type=float, default=4e-3,
                        help="finite-difference step, relative to each tensor")
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--miras', default=None,
                        help="also run `miras grad` (1 and 3 threads) on the same tensors")
    parser.add_argument('--mirasc-arg', action='append', default=[],
                        help='one more mirasc argument of the --backward builds '
                        '(e.g. --simt-on-cpu)')
    parser.add_argument('--glue-checks', action='store_true',
                        help='also the entry tables and the answers to bad arguments')
    args = parser.parse_args()
    defines = ['-D' + d for d in args.defines]
    if args.chunk:
        defines.append('--chunk=%d' % args.chunk)
    work = args.workdir or tempfile.mkdtemp(prefix='miras-bwd-')
    os.makedirs(work, exist_ok=True)

    text = subprocess.run([args.mirasc, args.module] + defines +
                          ['--emit=backward', '--mlir-print-op-generic'],
                          check=True, capture_output=True, text=True).stdout
    chunk = int(next(l for l in text.splitlines() if '"miras.module"' in l)
                .split('chunk = ')[1].split(' ')[0])
    m = Module(text, chunk)
    name = next(l for l in text.splitlines() if '"miras.module"' in l)
    name = name.split('sym_name = "')[1].split('"')[0]
    libs = []
    # mirasc rounds the segment up to a multiple of the chunk.
    effective = [-(-segment // chunk) * chunk for segment in (args.segment, args.T + 1)]
    for segment in (args.segment, args.T + 1):
        path = os.path.join(work, 'lib%s_s%d.so' % (name, segment))
        subprocess.run([args.mirasc, args.module] + defines +
                       ['--backward', '--backward-segment=%d' % segment, '-o', path] +
                       args.mirasc_arg,
                       check=True)
        libs.append(Library(path, name))

    B, T, H = args.B, args.T, args.H
    rng = np.random.default_rng(args.seed)
    inputs = [np.asarray([[[draw(rng, m.names[i], m.shapes[i], m.ranges) for _ in range(H)]
                           for _ in range(T)] for _ in range(B)], np.float32)
              for i in m.inputs()]
    # Small initial states: the sweep then starts away from a zero state, which would
    # hide the terms of the state's own adjoint.
    states_in = [0.3 * np.asarray([[draw(rng, 'S', m.shapes[i], {}) for _ in range(H)]
                                   for _ in range(B)], np.float32) for i in m.states()]
    dv = m.shapes[m.names.index('v')][-1]
    d_o = rng.standard_normal((B, T, H, dv)).astype(np.float32)
    d_states_out = [rng.standard_normal(s.shape).astype(np.float32) for s in states_in]

    names = [m.names[i] for i in m.inputs()] + [m.names[i] for i in m.states()]
    got = [sum(libs[0].backward(B, T, H, inputs, states_in, d_o, d_states_out), [])]
    got.append(sum(libs[1].backward(B, T, H, inputs, states_in, d_o, d_states_out), []))
    want = sum(reference_backward(m, B, T, H, inputs, states_in, d_o, d_states_out), [])
    failed = 0

    def report(what, n, err, tol):
        nonlocal failed
        ok = err < tol and np.isfinite(err)
        failed += not ok
        print('d%s %s: max_rel_err=%.2e %s' % (n, what, err, 'OK' if ok else 'FAIL'))

    for n, a, b, c in zip(names, got[0], got[1], want):
        report('vs float64 sweep (S=%d)' % effective[0], n, rel(a, c), args.tol)
        report('S=%d vs S=%d' % tuple(effective), n, rel(a, b), args.segment_tol)

    # Checkpoints saved by the forward (miras_abi.h MIRAS_CHECKPOINTS): the forward's
    # numbers unchanged, checkpoint c the state after c * S tokens, and the backward
    # reading them gives the recomputing backward's adjoints (bit for bit when the
    # forward is the sequential algorithm, whose states the first pass recomputes).
    o_plain, final_plain = libs[0].forward(B, T, H, dv, inputs, states_in)
    # The CUDA kernel run on the CPU reads flat buffers, not the per-pair views the
    # saving forward calls it on: such a library refuses to save (the CUDA backward
    # computes its own checkpoints).
    flat_kernel = '--cuda-on-cpu' in args.mirasc_arg
    if flat_kernel:
        buffers = libs[0].checkpoint_buffers(T, effective[0], states_in)
        rc = libs[0].forward(B, T, H, dv, inputs, states_in, buffers, status=True)
        failed += rc != 10
        print('--cuda-on-cpu: forward saving checkpoints -> MIRAS_ERR_UNSUPPORTED %s'
              % ('OK' if rc == 10 else 'FAIL (%d)' % rc))
    for lib, segment in zip([] if flat_kernel else libs, effective):
        buffers = lib.checkpoint_buffers(T, segment, states_in)
        o_saving, final_saving = lib.forward(B, T, H, dv, inputs, states_in, buffers)
        same = np.array_equal(o_saving, o_plain) and all(
            np.array_equal(a, b) for a, b in zip(final_saving, final_plain))
        failed += not same
        print('S=%d: forward saving checkpoints gives the same o and states %s'
              % (segment, 'OK' if same else 'FAIL'))
        for c in range(-(-T // segment)):
            want_states = states_in if c == 0 else lib.forward(
                B, c * segment, H, dv, [np.ascontiguousarray(x[:, :c * segment]) for x in inputs],
                states_in)[1]
            for n, buf, w in zip([m.names[i] for i in m.states()], buffers, want_states):
                err = rel(buf[:, :, c], w)
                report('checkpoint %d (S=%d) vs forward over %d tokens'
                       % (c, segment, c * segment), n, err, args.segment_tol)
        from_saved = sum(lib.backward(B, T, H, inputs, states_in, d_o, d_states_out,
                                      buffers), [])
        recomputed = got[0] if segment == effective[0] else got[1]
        for n, a, b in zip(names, from_saved, recomputed):
            report('from saved checkpoints vs recomputed (S=%d)' % segment, n, rel(a, b),
                   args.segment_tol)
        if T > segment:
            # The backward reads them (and skips its own pass): a moved checkpoint
            # moves the adjoints.
            buffers[0][:, :, 1] += 0.25
            moved = sum(lib.backward(B, T, H, inputs, states_in, d_o, d_states_out,
                                     buffers), [])
            changed = any(not np.array_equal(a, b) for a, b in zip(moved, from_saved))
            failed += not changed
            print('S=%d: a moved checkpoint moves the adjoints %s'
                  % (segment, 'OK' if changed else 'FAIL'))

    # Finite differences of the compiled forward, one random direction per tensor.
    def loss(ins, sts):
        o, outs = libs[0].forward(B, T, H, dv, ins, sts)
        return float(np.sum(d_o.astype(float) * o)) + sum(
            float(np.sum(d.astype(float) * s)) for d, s in zip(d_states_out, outs))

    tensors = inputs + states_in
    for j, (n, x) in enumerate(zip(names, tensors)):
        scale = float(np.sqrt(np.mean(np.square(x)))) or 1.0
        u = rng.standard_normal(x.shape).astype(np.float32)
        h = args.fd_h * scale

        def at(step):
            moved = [y + step * u if i == j else y for i, y in enumerate(tensors)]
            return loss(moved[:len(inputs)], moved[len(inputs):])

        def central(step):
            return (at(step) - at(-step)) / (2 * step)
        # Richardson's extrapolation: the O(h^2) truncation error (an MLP's
        # curvature at a small D) cancels, leaving O(h^4) and float32 noise.
        fd = (4 * central(h / 2) - central(h)) / 3
        adjoint = got[0][j].astype(float)
        an = float(np.sum(adjoint * u))
        # Relative to the typical size of <adjoint, u> for a standard normal u (the
        # adjoint's norm) too: a direction nearly orthogonal to the adjoint would
        # otherwise compare two small numbers made of float32 noise.
        scale = max(abs(fd), abs(an), float(np.linalg.norm(adjoint)), 1e-6)
        report('vs finite differences', n, abs(fd - an) / scale, args.fd_tol)
    if args.miras:
        # The runtime's named interface and the CLI: .npy files in, d<name>.npy out.
        dirs = {d: os.path.join(work, d) for d in ('inputs', 'adjoints')}
        for d in dirs.values():
            os.makedirs(d, exist_ok=True)
        for n, x in zip([m.names[i] for i in m.inputs()], inputs):
            np.save(os.path.join(dirs['inputs'], n + '.npy'), x)
        for i, x in zip(m.states(), states_in):
            np.save(os.path.join(dirs['inputs'], m.names[i] + '.npy'), x)
        np.save(os.path.join(dirs['adjoints'], 'o.npy'), d_o)
        for i, x in zip(m.states(), d_states_out):
            np.save(os.path.join(dirs['adjoints'], m.names[i] + '.npy'), x)
        for threads in (1, 3):
            out = os.path.join(work, 'grad%d' % threads)
            subprocess.run([args.miras, 'grad', os.path.join(work, 'lib%s_s%d.so' % (
                name, args.segment)), '--inputs', dirs['inputs'], '--adjoints',
                dirs['adjoints'], '--outputs', out, '--threads', str(threads)], check=True,
                stdout=subprocess.DEVNULL)
            for n, a in zip(names, got[0]):
                b = np.load(os.path.join(out, 'd' + n + '.npy'))
                report('miras grad --threads %d vs %s_backward' % (threads, name), n,
                       rel(b, a), 1e-6)

        # A wrongly shaped adjoint is named in the runtime's error.
        bad = os.path.join(work, 'bad_adjoints')
        os.makedirs(bad, exist_ok=True)
        np.save(os.path.join(bad, 'o.npy'), d_o[:, :-1])
        run = subprocess.run([args.miras, 'grad', os.path.join(work, 'lib%s_s%d.so' % (
            name, args.segment)), '--inputs', dirs['inputs'], '--adjoints', bad,
            '--outputs', os.path.join(work, 'bad_out')], capture_output=True, text=True)
        ok = run.returncode != 0 and "adjoint tensor 'o': expected shape" in run.stderr
        failed += not ok
        print('miras grad: wrongly shaped o.npy refused %s' % ('OK' if ok else 'FAIL: ' +
                                                               run.stderr.strip()))

    if args.glue_checks:
        path = os.path.join(work, 'lib%s_forward_only.so' % name)
        subprocess.run([args.mirasc, args.module] + defines + ['-o', path], check=True)

        def report_status(what, ok):
            nonlocal failed
            failed += not ok
            print('glue: %s %s' % (what, 'OK' if ok else 'FAIL'))
        check_glue(report_status, libs[0], ctypes.CDLL(path), B, T, H, inputs, states_in,
                   d_o, d_states_out)
    print('backward kernel: %s' % ('OK' if not failed else 'FAIL (%d)' % failed))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
