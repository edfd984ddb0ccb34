"""Checks the float mode of compiled kernels: subnormal floats are flushed to zero inside
<name>_forward and <name>_backward (FTZ and DAZ on x86, FZ on AArch64; a decaying state
reaches the subnormal range after a few thousand tokens, where x86 is about a hundred
times slower), and the caller's mode is restored after each call.

A DeltaNet that reads before its write (o_t = W_{t-1} q_t, test/numeric/modules/
before_write.miras) with k = v = 0, q = 1e30 and an initial state of subnormal entries
(1e-39): with subnormal inputs read as zero (DAZ), o is exactly 0; flushing results
alone (FTZ) would give o = D * 1e-9, a normal number. The final state (W, unchanged by
k = v = 0) and the backward's d_state_in from a subnormal d_state_out are 0 as well.
After each call numpy (in this process) must still produce a subnormal product, so the
kernel did not leave the mode on.

  check_float_mode.py --mirasc mirasc --module test/numeric/modules/before_write.miras --workdir DIR
"""
import argparse
import os
import subprocess
import sys

import numpy as np

import check_backward_kernel as BK


def caller_keeps_subnormals():
    return float(np.float32(1e-38) * np.float32(0.25)) != 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--mirasc', default='mirasc')
    p.add_argument('--module', required=True)
    p.add_argument('--workdir', required=True)
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    lib_path = os.path.join(a.workdir, 'libbefore_write.so')
    subprocess.run([a.mirasc, a.module, '-DD=4', '--backward', '-o', lib_path], check=True)
    lib = BK.Library(lib_path, 'before_write')
    B, T, H, D = 1, 3, 1, 4
    failed = 0

    def report(what, ok):
        nonlocal failed
        failed += not ok
        print('%s: %s' % (what, 'OK' if ok else 'FAIL'))

    report('numpy keeps subnormals before any call', caller_keeps_subnormals())
    q = np.full((B, T, H, D), 1e30, np.float32)
    k = np.zeros((B, T, H, D), np.float32)
    v = np.zeros((B, T, H, D), np.float32)
    eta = np.full((B, T, H), 0.5, np.float32)
    W0 = np.full((B, H, D, D), 1e-39, np.float32)
    report('the initial state is subnormal', 0 < W0[0, 0, 0, 0] < np.finfo(np.float32).tiny)
    o, (W,) = lib.forward(B, T, H, D, [q, k, v, eta], [W0])
    report('forward: o flushed to 0 (max |o| = %g)' % np.abs(o).max(), np.all(o == 0))
    report('forward: final state flushed to 0 (max |W| = %g)' % np.abs(W).max(),
           np.all(W == 0))
    report('numpy keeps subnormals after the forward', caller_keeps_subnormals())
    d_o = np.zeros_like(o)
    dW_T = np.full_like(W0, 1e-39)
    (dq, dk, dv, deta), (dW0,) = lib.backward(B, T, H, [q, k, v, eta], [W0], d_o, [dW_T])
    report('backward: the initial state\'s adjoint flushed to 0 (max = %g)'
           % np.abs(dW0).max(), np.all(dW0 == 0))
    report('numpy keeps subnormals after the backward', caller_keeps_subnormals())
    print('float mode: %s' % ('OK' if not failed else 'FAIL (%d)' % failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
