"""A float64 numpy evaluator of the step-level IR the compiler prints in generic form
(`mirasc ... --emit=derived|backward --mlir-print-op-generic`, `miras-opt
--mlir-print-op-generic`), one op at a time: what the tests use to check derived rules
numerically without the compiler's lowering. Unknown ops stop it with their name."""
import math
import re

import numpy as np

# `%r = "dialect.op"(%a, %b) <{props}> : (operand types) -> result type`
OP = re.compile(r'^\s*(?:(%\w+) = )?"([\w.]+)"\(([^)]*)\)\s*(?:<\{(.*)\}>)?\s*'
                r'(?:\{.*\}\s*)?:\s*\((.*?)\)\s*->\s*(.*)$')


def shape_of(t):
    """(4, 8) for tensor<4x8xf32>, () for a scalar."""
    t = t.strip()
    if not t.startswith('tensor<'):
        return ()
    return tuple(int(d) for d in re.findall(r'(\d+)x', t))


def constant(props, rtype):
    """The value of an arith.constant: a float, a splat or a dense list."""
    m = re.search(r'value = dense<(.*?)> : ', props)
    shp = shape_of(rtype)
    if m:
        body = m.group(1).replace('true', '1').replace('false', '0')
        if body.startswith('['):
            return np.array(eval(body), dtype=float).reshape(shp)
        return np.full(shp, float(body))
    m = re.search(r'value = ([-\d.eE+]+|true|false) : (f32|i1|f64)', props)
    v = m.group(1)
    return {'true': 1.0, 'false': 0.0}.get(v, None) if v in ('true', 'false') else float(v)


# arith.cmpf predicates by their enum value (ordered and unordered alike: no NaNs here).
PRED = {1: np.equal, 2: np.greater, 3: np.greater_equal, 4: np.less, 5: np.less_equal,
        6: np.not_equal, 8: np.equal, 9: np.greater, 10: np.greater_equal, 11: np.less,
        12: np.less_equal, 13: np.not_equal}

_erf = np.vectorize(math.erf, otypes=[float])

UNARY = {
    'arith.negf': lambda x: -x, 'math.exp': np.exp, 'math.log': np.log,
    'math.tanh': np.tanh, 'math.sqrt': np.sqrt, 'math.rsqrt': lambda x: 1 / np.sqrt(x),
    'math.absf': np.abs, 'math.erf': lambda x: _erf(x) if np.ndim(x) else math.erf(x),
    'math.cosh': np.cosh, 'math.sinh': np.sinh, 'miras.sign': np.sign,
    'miras.sum': lambda x: float(np.sum(x)), 'miras.norm': lambda x: float(np.linalg.norm(x)),
    'miras.row_sum': lambda x: np.sum(x, axis=1), 'miras.row_max': lambda x: np.max(x, axis=1),
}
BINARY = {
    'arith.addf': np.add, 'arith.subf': np.subtract, 'arith.mulf': np.multiply,
    'arith.divf': np.divide, 'arith.maximumf': np.maximum, 'arith.minimumf': np.minimum,
    'arith.maxnumf': np.fmax, 'arith.minnumf': np.fmin, 'math.powf': np.power,
    'miras.matvec': lambda a, x: a @ x, 'miras.vecmat': lambda x, a: x @ a,
    'miras.outer': np.outer,
}


def run(lines, env):
    """Evaluates op lines with `env` holding the block arguments; returns the values of
    the terminator (func.return or miras.yield)."""
    for line in lines:
        m = OP.match(line)
        if not m:
            continue
        res, name, args, props, _, rtype = m.groups()
        a = [env[x.strip()] for x in args.split(',') if x.strip()]
        props = props or ''
        if name in ('miras.yield', 'func.return'):
            return a
        if name in UNARY:
            val = UNARY[name](a[0])
        elif name in BINARY:
            val = BINARY[name](a[0], a[1])
        elif name == 'arith.select':
            val = np.where(a[0], a[1], a[2])
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
                val = np.repeat(np.asarray(a[0])[:, None], shp[1], axis=1)
            else:
                val = np.repeat(np.asarray(a[0])[None, :], shp[0], axis=0)
        elif name == 'miras.extract':
            val = np.asarray(a[0])[int(re.search(r'index = (\d+)', props).group(1))]
        else:
            raise SystemExit('ir_eval: no evaluator for %s' % name)
        if isinstance(val, np.ndarray) and val.ndim == 0:
            val = float(val)
        env[res] = val
    raise SystemExit('ir_eval: no terminator')


TAPE = re.compile(r'\{[^{}]*miras\.tape = (\d+)')


def taped(lines, env):
    """After run(step lines, env): the values of the step's products marked
    `miras.tape = i`, in order of i: the reverse step's last arguments, which the
    backward kernel takes from its recompute (miras-tape-recomputed-products)."""
    values = {}
    for line in lines:
        m, t = OP.match(line), TAPE.search(line)
        if m and t and m.group(1):
            values[int(t.group(1))] = env[m.group(1)]
    return [values[i] for i in range(len(values))]


def function(text, sym):
    """(argument names, argument types, argument miras.names, op lines) of func.func @sym
    in generic form."""
    lines = text.splitlines()
    i = next(n for n, l in enumerate(lines)
             if '"func.func"' in l and ('sym_name = "%s"' % sym) in l)
    names = re.findall(r'miras\.name = "(\w+)"', lines[i].split('function_type')[0])
    j = next(n for n in range(i, len(lines)) if '"func.return"' in lines[n])
    header = lines[i + 1]
    args = re.findall(r'(%\w+):', header)
    types = re.findall(r'%\w+: ((?:tensor<[^>]*>)|f32)', header)
    return args, types, names, lines[i + 2:j + 1]
