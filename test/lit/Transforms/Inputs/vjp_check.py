"""Checks reverse mode numerically on derived IR, independently of the compiler's
lowering: for each miras.module (linear memory, gd, no retention) read from
stdin in generic form (miras-opt --mlir-print-op-generic), the gradient the
step applies, (W - W') / lr, is compared with central finite differences of
L(W) = bias(W k, v). Both the bias region and the step function are evaluated
here with numpy in float64, one op at a time. Prints one line per module:
"<name>: max_rel_err=<e> OK" (or FAIL)."""
import os, re, sys
import numpy as np

# The step-level IR evaluator shared with test/numeric's checks.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', '..', '..', 'numeric'))
from ir_eval import run  # noqa: E402

def region(text, start_pattern, end_name):
    """Block arguments and op lines of the region that opens after the line
    matching `start_pattern` and ends with its `end_name` terminator."""
    lines = text.splitlines()
    i = next(n for n, l in enumerate(lines) if re.search(start_pattern, l))
    j = next(n for n in range(i, len(lines)) if f'"{end_name}"' in lines[n])
    args = re.findall(r'(%\w+):', lines[i + 1])
    return args, lines[i + 2:j + 1]

def check(text, lr, seed):
    """Max relative error of the applied gradient at one random point."""
    bias_args, bias = region(text, r'"miras\.bias"', 'miras.yield')
    step_args, step = region(text, r'sym_name = "step"', 'func.return')
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((4, 4)) * 0.5
    q, k, v = (rng.standard_normal(4) for _ in range(3))
    loss = lambda W: run(bias, {bias_args[0]: W @ k, bias_args[1]: v})[0]
    Wn = run(step, dict(zip(step_args, [W, q, k, v])))[0]
    grad = (W - Wn) / lr
    fd = np.zeros_like(W)
    h = 1e-6
    for i in range(4):
        for j in range(4):
            E = np.zeros_like(W); E[i, j] = h
            fd[i, j] = (loss(W + E) - loss(W - E)) / (2 * h)
    return np.max(np.abs(grad - fd)) / max(1e-12, np.max(np.abs(fd)))

text = sys.stdin.read()
modules = re.split(r'(?="miras\.module")', text)[1:]
for mod in modules:
    name = re.search(r'sym_name = "(\w+)"', mod).group(1)
    lr = float(re.search(r'lr = ([-\d.e+]+)', mod).group(1))
    err = max(check(mod, lr, s) for s in range(5))
    print(f'{name}: max_rel_err={err:.2e} {"OK" if err < 1e-5 else "FAIL"}')
