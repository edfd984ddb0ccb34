"""Checks reverse mode numerically on derived IR, independently of the compiler's
lowering: for each miras.module (linear memory, gd, no retention) read from
stdin in generic form (miras-opt --mlir-print-op-generic), the gradient the
step applies, (W - W') / lr, is compared with central finite differences of
L(W) = bias(W k, v). Both the bias region and the step function are evaluated
here with numpy in float64, one op at a time. Prints one line per module:
"<name>: max_rel_err=<e> OK" (or FAIL)."""
import re, sys
import numpy as np

# `%r = "dialect.op"(%a, %b) <{props}> : (operand types) -> result type`
OP = re.compile(r'^\s*(?:(%\w+) = )?"([\w.]+)"\(([^)]*)\)\s*(?:<\{(.*)\}>)?\s*:\s*\((.*?)\)\s*->\s*(.*)$')

def shape_of(t):
    """(4, 8) for tensor<4x8xf32>, () for a scalar."""
    t = t.strip()
    m = re.match(r'tensor<([\dx]*)x?(f32|i1)>', t)
    if not m:
        return ()
    dims = re.findall(r'(\d+)x', t)
    return tuple(int(d) for d in dims)

def constant(props, rtype):
    """The value of an arith.constant: a float, a splat or a dense list."""
    m = re.search(r'value = dense<(.*?)> : ', props)
    shp = shape_of(rtype)
    if m:
        body = m.group(1)
        if body.startswith('['):
            return np.array(eval(body.replace('true', '1').replace('false', '0')), dtype=float).reshape(shp)
        return np.full(shp, float(body.replace('true', '1').replace('false', '0')))
    m = re.search(r'value = ([-\d.e+]+) : f32', props)
    return float(m.group(1))

# arith.cmpf predicates by their enum value.
PRED = {1: np.equal, 2: np.greater, 3: np.greater_equal, 4: np.less, 5: np.less_equal}

def run(lines, env):
    """Evaluates op lines with `env` holding the block arguments; returns the yielded values."""
    for line in lines:
        m = OP.match(line)
        if not m:
            continue
        res, name, args, props, _, rtype = m.groups()
        a = [env[x.strip()] for x in args.split(',') if x.strip()]
        props = props or ''
        if name in ('miras.yield', 'func.return'):
            return a
        f = {
            'arith.addf': lambda: a[0] + a[1], 'arith.subf': lambda: a[0] - a[1],
            'arith.mulf': lambda: a[0] * a[1], 'arith.divf': lambda: a[0] / a[1],
            'arith.negf': lambda: -a[0],
            'arith.maximumf': lambda: np.maximum(a[0], a[1]),
            'arith.minimumf': lambda: np.minimum(a[0], a[1]),
            'arith.select': lambda: np.where(a[0], a[1], a[2]),
            'math.exp': lambda: np.exp(a[0]), 'math.log': lambda: np.log(a[0]),
            'math.tanh': lambda: np.tanh(a[0]), 'math.sqrt': lambda: np.sqrt(a[0]),
            'math.absf': lambda: np.abs(a[0]), 'math.powf': lambda: np.power(a[0], a[1]),
            'miras.sign': lambda: np.sign(a[0]),
            'miras.matvec': lambda: a[0] @ a[1], 'miras.vecmat': lambda: a[0] @ a[1],
            'miras.outer': lambda: np.outer(a[0], a[1]),
            'miras.sum': lambda: float(np.sum(a[0])),
            'miras.norm': lambda: float(np.linalg.norm(a[0])),
            'miras.row_sum': lambda: np.sum(a[0], axis=1),
            'miras.row_max': lambda: np.max(a[0], axis=1),
        }.get(name)
        if f:
            val = f()
        elif name == 'arith.constant':
            val = constant(props, rtype)
        elif name == 'arith.cmpf':
            val = PRED[int(re.search(r'predicate = (\d+)', props).group(1))](a[0], a[1])
        elif name == 'miras.broadcast':
            dims = re.search(r'dims = array<i64(?::\s*([\d, ]*))?>', props).group(1)
            shp = shape_of(rtype)
            if not dims:
                val = np.full(shp, a[0])
            elif dims.strip() == '0':
                val = np.repeat(a[0][:, None], shp[1], axis=1)
            else:
                val = np.repeat(a[0][None, :], shp[0], axis=0)
        elif name == 'miras.extract':
            idx = int(re.search(r'index = (\d+)', props).group(1))
            val = a[0][idx]
        else:
            raise SystemExit(f'no evaluator for {name}')
        env[res] = val
    raise SystemExit('no terminator')

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
