"""Checks that a compiled module continues a sequence exactly (miras_abi.h
miras_state_role): any split of a sequence into calls, each given every state the one
before returned (the weights, and with chunk C > 1 the anchors and the chunk position),
gives the numbers of one call over the whole sequence.

For each algorithm (sequential; chunked where it applies) the module is built once
(with --backward unless --no-backward) and run through its C entry points (ctypes) on
random inputs (gates drawn from their declared `sample` ranges):
  * forward: one call over T tokens against the chained calls of every split below,
    o and every final state (anchors and chunk position included);
  * backward: the chained backward of a split (the second call's state adjoints,
    anchors' included, passed back as the first call's final-state adjoints) against
    the backward of the whole sequence, for the splits marked so;
  * the sequential against the chunked library on the whole sequence and on T = 1
    decode steps;
  * the glue refuses a chunk position that is not an integer in [0, C) and leaves
    state_out as it was;
  * with --miras, the plain flow on the command line: `miras run` into a directory,
    then a second `miras run` given those files (all but o.npy) among its inputs.
Splits (C the module's chunk): at chunk boundaries, inside a chunk, across chunk
boundaries (lengths C - 1 and C + 1), and T = 1 steps throughout.

Prints one line per check, then "continuation: OK" (or FAIL); exits 1 on a failure.

  check_continuation.py --mirasc mirasc --module examples/gated_deltanet.miras -DD=8 --chunk 4
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from check_backward_kernel import BackwardArgs, ForwardArgs, ptr, ptrs


class Library:
    def __init__(self, path, info):
        self.lib = ctypes.CDLL(path)
        self.name = info['name']
        self.info = info
        self.dv = info['dv']
        self.states = info['states']

    def checkpoint_buffers(self, B, T, H):
        """NaN-filled checkpoint buffers of the carried states (miras_abi.h
        MIRAS_CHECKPOINTS)."""
        S, C = self.info['backward_segment'], self.info['chunk']
        n = (T + C - 1 + S - 1) // S
        return [np.full((B, H, n) + tuple(s['shape']), np.nan, np.float32)
                for s in self.states if s['role'] == 'carried']

    def forward(self, inputs, states_in, status=False, states_out=None, checkpoints=None):
        q, k, v, *gates = inputs
        B, T, H = q.shape[:3]
        o = np.zeros((B, T, H, self.dv), np.float32)
        outs = states_out or [np.zeros((B, H) + tuple(s['shape']), np.float32)
                              for s in self.states]
        args = ForwardArgs(B, T, H, ptr(q), ptr(k), ptr(v), ptrs(gates), ptrs(states_in),
                           ptrs(outs), ptr(o), ptrs(checkpoints))
        rc = getattr(self.lib, self.name + '_forward')(ctypes.byref(args))
        if status:
            return rc
        if rc != 0:
            raise SystemExit('%s_forward returned %d' % (self.name, rc))
        return o, outs

    def backward(self, inputs, states_in, d_o, d_states_out, d_states=None, checkpoints=None):
        q, k, v, *gates = inputs
        B, T, H = q.shape[:3]
        d_inputs = [np.full_like(x, np.nan) for x in inputs]
        d_states = d_states or [np.full((B, H) + tuple(s['shape']), np.nan, np.float32)
                                for s in self.states]
        dq, dk, dv, *dgates = d_inputs
        args = BackwardArgs(B, T, H, ptr(q), ptr(k), ptr(v), ptrs(gates), ptrs(states_in),
                            ptr(d_o), ptrs(d_states_out), ptr(dq), ptr(dk), ptr(dv),
                            ptrs(dgates), ptrs(d_states), ptrs(checkpoints))
        rc = getattr(self.lib, self.name + '_backward')(ctypes.byref(args))
        if rc != 0:
            raise SystemExit('%s_backward returned %d' % (self.name, rc))
        return d_inputs, d_states


def at_offset(x, offset):
    """A copy of x whose data starts `offset` bytes past a 64-byte boundary."""
    if x is None:
        return None
    raw = np.empty(x.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    y = raw[start:start + x.nbytes].view(np.float32).reshape(x.shape)
    y[...] = x
    assert y.ctypes.data % 64 == offset
    return y


def draw_inputs(rng, info, B, T, H):
    """q, k (unit rows), v and the gates, in ABI order."""
    dk, dv, steps = info['dk'], info['dv'], info['steps']
    per_step = (steps,) if steps > 1 else ()

    def unit(shape):
        x = rng.standard_normal(shape)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    inputs = [unit((B, T, H, dk)), unit((B, T, H) + per_step + (dk,)),
              rng.standard_normal((B, T, H) + per_step + (dv,))]
    for g in info['gates']:
        shape = (B, T, H) + ((g['dim'],) if g['kind'] == 'channel' else ()) + \
            ((steps,) if g['per_step'] else ())
        lo, hi = g['sample']
        inputs.append(rng.uniform(lo, hi, shape))
    return [np.ascontiguousarray(x, np.float32) for x in inputs]


def initial_states(rng, info, B, H):
    """Small random carried states (a sequence that did not start from zeros); None
    (NULL: position 0, anchors unread) for an anchor and the chunk position."""
    states = []
    for s in info['states']:
        if s['role'] != 'carried':
            states.append(None)
            continue
        x = rng.uniform(0.2, 1.0, (B, H) + tuple(s['shape']))
        # Rows on the simplex: a valid point for f-divergence retentions too.
        x /= x.sum(axis=-1, keepdims=True) if len(s['shape']) > 1 else x.sum()
        states.append(np.ascontiguousarray(x, np.float32))
    return states


def token_slice(inputs, a, b):
    return [np.ascontiguousarray(x[:, a:b]) for x in inputs]


def chained_forward(lib, inputs, states, cuts):
    T = inputs[0].shape[1]
    bounds = [0] + list(cuts) + [T]
    os_, cur = [], states
    for a, b in zip(bounds, bounds[1:]):
        o, cur = lib.forward(token_slice(inputs, a, b), cur)
        os_.append(o)
    return np.concatenate(os_, axis=1), cur


def chained_backward(lib, inputs, states, cuts, d_o, d_final, saved=False):
    """The backward of the split calls, last first, each given the state adjoints the
    one after it returned; (input adjoints concatenated over time, initial-state
    adjoints). With `saved`, each call's forward saves its checkpoints, and its
    backward reads them."""
    T = inputs[0].shape[1]
    bounds = [0] + list(cuts) + [T]
    starts, saves = [states], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        piece = token_slice(inputs, a, b)
        saves.append(lib.checkpoint_buffers(piece[0].shape[0], b - a, piece[0].shape[2])
                     if saved else None)
        starts.append(lib.forward(piece, starts[-1], checkpoints=saves[-1])[1])
    pieces, d_states = [], d_final
    for (a, b), start, saved_here in reversed(list(zip(zip(bounds, bounds[1:]), starts,
                                                       saves))):
        d_in, d_states = lib.backward(token_slice(inputs, a, b), start,
                                      np.ascontiguousarray(d_o[:, a:b]), d_states,
                                      checkpoints=saved_here)
        pieces.insert(0, d_in)
    d_inputs = [np.concatenate([p[i] for p in pieces], axis=1)
                for i in range(len(inputs))]
    return d_inputs, d_states


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float('inf')
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def splits(T, C):
    """name -> the cut points of one split of [0, T)."""
    out = {'at chunk boundaries': list(range(C, T, C)),
           'inside a chunk': [C // 2 + 1] if C > 2 else [1],
           'across chunk boundaries': [t for t in range(C - 1, T, C + 1) if t > 0],
           'T = 1 steps': list(range(1, T))}
    return {k: sorted(set(v)) for k, v in out.items() if v}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--mirasc', default='mirasc')
    parser.add_argument('--miras', default='miras')
    parser.add_argument('--cli', action='store_true',
                        help='also the plain flow of two `miras run` calls')
    parser.add_argument('--module', required=True)
    parser.add_argument('-D', action='append', default=[], dest='defines')
    parser.add_argument('--chunk', type=int, default=None,
                        help="mirasc --chunk (default: the module's)")
    parser.add_argument('--B', type=int, default=1)
    parser.add_argument('--T', type=int, default=None, help='default 3 C + 2')
    parser.add_argument('--H', type=int, default=2)
    parser.add_argument('--segment', type=int, default=None,
                        help='--backward-segment (default 2 C: segments hold whole chunks)')
    parser.add_argument('--no-backward', action='store_true')
    parser.add_argument('--seed', type=int, default=0)
    # The sequential library's chained calls run the same operations in the same order:
    # --tol. The chunked library runs a call's head and tail token by token and whole
    # chunks in the dual or scan form, so a split moves tokens from one to the other,
    # which round differently (sums in another order): --algorithm-tol, as between the
    # two libraries.
    parser.add_argument('--tol', type=float, default=2e-5)
    parser.add_argument('--algorithm-tol', type=float, default=1e-4)
    parser.add_argument('--mirasc-arg', action='append', default=[])
    parser.add_argument('--workdir', default=None)
    a = parser.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix='miras-cont-')
    os.makedirs(work, exist_ok=True)
    defines = ['-D' + d for d in a.defines] + (['--chunk=%d' % a.chunk] if a.chunk else [])
    failed = 0

    def report(what, err, tol):
        nonlocal failed
        ok = err <= tol
        failed += not ok
        print('%s: max_rel_err=%.2e %s' % (what, err, 'OK' if ok else 'FAIL'))

    libs = {}
    for algorithm in ('sequential', 'chunked'):
        path = os.path.join(work, 'lib_%s.so' % algorithm)
        extra = [] if a.no_backward else ['--backward', '--backward-segment=%d' % (
            a.segment or 2 * (a.chunk or 1))]
        res = subprocess.run([a.mirasc, a.module] + defines + extra + a.mirasc_arg +
                             ['--algorithm=' + algorithm, '-o', path],
                             capture_output=True, text=True)
        if res.returncode != 0:
            if algorithm == 'chunked' and 'does not apply' in res.stderr:
                print('chunked: does not apply to this module (sequential only)')
                continue
            sys.stderr.write(res.stderr)
            raise SystemExit('mirasc failed for --algorithm=%s' % algorithm)
        info = json.loads(subprocess.run([a.miras, 'info', path], check=True,
                                         capture_output=True, text=True).stdout)
        libs[algorithm] = Library(path, info)

    info = libs['sequential'].info
    C = info['chunk']
    T = a.T or 3 * C + 2
    roles = [s['role'] for s in info['states']]
    names = [s['name'] for s in info['states']]
    expected = ['carried'] * roles.count('carried')
    if C > 1:
        expected += ['anchor'] * (len(roles) - len(expected) - 1) + ['chunk_position']
    roles_ok = roles == expected and (C == 1 or roles.count('anchor') >= 1)
    print('states %s: roles %s %s' % (names, roles, 'OK' if roles_ok else 'FAIL'))
    failed += not roles_ok

    rng = np.random.default_rng(a.seed)
    B, H = a.B, a.H
    inputs = draw_inputs(rng, info, B, T, H)
    states = initial_states(rng, info, B, H)
    d_o = rng.standard_normal((B, T, H, info['dv'])).astype(np.float32)
    d_final = [rng.standard_normal((B, H) + tuple(s['shape'])).astype(np.float32)
               if s['role'] != 'chunk_position' else None for s in info['states']]
    input_names = ['q', 'k', 'v'] + [g['name'] for g in info['gates']]

    whole = {}
    for algorithm, lib in libs.items():
        tol = a.tol if algorithm == 'sequential' else a.algorithm_tol
        o, outs = lib.forward(inputs, states)
        whole[algorithm] = (o, outs)
        if C > 1:
            position = outs[names.index('chunk_position')]
            ok = np.all(position == T % C)
            failed += not ok
            print('%s: chunk_position after %d tokens = %s %s' % (
                algorithm, T, sorted(set(position.ravel().tolist())), 'OK' if ok else 'FAIL'))
        for split, cuts in splits(T, C).items():
            o_s, outs_s = chained_forward(lib, inputs, states, cuts)
            err = max([rel(o_s, o)] + [rel(x, y) for x, y in zip(outs_s, outs)])
            report('%s forward, split %s %s: o and %s' % (
                algorithm, split, cuts if len(cuts) < 8 else '(%d calls)' % (len(cuts) + 1),
                ', '.join(names)), err, tol)
        if a.no_backward:
            continue
        d_in, d_st = lib.backward(inputs, states, d_o, d_final)
        for split in ('inside a chunk', 'across chunk boundaries', 'T = 1 steps'):
            cuts = splits(T, C).get(split)
            if not cuts:
                continue
            d_in_s, d_st_s = chained_backward(lib, inputs, states, cuts, d_o, d_final)
            err = max([rel(x, y) for x, y in zip(d_in_s, d_in)] +
                      [rel(x, y) for x, y in zip(d_st_s, d_st)])
            report('%s backward, split %s: d%s, d%s' % (
                algorithm, split, ', d'.join(input_names), ', d'.join(names)), err, tol)
            # Each call's forward saving its checkpoints (calls that start inside a
            # chunk count them in chunk-aligned time), its backward reading them (not
            # the CUDA kernel run on the CPU: check_backward_kernel.py).
            if '--cuda-on-cpu' in a.mirasc_arg:
                continue
            d_in_c, d_st_c = chained_backward(lib, inputs, states, cuts, d_o, d_final,
                                              saved=True)
            err = max([rel(x, y) for x, y in zip(d_in_c, d_in_s)] +
                      [rel(x, y) for x, y in zip(d_st_c, d_st_s)])
            report('%s backward from saved checkpoints, split %s' % (algorithm, split),
                   err, tol)

    # The kernels sweep a state that does not start on a cache line in an
    # aligned copy (in calls of 8 tokens or more): every alignment of the
    # caller's state buffers (in place, the state adjoints too) gives the
    # numbers of a 64-byte aligned one, bit for bit.
    T_long = max(T, 16)
    long_inputs = draw_inputs(rng, info, B, T_long, H)
    long_d_o = rng.standard_normal((B, T_long, H, info['dv'])).astype(np.float32)
    for algorithm, lib in libs.items():
        results = {}
        for offset in (0, 4, 16, 32):
            outs = [at_offset(np.zeros((B, H) + tuple(s['shape']), np.float32), offset)
                    for s in lib.states]
            o_m, outs_m = lib.forward(long_inputs, [at_offset(x, offset) for x in states],
                                      states_out=outs)
            got = [o_m] + outs_m
            if not a.no_backward:
                d_moved = [at_offset(np.full((B, H) + tuple(s['shape']), np.nan, np.float32),
                                     offset) for s in lib.states]
                d_in_m, d_st_m = lib.backward(long_inputs, states, long_d_o, d_final,
                                              d_states=d_moved)
                got += d_in_m + d_st_m
            results[offset] = got
            if offset == 0:
                continue
            err = max(np.max(np.abs(x - y)) for x, y in zip(got, results[0]))
            failed += not err == 0
            print('%s, state buffers %d bytes past a cache line (T = %d): forward%s against '
                  'aligned ones: max |diff| = %.2e %s' % (
                      algorithm, offset, T_long, '' if a.no_backward else ' and backward',
                      err, 'OK' if err == 0 else 'FAIL'))

    if 'chunked' in libs:
        (o1, s1), (o2, s2) = whole['sequential'], whole['chunked']
        report('sequential vs chunked, whole sequence', max(
            [rel(o2, o1)] + [rel(x, y) for x, y in zip(s2, s1)]), a.algorithm_tol)
        steps = list(range(1, T))
        o1, s1 = chained_forward(libs['sequential'], inputs, states, steps)
        o2, s2 = chained_forward(libs['chunked'], inputs, states, steps)
        report('sequential vs chunked, T = 1 steps', max(
            [rel(o2, o1)] + [rel(x, y) for x, y in zip(s2, s1)]), a.algorithm_tol)

    if C > 1:
        # Bad chunk positions: refused before anything is written.
        lib = libs['sequential']
        p = names.index('chunk_position')
        for bad in (-1.0, 0.5, float(C), float('nan')):
            given = list(states)
            given[p] = np.full((B, H, 1), bad, np.float32)
            outs = [np.full((B, H) + tuple(s['shape']), 7.0, np.float32) for s in lib.states]
            rc = lib.forward(token_slice(inputs, 0, 2), given, status=True, states_out=outs)
            ok = rc == 8 and all(np.all(x == 7.0) for x in outs)
            failed += not ok
            print('chunk_position %s: status %d (8: invalid argument), state_out unchanged '
                  '%s' % (bad, rc, 'OK' if ok else 'FAIL'))

    if a.cli:
        cli_flow(a.miras, libs['chunked' if 'chunked' in libs else 'sequential'],
                 inputs, states, names, input_names, T, C, work, report,
                 a.algorithm_tol if 'chunked' in libs else a.tol)
    print('continuation: %s' % ('FAIL' if failed else 'OK'))
    return 1 if failed else 0


def cli_flow(miras, lib, inputs, states, names, input_names, T, C, work, report, tol):
    """`miras run` over [0, cut) into a directory, then over [cut, T) given those files
    (all but o.npy) and the next tokens, against one `miras run` over [0, T)."""
    cut = C + C // 2 + 1 if C > 1 else T // 2
    dirs = {n: os.path.join(work, n) for n in ('whole', 'first', 'second', 'in1', 'in2', 'in0')}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    for n, x in zip(input_names, inputs):
        np.save(os.path.join(dirs['in0'], n + '.npy'), x)
        np.save(os.path.join(dirs['in1'], n + '.npy'), x[:, :cut])
        np.save(os.path.join(dirs['in2'], n + '.npy'), x[:, cut:])
    for n, s in zip(names, states):
        if s is not None:
            np.save(os.path.join(dirs['in0'], n + '.npy'), s)
            np.save(os.path.join(dirs['in1'], n + '.npy'), s)

    def run(indir, outdir):
        subprocess.run([miras, 'run', lib.lib._name, '--inputs', indir, '--outputs', outdir],
                       check=True, capture_output=True, text=True)
    run(dirs['in0'], dirs['whole'])
    run(dirs['in1'], dirs['first'])
    for n in names:
        os.replace(os.path.join(dirs['first'], n + '.npy'), os.path.join(dirs['in2'], n + '.npy'))
    run(dirs['in2'], dirs['second'])
    o = np.concatenate([np.load(os.path.join(dirs['first'], 'o.npy')),
                        np.load(os.path.join(dirs['second'], 'o.npy'))], axis=1)
    err = rel(o, np.load(os.path.join(dirs['whole'], 'o.npy')))
    for n in names:
        err = max(err, rel(np.load(os.path.join(dirs['second'], n + '.npy')),
                           np.load(os.path.join(dirs['whole'], n + '.npy'))))
    report('miras run twice (split at %d, the second given the first\'s outputs but o) '
           'vs once: o and %s' % (cut, ', '.join(names)), err, tol)


if __name__ == '__main__':
    sys.exit(main())
