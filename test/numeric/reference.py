"""Independent float64 numpy references for miras memory modules.

Written from /work/shared/SPEC.md (sections 3, 5, 6, 7) without looking at the compiler.
Two families of references live here, on purpose written differently:

1. ``CLOSED``: the recurrences of the SPEC section 6 table, typed in as matrix formulas
   (DeltaNet as ``W (I - eta k k^T) + eta v k^T``, never through an error signal), plus
   parallel (attention-like / chunk matmul) forms for a few of them.
2. ``run_generic``: the MIRAS composition bias -> error signal psi -> gradient
   ``g = psi k^T`` -> retention + optimizer -> read, per token, with the chunk anchor
   rule of section 7. psi comes either from a closed form (``PSI``) or from central finite
   differences of the loss function written in numpy (``LOSSES``), which is how the
   compiler's symbolic differentiation of user biases is verified.

Layout (SPEC section 8): q, k [B,T,H,Dk]; v [B,T,H,Dv]; scalar gate [B,T,H]; channel gate
[B,T,H,Dk|Dv]; state W [B,H,Dv,Dk]. All references return (o [B,T,H,Dv], W_final).

Conventions fixed here where the SPEC is silent (see ``CONVENTIONS``):
* chunk C > 1 with order = before_gradient: the gradient of token t is evaluated at
  ``y = a_t (.) W_anchor k_t`` (the current token's decay applied to the anchor).
* chunk C > 1 with implicit: the residual is ``W_anchor k_t - v_t``.
* chunks are t = 0..C-1, C..2C-1, ... of every sequence; the last one may be partial.
"""

import numpy as np

CONVENTIONS = __doc__

# --------------------------------------------------------------------------------------
# small helpers (everything is vectorised over the leading [B, H] axes)


def _outer(a, b):
    """a [..., Dv], b [..., Dk] -> [..., Dv, Dk]"""
    return a[..., :, None] * b[..., None, :]


def _mv(W, x):
    """W [..., Dv, Dk], x [..., Dk] -> [..., Dv]"""
    return np.einsum("...ij,...j->...i", W, x)


def _eye(n):
    return np.eye(n, dtype=np.float64)


def _as64(inputs):
    return {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}


def _init_state(inp):
    B, T, H = inp["k"].shape[:3]
    Dk, Dv = inp["k"].shape[-1], inp["v"].shape[-1]
    W0 = inp.get("W")
    if W0 is None:
        return np.zeros((B, H, Dv, Dk))
    return np.array(W0, dtype=np.float64, copy=True)


def _tok(x, t):
    """token t of a [B,T,H,...] tensor -> [B,H,...]"""
    return x[:, t]


# --------------------------------------------------------------------------------------
# 1. Closed forms of the SPEC section 6 table (sequential, one formula per model)


def _closed_loop(inp, step, read_after=True):
    inp = _as64(inp)
    q, k, v = inp["q"], inp["k"], inp["v"]
    B, T, H, _ = q.shape
    W = _init_state(inp)
    o = np.zeros((B, T, H, v.shape[-1]))
    for t in range(T):
        Wn = step(W, t, inp)
        o[:, t] = _mv(Wn if read_after else W, q[:, t])
        W = Wn
    return o, W


def closed_linear_attention(inp, params):
    # W_t = W_{t-1} + v k^T
    return _closed_loop(inp, lambda W, t, x: W + _outer(x["v"][:, t], x["k"][:, t]))


def closed_retnet(inp, params):
    # W_t = a W_{t-1} + v k^T   (a = gamma, constant)
    a = float(params["gamma"])
    return _closed_loop(inp, lambda W, t, x: a * W + _outer(x["v"][:, t], x["k"][:, t]))


def closed_mamba2(inp, params):
    # W_t = alpha_t W_{t-1} + v k^T
    def step(W, t, x):
        return x["alpha"][:, t][..., None, None] * W + _outer(x["v"][:, t], x["k"][:, t])
    return _closed_loop(inp, step)


def closed_hgrn2(inp, params):
    # HGRN2: W_t = W_{t-1} Diag(alpha_t) + v (1 - alpha_t)^T, written with alpha
    # alone: the key the host passes must be 1 - alpha for the module to match.
    def step(W, t, x):
        a = x["alpha"][:, t]
        D = np.einsum("...k,kl->...kl", a, _eye(W.shape[-1]))
        return W @ D + _outer(x["v"][:, t], 1.0 - a)
    return _closed_loop(inp, step)


def closed_deltaproduct(inp, params):
    # W_t = W_{t-1} prod_j (I - beta_j k_j k_j^T) + beta_j v_j k_j^T, step by step
    k, v, beta = inp["k"], inp["v"], inp["beta"]
    n = k.shape[3]

    def step(W, t, x):
        for j in range(n):
            kj, vj, bj = k[:, t, :, j], v[:, t, :, j], beta[:, t, :, j]
            W = W @ _delta_matrices(kj, bj) + bj[..., None, None] * _outer(vj, kj)
        return W
    return _closed_loop(inp, step)


def closed_gla(inp, params):
    # W_t = W_{t-1} Diag(alpha_t) + v k^T    (alpha along Dk)
    def step(W, t, x):
        D = np.einsum("...k,kl->...kl", x["alpha"][:, t], _eye(W.shape[-1]))
        return W @ D + _outer(x["v"][:, t], x["k"][:, t])
    return _closed_loop(inp, step)


def closed_gla_dv(inp, params):
    # W_t = Diag(alpha_t) W_{t-1} + v k^T    (alpha along Dv)
    def step(W, t, x):
        D = np.einsum("...k,kl->...kl", x["alpha"][:, t], _eye(W.shape[-2]))
        return D @ W + _outer(x["v"][:, t], x["k"][:, t])
    return _closed_loop(inp, step)


def _delta_matrices(k, eta):
    """(I - eta k k^T) for k [B,H,Dk], eta [B,H]"""
    Dk = k.shape[-1]
    return _eye(Dk) - eta[..., None, None] * _outer(k, k)


def closed_deltanet(inp, params, read_after=True):
    # W_t = W_{t-1} (I - eta_t k k^T) + eta_t v k^T
    def step(W, t, x):
        k, v, eta = x["k"][:, t], x["v"][:, t], x["eta"][:, t]
        return W @ _delta_matrices(k, eta) + eta[..., None, None] * _outer(v, k)
    return _closed_loop(inp, step, read_after)


def closed_before_write(inp, params):
    # DeltaNet, o_t = W_{t-1} q_t
    return closed_deltanet(inp, params, read_after=False)


def closed_gated_deltanet(inp, params):
    # W_t = alpha_t W_{t-1} (I - eta_t k k^T) + eta_t v k^T
    def step(W, t, x):
        k, v, eta, a = x["k"][:, t], x["v"][:, t], x["eta"][:, t], x["alpha"][:, t]
        return a[..., None, None] * W @ _delta_matrices(k, eta) + eta[..., None, None] * _outer(v, k)
    return _closed_loop(inp, step)


def closed_rwkv7_simple(inp, params):
    # W_t = W_{t-1} Diag(alpha_t) (I - eta_t k k^T) + eta_t v k^T
    def step(W, t, x):
        k, v, eta, a = x["k"][:, t], x["v"][:, t], x["eta"][:, t], x["alpha"][:, t]
        D = np.einsum("...k,kl->...kl", a, _eye(W.shape[-1]))
        return W @ D @ _delta_matrices(k, eta) + eta[..., None, None] * _outer(v, k)
    return _closed_loop(inp, step)


def closed_ttt_linear(inp, params):
    # W_t = W_{t-1} - eta (W_{t-1} k - v) k^T, eta constant
    lr = float(params["inner_lr"])
    def step(W, t, x):
        k, v = x["k"][:, t], x["v"][:, t]
        return W - lr * _outer(_mv(W, k) - v, k)
    return _closed_loop(inp, step)


def closed_longhorn(inp, params):
    # W_t = W_{t-1} (I - c k k^T) + c v k^T,  c = beta / (1 + beta ||k||^2)
    def step(W, t, x):
        k, v, b = x["k"][:, t], x["v"][:, t], x["eta"][:, t]
        c = b / (1.0 + b * np.sum(k * k, axis=-1))
        return W @ _delta_matrices(k, c) + c[..., None, None] * _outer(v, k)
    return _closed_loop(inp, step)


def closed_coupled(inp, params):
    # W_t = s/(s+eta) W_{t-1} - s eta/(s+eta) (W_{t-1} k - v) k^T
    #     = W_{t-1} (lam I - zeta k k^T) + zeta v k^T,  lam = s/(s+eta), zeta = eta lam
    s = float(params["s"])
    def step(W, t, x):
        k, v, eta = x["k"][:, t], x["v"][:, t], x["eta"][:, t]
        lam = s / (s + eta)
        zeta = eta * lam
        M = lam[..., None, None] * _eye(k.shape[-1]) - zeta[..., None, None] * _outer(k, k)
        return W @ M + zeta[..., None, None] * _outer(v, k)
    return _closed_loop(inp, step)


def _closed_chunk_parallel(inp, chunk, decay_anchor):
    """Chunked l2/gd with a scalar decay, in a parallel (matmul) form per chunk.

    Sequential rule (SPEC section 7): W_t = a_t W_{t-1} - eta_t r_t k_t^T with
    r_t = (a_t if decay_anchor else 1) W_a k_t - v_t, W_a the chunk anchor. Unrolled inside
    a chunk with A_t = prod_{s<=t} a_s (products inside the chunk):
        W_t = A_t W_a - sum_{s<=t} (A_t / A_s) eta_s r_s k_s^T
        o_t = A_t W_a q_t - sum_{s<=t} (A_t / A_s) (k_s . q_t) eta_s r_s
    """
    inp = _as64(inp)
    q, k, v, eta, a = inp["q"], inp["k"], inp["v"], inp["eta"], inp["alpha"]
    B, T, H, _ = q.shape
    W = _init_state(inp)
    o = np.zeros((B, T, H, v.shape[-1]))
    for c0 in range(0, T, chunk):
        sl = slice(c0, min(T, c0 + chunk))
        L = sl.stop - sl.start
        # move to [B, H, L, D]
        Q = q[:, sl].transpose(0, 2, 1, 3)
        K = k[:, sl].transpose(0, 2, 1, 3)
        V = v[:, sl].transpose(0, 2, 1, 3)
        E = eta[:, sl].transpose(0, 2, 1)
        Aa = a[:, sl].transpose(0, 2, 1)
        logA = np.cumsum(np.log(Aa), axis=-1)              # [B,H,L]
        A = np.exp(logA)
        Y = np.einsum("bhvk,bhlk->bhlv", W, K)               # W_a k_s
        R = (Aa[..., None] if decay_anchor else 1.0) * Y - V  # r_s
        ratio = np.exp(logA[..., :, None] - logA[..., None, :])  # A_t / A_s
        mask = np.tril(np.ones((L, L)))
        S = ratio * mask * np.einsum("bhtk,bhsk->bhts", Q, K)  # [B,H,t,s]
        O = A[..., None] * np.einsum("bhvk,bhtk->bhtv", W, Q) - np.einsum(
            "bhts,bhsv->bhtv", S, E[..., None] * R)
        o[:, sl] = O.transpose(0, 2, 1, 3)
        wl = np.exp(logA[..., -1:] - logA) * E                # A_L / A_s * eta_s
        W = A[..., -1][..., None, None] * W - np.einsum("bhs,bhsv,bhsk->bhvk", wl, R, K)
    return o, W


def closed_chunked(inp, params):
    return _closed_chunk_parallel(inp, 4, decay_anchor=True)


def closed_chunked_decoupled(inp, params):
    return _closed_chunk_parallel(inp, 8, decay_anchor=False)


# Parallel (attention) forms of the dot-bias models, a third formulation for the self-test:
# o_t = D_t W_0 q_t + sum_{s<=t} (prod_{s<r<=t} a_r) (k_s . q_t) v_s
def parallel_decay_attention(inp, alpha=None):
    inp = _as64(inp)
    q, k, v = inp["q"], inp["k"], inp["v"]
    B, T, H, _ = q.shape
    W0 = _init_state(inp)
    a = np.ones((B, T, H)) if alpha is None else np.broadcast_to(alpha, (B, T, H))
    logA = np.cumsum(np.log(a), axis=1).transpose(0, 2, 1)   # [B,H,T]
    ratio = np.exp(logA[..., :, None] - logA[..., None, :]) * np.tril(np.ones((T, T)))
    S = ratio * np.einsum("bthk,bshk->bhts", q, k)
    o = np.einsum("bhts,bshv->bthv", S, v) + np.exp(logA).transpose(0, 2, 1)[..., None] * \
        np.einsum("bhvk,bthk->bthv", W0, q)
    WT = np.exp(logA[..., -1])[..., None, None] * W0 + np.einsum(
        "bhs,bshv,bshk->bhvk", np.exp(logA[..., -1:] - logA), v, k)
    return o, WT


CLOSED = {
    "linear_attention": closed_linear_attention,
    "retnet": closed_retnet,
    "mamba2": closed_mamba2,
    "gla": closed_gla,
    "gla_dv": closed_gla_dv,
    "deltanet": closed_deltanet,
    "gated_deltanet": closed_gated_deltanet,
    "rwkv7_simple": closed_rwkv7_simple,
    "rwkv7": closed_rwkv7_simple,
    "hgrn2": closed_hgrn2,
    "deltaproduct": closed_deltaproduct,
    "ttt_linear": closed_ttt_linear,
    "longhorn": closed_longhorn,
    "before_write": closed_before_write,
    "coupled": closed_coupled,
    "chunked": closed_chunked,
    "chunked_decoupled": closed_chunked_decoupled,
}

# --------------------------------------------------------------------------------------
# 2. Generic composition: bias (psi) + retention + optimizer + read + chunk
#
# psi functions take (y, v, g) with y, v [..., Dv] and g a dict of bias arguments, each
# already broadcastable against y (scalars, or [..., 1]). Loss functions take the same and
# return [...] (the sum over the last axis is part of the loss).


def _nrm(e):
    return np.sqrt(np.sum(e * e, axis=-1, keepdims=True))


def psi_dot(y, v, g):
    return -2.0 * v


def psi_l2(y, v, g):
    return y - v


def psi_lp(y, v, g):
    p = g["p"]
    e = y - v
    return p * np.sign(e) * np.abs(e) ** (p - 1)


def psi_lp_smooth(y, v, g):
    p, kappa, eps = g["p"], g.get("kappa", 10.0), g.get("eps", 1e-6)
    e = y - v
    return p * np.tanh(kappa * e) * (e * e + eps) ** ((p - 1) / 2)


def psi_huber(y, v, g):
    d = g["delta"]
    return np.clip(y - v, -d, d)


def psi_huber_norm(y, v, g):
    e = y - v
    return e * np.minimum(1.0, g["delta"] / _nrm(e))


def psi_value_shift(y, v, g):
    e = y - v
    return e + g["delta"] * e / _nrm(e)


def psi_logcosh(y, v, g):
    return np.tanh(y - v)


def psi_pseudo_huber(y, v, g):
    e = y - v
    return e / np.sqrt(e * e + g["c"])


PSI = {
    "dot": psi_dot, "l2": psi_l2, "lp": psi_lp, "lp_smooth": psi_lp_smooth,
    "huber": psi_huber, "huber_norm": psi_huber_norm, "value_shift": psi_value_shift,
    "logcosh": psi_logcosh, "pseudo_huber": psi_pseudo_huber,
}


# Losses (SPEC section 3), written as plain functions of y and v; they are differentiated
# numerically. They must work for np.longdouble.
def _H(a, d):
    a = np.abs(a)
    return np.where(a <= d, 0.5 * a * a, d * (a - 0.5 * d))


def loss_dot(y, v, g):
    return -2.0 * np.sum(y * v, axis=-1)


def loss_l2(y, v, g):
    return 0.5 * np.sum((y - v) ** 2, axis=-1)


def loss_lp(y, v, g):
    return np.sum(np.abs(y - v) ** g["p"], axis=-1)


def loss_huber(y, v, g):
    return np.sum(_H(y - v, g["delta"]), axis=-1)


def loss_huber_norm(y, v, g):
    return _H(_nrm(y - v), g["delta"])[..., 0]


def loss_value_shift(y, v, g):
    # max_{||dv|| <= delta} 1/2 ||y - v - dv||^2, attained at dv = -delta e/||e||
    return 0.5 * ((_nrm(y - v) + g["delta"]) ** 2)[..., 0]


def loss_logcosh(y, v, g):
    return np.sum(np.log(np.cosh(y - v)), axis=-1)


def loss_pseudo_huber(y, v, g):
    return np.sum(np.sqrt((y - v) ** 2 + g["c"]), axis=-1)


LOSSES = {
    "dot": loss_dot, "l2": loss_l2, "lp": loss_lp, "huber": loss_huber,
    "huber_norm": loss_huber_norm, "value_shift": loss_value_shift,
    "logcosh": loss_logcosh, "pseudo_huber": loss_pseudo_huber,
}

FD_STEP = 1e-6


def fd_psi(loss, y, v, g, h=FD_STEP):
    """psi = dL/dy by central differences, (L(y + h e_j) - L(y - h e_j)) / 2h.

    Evaluated in extended precision (np.longdouble, 64-bit mantissa on x86-64) so that the
    cancellation error eps*|L|/h stays ~1e-11 even with h = 1e-6; the result is float64.
    """
    ld = np.longdouble
    y = np.asarray(y, dtype=ld)
    v = np.asarray(v, dtype=ld)
    n = y.shape[-1]
    I = np.eye(n, dtype=ld) * ld(h)
    Yp = y[..., None, :] + I      # [..., j, Dv]: coordinate j perturbed
    Ym = y[..., None, :] - I
    V = np.broadcast_to(v[..., None, :], Yp.shape)
    G = {}
    for name, val in g.items():
        val = np.asarray(val, dtype=ld)
        G[name] = val[..., None, :] if val.ndim >= 1 else val
    d = (loss(Yp, V, G) - loss(Ym, V, G)) / (2 * ld(h))
    return np.asarray(d, dtype=np.float64)


class Rule:
    """A MIRAS rule for a linear memory. Value specs are floats or ("gate", name)."""

    def __init__(self, bias, bias_args=None, retention="none", decay=None, decay_axis=None,
                 order="decoupled", optimizer="gd", lr=None, strength=None,
                 read="after_write", chunk=1):
        self.bias = bias                  # key of PSI / LOSSES
        self.bias_args = dict(bias_args or {})
        self.retention = retention        # none | l2 | l2_coupled
        self.decay = decay
        self.decay_axis = decay_axis      # None (scalar / constant) | "dk" | "dv"
        self.order = order                # decoupled | before_gradient
        self.optimizer = optimizer        # gd | implicit
        self.lr = lr
        self.strength = strength
        self.read = read
        self.chunk = int(chunk)


def _value(spec, inp, t, dtype):
    """scalar [B,H] (gate) or python float"""
    if isinstance(spec, tuple) and spec[0] == "gate":
        return np.asarray(inp[spec[1]][:, t], dtype=dtype)
    return float(spec)


def _decay(W, a, axis):
    if np.ndim(a) == 0:
        return a * W
    if axis == "dk":        # W Diag(a): scale columns
        return W * a[..., None, :]
    if axis == "dv":        # Diag(a) W: scale rows
        return W * a[..., :, None]
    return W * a[..., None, None]


def _mat(x):
    return x if np.ndim(x) == 0 else x[..., None, None]


def run_generic(rule, inp, psi_mode="closed", dtype=np.float64):
    """The generic MIRAS recurrence (SPEC sections 3, 5, 7).

    psi_mode: "closed" (PSI table) or "fd" (finite differences of LOSSES).
    dtype: float64 normally; float32 to estimate the fp32 conditioning of a test.
    """
    q = np.asarray(inp["q"], dtype=dtype)
    k = np.asarray(inp["k"], dtype=dtype)
    v = np.asarray(inp["v"], dtype=dtype)
    B, T, H, Dk = k.shape
    Dv = v.shape[-1]
    W = np.zeros((B, H, Dv, Dk), dtype) if inp.get("W") is None else \
        np.array(inp["W"], dtype=dtype, copy=True)
    o = np.zeros((B, T, H, Dv), dtype)
    if psi_mode == "closed":
        psi_f = PSI[rule.bias]
    elif psi_mode == "fd":
        loss = LOSSES[rule.bias]
        psi_f = lambda y, vv, g: fd_psi(loss, y, vv, g).astype(dtype)
    else:
        raise ValueError(psi_mode)
    W_anchor = W
    for t in range(T):
        if t % rule.chunk == 0:
            W_anchor = W
        kt, vt, qt = k[:, t], v[:, t], q[:, t]
        # bias arguments: numbers, or scalar gates as [B, H, 1]
        g = {}
        for name, spec in rule.bias_args.items():
            val = _value(spec, inp, t, dtype)
            g[name] = val[..., None] if np.ndim(val) else val
        lr = _value(rule.lr, inp, t, dtype) if rule.lr is not None else None
        a = None
        if rule.retention == "l2":
            if isinstance(rule.decay, tuple):
                a = np.asarray(inp[rule.decay[1]][:, t], dtype=dtype)
            else:
                a = float(rule.decay)
        W_prev = W
        # where the gradient is evaluated (SPEC section 7: at the chunk anchor)
        if rule.retention == "l2" and rule.order == "before_gradient":
            W_tilde = _decay(W_prev, a, rule.decay_axis)
            W_eval = _decay(W_anchor, a, rule.decay_axis)
        else:
            W_tilde = None
            W_eval = W_anchor
        y = _mv(W_eval, kt)
        if rule.optimizer == "implicit":
            if rule.bias != "l2":
                raise ValueError("implicit optimizer is defined for the l2 bias only")
            base = W_prev if W_tilde is None else W_tilde
            if rule.retention == "l2" and rule.order != "before_gradient":
                base = _decay(W_prev, a, rule.decay_axis)
            if rule.retention == "l2_coupled":
                raise ValueError("implicit + l2_coupled is not defined")
            c = lr / (1.0 + lr * np.sum(kt * kt, axis=-1))
            W = base - _mat(c) * _outer(y - vt, kt)
        else:
            grad = _outer(psi_f(y, vt, g), kt)
            if rule.retention == "none":
                W = W_prev - _mat(lr) * grad
            elif rule.retention == "l2":
                base = W_tilde if W_tilde is not None else _decay(W_prev, a, rule.decay_axis)
                W = base - _mat(lr) * grad
            elif rule.retention == "l2_coupled":
                s = _value(rule.strength, inp, t, dtype)
                W = _mat(s / (s + lr)) * W_prev - _mat(s * lr / (s + lr)) * grad
            else:
                raise ValueError(rule.retention)
        o[:, t] = _mv(W if rule.read == "after_write" else W_prev, qt)
    return o, W


# --------------------------------------------------------------------------------------
# 3. Model registry: the rules of every example and test module, by name.
#
# gates: name -> (kind, axis); params: compile-time params the reference needs, with the
# defaults of the .miras files (overridden by `miras info` / -D); rule(params) -> Rule;
# primary: which reference check_module uses ("closed", "fd" or "generic").

G = lambda name: ("gate", name)


class Model:
    def __init__(self, name, gates, rule, params=None, primary="closed",
                 fd=False, key_from=None, steps=1, per_step=()):
        self.name = name
        self.steps = steps        # multistep(n): k, v [B,T,H,n,D]
        self.per_step = tuple(per_step)  # gates with one value per step [B,T,H,n]
        self.key_from = key_from  # k = 1 - <this gate> (HGRN2's tied input gate)
        self.gates = gates
        self.params = dict(params or {})
        self.rule = rule
        self.primary = primary
        self.fd = fd             # the bias is a loss: an FD psi exists

    def reference(self, inp, params, mode=None):
        mode = mode or self.primary
        r = self.rule(params)
        if mode == "closed":
            return CLOSED[self.name](inp, params)
        if mode == "generic":
            return run_generic(r, inp, "closed")
        if mode == "fd":
            return run_generic(r, inp, "fd")
        raise ValueError(mode)


SCALAR = ("scalar", None)
CH_DK = ("channel", "dk")
CH_DV = ("channel", "dv")

MODELS = {}


def _add(m):
    MODELS[m.name] = m


# SPEC section 6 models (examples/)
_add(Model("linear_attention", {}, lambda P: Rule("dot", lr=0.5)))
_add(Model("retnet", {}, lambda P: Rule("dot", retention="l2", decay=P["gamma"], lr=0.5),
           params={"gamma": 0.96875}))
_add(Model("mamba2", {"alpha": SCALAR},
           lambda P: Rule("dot", retention="l2", decay=G("alpha"), lr=0.5)))
_add(Model("gla", {"alpha": CH_DK},
           lambda P: Rule("dot", retention="l2", decay=G("alpha"), decay_axis="dk", lr=0.5)))
_add(Model("deltanet", {"eta": SCALAR}, lambda P: Rule("l2", lr=G("eta"))))
_add(Model("gated_deltanet", {"eta": SCALAR, "alpha": SCALAR},
           lambda P: Rule("l2", retention="l2", decay=G("alpha"), order="before_gradient",
                          lr=G("eta"))))
_add(Model("ttt_linear", {}, lambda P: Rule("l2", lr=P["inner_lr"]),
           params={"inner_lr": 0.1}))
_add(Model("longhorn", {"eta": SCALAR}, lambda P: Rule("l2", optimizer="implicit",
                                                       lr=G("eta"))))

# test modules (test/numeric/modules/)
_add(Model("gla_dv", {"alpha": CH_DV},
           lambda P: Rule("dot", retention="l2", decay=G("alpha"), decay_axis="dv", lr=0.5)))
_add(Model("rwkv7_simple", {"eta": SCALAR, "alpha": CH_DK},
           lambda P: Rule("l2", retention="l2", decay=G("alpha"), decay_axis="dk",
                          order="before_gradient", lr=G("eta"))))
# examples added with the derivation engine
_add(Model("rwkv7", {"eta": SCALAR, "alpha": CH_DK},
           lambda P: Rule("l2", retention="l2", decay=G("alpha"), decay_axis="dk",
                          order="before_gradient", lr=G("eta"))))
_add(Model("hgrn2", {"alpha": CH_DK},
           lambda P: Rule("dot", retention="l2", decay=G("alpha"), decay_axis="dk", lr=0.5),
           key_from="alpha"))
_add(Model("deltaproduct", {"beta": SCALAR}, lambda P: Rule("l2", lr=G("beta")), params={"N": 2.0},
           steps=2, per_step=("beta",)))
_add(Model("logcosh_gated_delta", {"eta": SCALAR, "alpha": SCALAR},
           lambda P: Rule("logcosh", retention="l2", decay=G("alpha"),
                          order="before_gradient", lr=G("eta")),
           primary="fd", fd=True))
_add(Model("before_write", {"eta": SCALAR},
           lambda P: Rule("l2", lr=G("eta"), read="before_write")))
_add(Model("chunked", {"eta": SCALAR, "alpha": SCALAR},
           lambda P: Rule("l2", retention="l2", decay=G("alpha"), order="before_gradient",
                          lr=G("eta"), chunk=4)))
_add(Model("chunked_decoupled", {"eta": SCALAR, "alpha": SCALAR},
           lambda P: Rule("l2", retention="l2", decay=G("alpha"), lr=G("eta"), chunk=8)))
_add(Model("coupled", {"eta": SCALAR},
           lambda P: Rule("l2", retention="l2_coupled", strength=P["s"], lr=G("eta")),
           params={"s": 4.0}))
_add(Model("user_l2", {"eta": SCALAR}, lambda P: Rule("l2", lr=G("eta")),
           primary="fd", fd=True))
_add(Model("logcosh", {"eta": SCALAR}, lambda P: Rule("logcosh", lr=G("eta")),
           primary="fd", fd=True))
_add(Model("pseudo_huber", {"eta": SCALAR},
           lambda P: Rule("pseudo_huber", {"c": P["c"]}, lr=G("eta")),
           params={"c": 0.25}, primary="fd", fd=True))
_add(Model("user_value_shift", {"eta": SCALAR},
           lambda P: Rule("value_shift", {"delta": 0.5}, lr=G("eta")),
           primary="fd", fd=True))
# psi = 3 e|e| grows quadratically: modules/lp3.miras declares smaller steps
_add(Model("lp3", {"eta": SCALAR, "alpha": SCALAR},
           lambda P: Rule("lp", {"p": 3.0}, retention="l2", decay=G("alpha"), lr=G("eta")),
           primary="fd", fd=True))
_add(Model("lp_smooth", {"eta": SCALAR},
           lambda P: Rule("lp_smooth", {"p": 1.5, "kappa": 10.0, "eps": 1e-6}, lr=G("eta")),
           primary="generic"))
_add(Model("huber", {"eta": SCALAR, "delta": SCALAR},
           lambda P: Rule("huber", {"delta": G("delta")}, lr=G("eta")),
           primary="fd", fd=True))
_add(Model("huber_norm", {"eta": SCALAR},
           lambda P: Rule("huber_norm", {"delta": 3.0}, lr=G("eta")),
           primary="fd", fd=True))
_add(Model("value_shift", {"eta": SCALAR, "delta": SCALAR},
           lambda P: Rule("value_shift", {"delta": G("delta")}, lr=G("eta")),
           primary="fd", fd=True))

# --------------------------------------------------------------------------------------
# inputs

# Gate values are drawn from the interval the module's declared range gives (`gate eta :
# scalar in [0.05, 0.5];`), as `miras info` reports it: "sample" [lo, hi], plus the range's
# open ends (a draw on one is drawn again). The rule that turns a range into that interval
# lives in one place, runtime/tools/gate_sampling.hpp; `miras bench` draws from the same.
class GateSampling:
    """Where one gate's random values come from: uniform in [lo, hi], except the open
    ends of the declared range."""

    def __init__(self, lo, hi, lo_open=False, hi_open=False):
        self.lo, self.hi = float(lo), float(hi)
        self.lo_open, self.hi_open = bool(lo_open), bool(hi_open)

    @classmethod
    def from_info(cls, gate):
        """From one gate of `miras info` JSON."""
        if "sample" not in gate:
            raise ValueError("miras info gives no sampling interval for gate '%s' (a library "
                             "older than ABI 5?)" % gate.get("name"))
        lo, hi = gate["sample"]
        rng = gate.get("range")
        return cls(lo, hi, rng is not None and not rng["lo_closed"],
                   rng is not None and not rng["hi_closed"])

    def outside(self, x):
        """Mask of float32 draws on an open end (compared with the ends in float32, the
        precision of the values)."""
        lo, hi = np.float32(self.lo), np.float32(self.hi)
        return ((x <= lo) if self.lo_open else (x < lo)) | ((x >= hi) if self.hi_open else (x > hi))

    def draw(self, rng, shape):
        x = rng.uniform(self.lo, self.hi, size=shape).astype(np.float32)
        bad = self.outside(x)
        while bad.any():
            x[bad] = rng.uniform(self.lo, self.hi, size=int(bad.sum())).astype(np.float32)
            bad = self.outside(x)
        return x

    def __repr__(self):
        return "%s%g, %g%s" % ("(" if self.lo_open else "[", self.lo, self.hi,
                               ")" if self.hi_open else "]")


def declared_sampling(src):
    """{gate: GateSampling} from the `in (lo, hi]` declarations of a .miras source, for the
    reference self-test, which runs without a compiler. Only number ends at most 10 apart
    (what the examples and test modules declare); the full rule is gate_sampling.hpp's."""
    import re
    declaration = re.compile(r"\bgate\s+([A-Za-z_]\w*)\s*:\s*[A-Za-z_]\w*\s*"
                             r"(?:\(\s*\w+\s*\))?\s*in\s*([\[(])\s*([-+0-9.eE]+)\s*,"
                             r"\s*([-+0-9.eE]+)\s*([\])])")
    out = {}
    for m in declaration.finditer(_strip_comments(src)):
        lo, hi = float(m.group(3)), float(m.group(4))
        if not hi - lo <= 10:
            raise ValueError("gate %s: range too wide for declared_sampling" % m.group(1))
        out[m.group(1)] = GateSampling(lo, hi, m.group(2) == "(", m.group(5) == ")")
    return out


def make_inputs(B, T, H, Dk, Dv, gates, sampling, seed=0, model=None, w0_scale=0.05,
                states=None):
    """Random inputs of SPEC section 8 (float32, C order).

    gates: list of (name, kind, axis, dim); sampling: {gate name: GateSampling} (from
    `miras info`); states: list of (name, shape) per (B, H).
    k is L2-normalised per token; q, v ~ N(0, 1); gates uniform in their sampling
    interval; the initial state is small and non-zero.
    """
    missing = [g[0] for g in gates if g[0] not in sampling]
    if missing:
        raise ValueError("no sampling interval for gate(s) %s" % ", ".join(missing))
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inp = {}
    inp["q"] = rng.standard_normal((B, T, H, Dk)).astype(f32)
    k = rng.standard_normal((B, T, H, Dk))
    inp["k"] = (k / np.linalg.norm(k, axis=-1, keepdims=True)).astype(f32)
    inp["v"] = rng.standard_normal((B, T, H, Dv)).astype(f32)
    for name, kind, axis, dim in gates:
        shape = (B, T, H) if kind == "scalar" else (B, T, H, dim)
        inp[name] = sampling[name].draw(rng, shape)
    if getattr(model, "key_from", None):
        inp["k"] = (1.0 - inp[model.key_from]).astype(f32)
    n = getattr(model, "steps", 1)
    if n > 1:  # one (k, v) pair and one value of each per-step gate per step
        k = rng.standard_normal((B, T, H, n, Dk))
        inp["k"] = (k / np.linalg.norm(k, axis=-1, keepdims=True)).astype(f32)
        inp["v"] = rng.standard_normal((B, T, H, n, Dv)).astype(f32)
        for name in model.per_step:
            inp[name] = sampling[name].draw(rng, (B, T, H, n))
    for name, shape in (states if states is not None else [("W", (Dv, Dk))]):
        inp[name] = (w0_scale * rng.standard_normal((B, H) + tuple(shape))).astype(f32)
    return {n: np.ascontiguousarray(x) for n, x in inp.items()}


def rel_err(x, ref):
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(x - ref)) / max(float(np.max(np.abs(ref))), 1e-6))


# ======================================================================================
# 4. MLP memories (SPEC section 4) with momentum (section 5) and the mirror retentions
#    lq (Moneta) and kl (Memora). Everything below is vectorised over the leading [B, H]
#    axes; a weight is [..., rows, cols] and acts as h -> W h.
#
#    f(W; z) = [z +] [LN](W_k act(W_{k-1} ... act(W_1 z)))
#    W_1: [E*D, D], W_2..W_{k-1}: [E*D, E*D], W_k: [D, E*D]; LN affine-free over the D
#    outputs, biased variance, eps 1e-5; act between layers, never after the last one.

import math  # noqa: E402

LN_EPS = 1e-5
_erf_v = np.vectorize(math.erf, otypes=[np.float64])
_SQRT2 = math.sqrt(2.0)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


def _erf(x):
    x = np.asarray(x)
    return _erf_v(x.astype(np.float64)).astype(x.dtype)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# act(x) and act'(x), written out by hand
def act_gelu(x):
    return 0.5 * x * (1.0 + _erf(x / _SQRT2))


def dact_gelu(x):
    # d/dx 0.5 x (1 + erf(x/sqrt2)) = Phi(x) + x phi(x)
    return 0.5 * (1.0 + _erf(x / _SQRT2)) + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def act_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(_SQRT_2_PI * (x + _GELU_C * x ** 3)))


def dact_gelu_tanh(x):
    t = np.tanh(_SQRT_2_PI * (x + _GELU_C * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_PI * (1.0 + 3.0 * _GELU_C * x * x)


def act_silu(x):
    return x * _sigmoid(x)


def dact_silu(x):
    s = _sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def act_relu(x):
    return np.maximum(x, 0.0)


def dact_relu(x):
    return (x > 0).astype(x.dtype)


ACTS = {
    "gelu": (act_gelu, dact_gelu),
    "gelu_tanh": (act_gelu_tanh, dact_gelu_tanh),
    "silu": (act_silu, dact_silu),
    "relu": (act_relu, dact_relu),
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
}


class Mlp:
    """The memory architecture mlp(dim, depth, expansion, act, residual, layernorm)."""

    def __init__(self, depth=2, expansion=4, act="gelu", residual=False, layernorm=False):
        if depth < 2:
            raise ValueError("mlp depth must be >= 2")
        if act not in ACTS:
            raise ValueError("unknown activation %s" % act)
        self.depth = int(depth)
        self.expansion = int(expansion)
        self.act = act
        self.residual = bool(residual)
        self.layernorm = bool(layernorm)

    def shapes(self, D):
        Hd = self.expansion * D
        return [(Hd, D)] + [(Hd, Hd)] * (self.depth - 2) + [(D, Hd)]

    def __repr__(self):
        return "mlp(depth=%d, expansion=%d, act=%s%s%s)" % (
            self.depth, self.expansion, self.act, ", residual" if self.residual else "",
            ", layernorm" if self.layernorm else "")


def layernorm(u):
    """affine-free LN over the last axis: (u - mean) / sqrt(var + eps), biased var"""
    mu = np.mean(u, axis=-1, keepdims=True)
    c = u - mu
    s = np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + LN_EPS)
    return c / s, s


def layernorm_vjp(xhat, s, dy):
    """du = (1/s) (dy - mean(dy) - xhat mean(dy xhat)), with xhat = LN(u), s = sqrt(var+eps).

    From dxhat_i/du_j = (delta_ij - 1/n)/s - xhat_i xhat_j / (n s)."""
    return (dy - np.mean(dy, axis=-1, keepdims=True)
            - xhat * np.mean(dy * xhat, axis=-1, keepdims=True)) / s


def mlp_forward(mlp, Ws, z):
    """-> (f(W; z), cache). Ws: list of [..., rows, cols]; z [..., D]."""
    act = ACTS[mlp.act][0]
    hs, pre = [z], []
    h = z
    for W in Ws[:-1]:
        a = _mv(W, h)
        pre.append(a)
        h = act(a)
        hs.append(h)
    u = _mv(Ws[-1], h)
    xhat = s = None
    y = u
    if mlp.layernorm:
        xhat, s = layernorm(u)
        y = xhat
    out = z + y if mlp.residual else y
    return out, (hs, pre, xhat, s)


def mlp_vjp(mlp, Ws, cache, psi):
    """Reverse mode seeded with psi = dL/df: -> [dL/dW_1, ..., dL/dW_k].

    The residual adds z, which does not depend on W: it passes psi through unchanged.
        du = LN^T psi (or psi);   g_k = du h_{k-1}^T;   dh_{k-1} = W_k^T du;
        da_i = dh_i (.) act'(a_i);   g_i = da_i h_{i-1}^T;   dh_{i-1} = W_i^T da_i.
    """
    dact = ACTS[mlp.act][1]
    hs, pre, xhat, s = cache
    du = layernorm_vjp(xhat, s, psi) if mlp.layernorm else psi
    k = len(Ws)
    grads = [None] * k
    grads[k - 1] = _outer(du, hs[k - 1])
    dh = np.einsum("...ij,...i->...j", Ws[k - 1], du)
    for i in range(k - 2, -1, -1):
        da = dh * dact(pre[i])
        grads[i] = _outer(da, hs[i])
        if i > 0:
            dh = np.einsum("...ij,...i->...j", Ws[i], da)
    return grads


def mlp_loss(mlp, Ws, z, v, loss, g=None):
    """L(f(W; z), v) with a LOSSES function -> [...]"""
    y, _ = mlp_forward(mlp, Ws, z)
    return loss(y, v, g or {})


def fd_mlp_grad(mlp, Ws, z, v, loss, g=None, h=1e-5):
    """dL/dW_i by central differences in float64, entry by entry (small sizes only)."""
    Ws = [np.array(W, dtype=np.float64) for W in Ws]
    out = []
    for i, W in enumerate(Ws):
        G = np.zeros_like(W)
        for idx in np.ndindex(*W.shape[-2:]):
            Wp = [x.copy() for x in Ws]
            Wm = [x.copy() for x in Ws]
            Wp[i][(Ellipsis,) + idx] += h
            Wm[i][(Ellipsis,) + idx] -= h
            G[(Ellipsis,) + idx] = (mlp_loss(mlp, Wp, z, v, loss, g)
                                    - mlp_loss(mlp, Wm, z, v, loss, g)) / (2 * h)
        out.append(G)
    return out


# mirror maps (SPEC section 5): W = map(A), per weight tensor and per head
def map_identity(A, **kw):
    return A


def lq_norm(A, q):
    return np.sum(np.abs(A) ** q, axis=(-2, -1), keepdims=True) ** (1.0 / q)


def map_lq(A, q=4.0, **kw):
    """W = A / ||A||_q^(q-2), entry-wise q-norm over the whole [rows, cols] tensor"""
    return A / lq_norm(A, q) ** (q - 2.0)


def inv_map_lq(W, q=4.0):
    """A with map_lq(A) = W (q != 3): ||W||_q = ||A||_q^(3-q), so A = W ||A||_q^(q-2)."""
    if abs(q - 3.0) < 1e-12:
        raise ValueError("the lq map with q = 3 has norm-1 images only; not invertible")
    nA = lq_norm(W, q) ** (1.0 / (3.0 - q))
    return W * nA ** (q - 2.0)


def map_softmax(A, **kw):
    """W = softmax(A) over each row (the last axis)"""
    m = np.max(A, axis=-1, keepdims=True)
    e = np.exp(A - m)
    return e / np.sum(e, axis=-1, keepdims=True)


MAPS = {"none": map_identity, "l2": map_identity, "lq": map_lq, "kl": map_softmax}


def psi_yaad_mix(y, v, g):
    """e if ||e||_2 <= delta, else delta tanh(kappa e)  (per token)"""
    e = y - v
    d, kappa = g["delta"], g.get("kappa", 10.0)
    return np.where(_nrm(e) <= d, e, d * np.tanh(kappa * e))


PSI["yaad_mix"] = psi_yaad_mix


class MlpRule:
    """A MIRAS rule on an MLP memory. Value specs are floats or ("gate", name).

    retention: none | l2 (decay) | lq (q, decay) | kl (decay); optimizer: gd (lr) |
    momentum (lr = theta, beta = mu). With a mirror retention (lq, kl) the carried state
    is the dual A_i and W_i = map(A_i); the (decayed) linear update acts on A.
    """

    def __init__(self, mlp, bias, bias_args=None, retention="none", decay=None, q=4.0,
                 optimizer="gd", lr=None, beta=None, read="after_write", chunk=1):
        self.mlp = mlp
        self.bias = bias
        self.bias_args = dict(bias_args or {})
        self.retention = retention
        self.decay = decay
        self.q = float(q)
        self.optimizer = optimizer
        self.lr = lr
        self.beta = beta
        self.read = read
        self.chunk = int(chunk)
        if retention not in MAPS:
            raise ValueError("retention %s" % retention)
        if optimizer not in ("gd", "momentum"):
            raise ValueError("optimizer %s" % optimizer)

    @property
    def mirror(self):
        return self.retention in ("lq", "kl")

    def weight_prefix(self):
        return "A" if self.mirror else "W"

    def state_names(self):
        k = self.mlp.depth
        names = ["%s%d" % (self.weight_prefix(), i + 1) for i in range(k)]
        if self.optimizer == "momentum":
            names += ["S%d" % (i + 1) for i in range(k)]
        return names

    def state_shapes(self, D):
        sh = self.mlp.shapes(D)
        return sh + (sh if self.optimizer == "momentum" else [])

    def map(self, A):
        return MAPS[self.retention](A, q=self.q)


def _bias_args(rule, inp, t, dtype):
    g = {}
    for name, spec in rule.bias_args.items():
        val = _value(spec, inp, t, dtype)
        g[name] = val[..., None] if np.ndim(val) else val
    return g


def run_mlp(rule, inp, dtype=np.float64, trace=None):
    """The MIRAS recurrence on an MLP memory (SPEC sections 3-7).

    inp: q, k [B,T,H,D], v [B,T,H,D], gates, initial states by name ([B,H,rows,cols]).
    Returns (o [B,T,H,D], {state name: final state}). trace, if a list, receives per token
    the error norms ||e|| and the bias arguments (for the yaad switch margins).
    """
    mlp = rule.mlp
    q = np.asarray(inp["q"], dtype=dtype)
    k = np.asarray(inp["k"], dtype=dtype)
    v = np.asarray(inp["v"], dtype=dtype)
    B, T, H, D = k.shape
    names = rule.state_names()
    kd = mlp.depth
    st = [np.array(inp[n], dtype=dtype, copy=True) for n in names]
    A = st[:kd]                                    # W_i or the duals A_i
    S = st[kd:] if rule.optimizer == "momentum" else None
    psi_f = PSI[rule.bias]
    o = np.zeros((B, T, H, D), dtype)
    W = [rule.map(x) for x in A]
    W_anchor = W
    for t in range(T):
        if t % rule.chunk == 0:
            W_anchor = W
        kt, vt, qt = k[:, t], v[:, t], q[:, t]
        y, cache = mlp_forward(mlp, W_anchor, kt)
        g = _bias_args(rule, inp, t, dtype)
        psi = psi_f(y, vt, g)
        if trace is not None:
            trace.append((_nrm(y - vt)[..., 0], g))
        grads = mlp_vjp(mlp, W_anchor, cache, psi)
        a = 1.0
        if rule.retention != "none":
            if rule.decay is None:
                raise ValueError("retention %s needs a decay" % rule.retention)
            a = _mat(_value(rule.decay, inp, t, dtype))
        lr = _mat(_value(rule.lr, inp, t, dtype))
        if rule.optimizer == "gd":
            A = [a * x - lr * gi for x, gi in zip(A, grads)]
        else:
            mu = _mat(_value(rule.beta, inp, t, dtype))
            S = [mu * s - lr * gi for s, gi in zip(S, grads)]
            A = [a * x + s for x, s in zip(A, S)]
        W_prev = W
        W = [rule.map(x) for x in A]
        o[:, t] = mlp_forward(mlp, W if rule.read == "after_write" else W_prev, qt)[0]
    states = dict(zip(names, A + (S or [])))
    return o, states


class MlpModel:
    """A registry entry for an MLP-memory module (same interface as Model)."""

    kind = "mlp"

    def __init__(self, name, gates, rule, params=None, init=None):
        self.name = name
        self.gates = gates
        self.rule = rule
        self.params = dict(params or {})
        self.primary = "generic"
        self.fd = False
        self.init = dict(init or {})   # initial-state scales, see init_mlp_states

    def reference(self, inp, params, mode=None):
        return run_mlp(self.rule(params), inp)

    def reference_states(self, inp, params, mode=None):
        return self.reference(inp, params, mode)


def init_mlp_states(rule, D, B, H, rng, weight_scale=1.0, logit_scale=1.0, s_scale=0.1):
    """Random non-zero initial states, named as the ABI names them.

    W_i ~ N(0, weight_scale^2 / fan_in); lq: A_i = map^-1 of such a W (q != 3); kl: logits
    A_i ~ N(0, logit_scale^2); momentum S_i ~ N(0, (s_scale * weight_scale)^2 / fan_in).
    """
    out = {}
    shapes = rule.mlp.shapes(D)
    for i, (r, c) in enumerate(shapes):
        W0 = rng.standard_normal((B, H, r, c)) * weight_scale / math.sqrt(c)
        if rule.retention == "kl":
            A0 = rng.standard_normal((B, H, r, c)) * logit_scale
        elif rule.retention == "lq":
            A0 = inv_map_lq(W0, rule.q) if abs(rule.q - 3.0) > 1e-12 else W0
        else:
            A0 = W0
        out["%s%d" % (rule.weight_prefix(), i + 1)] = A0
    if rule.optimizer == "momentum":
        for i, (r, c) in enumerate(shapes):
            out["S%d" % (i + 1)] = rng.standard_normal((B, H, r, c)) * s_scale * \
                weight_scale / math.sqrt(c)
    return out


def make_mlp_inputs(model, rule, B, T, H, D, gates, sampling, seed=0):
    """Inputs of SPEC section 8 for an MLP module (float32, C order)."""
    inp = make_inputs(B, T, H, D, D, gates, sampling, seed=seed, model=model, states=[])
    rng = np.random.default_rng(seed + 1000003)
    for n, x in init_mlp_states(rule, D, B, H, rng, **model.init).items():
        inp[n] = np.ascontiguousarray(x.astype(np.float32))
    return inp


def mlp_gates(model):
    return [(n, kind, axis, 1) for n, (kind, axis) in model.gates.items()]


def _addm(m):
    MODELS[m.name] = m


# the MIRAS MLP of SPEC section 4
MIRAS_MLP = dict(depth=2, expansion=4, act="gelu", residual=True, layernorm=True)

# The examples' declared gate ranges (examples/*.miras) and the initial scales below keep
# the float32 recurrences well conditioned at the lit sizes (D=8, T=24): the
# float32-vs-float64 gap of run_mlp is <= ~1.3e-6 (check_module.py --self-test [7]). alpha
# is declared in [0.97, 1]: stronger decay shrinks the weights, LN's 1/sigma then
# amplifies rounding (gap ~5e-5 with alpha in [0.85, 1]).
_addm(MlpModel("ttt_mlp", {"eta": SCALAR},
               lambda P: MlpRule(Mlp(2, 4, "gelu_tanh", True, True), "l2", lr=G("eta"))))
_addm(MlpModel("titans", {"theta": SCALAR, "mu": SCALAR, "alpha": SCALAR},
               lambda P: MlpRule(Mlp(2, 4, "silu"), "l2", retention="l2", decay=G("alpha"),
                                 optimizer="momentum", lr=G("theta"), beta=G("mu"))))
# psi = 3 e|e| and the 1/||A||_4^2 map: small steps
_addm(MlpModel("moneta", {"eta": SCALAR, "alpha": SCALAR},
               lambda P: MlpRule(Mlp(**MIRAS_MLP), "lp", {"p": 3.0}, retention="lq", q=4.0,
                                 decay=G("alpha"), lr=G("eta"))))
# delta in (1, 4) with D = 8 puts ~10-15% of the tokens on the l2 branch; weights 3x
# N(0, 1/fan_in) keep LN's variance away from eps (the tanh(10 e) branch is stiff)
_addm(MlpModel("yaad", {"eta": SCALAR, "alpha": SCALAR, "delta": SCALAR},
               lambda P: MlpRule(Mlp(**MIRAS_MLP), "yaad_mix",
                                 {"delta": G("delta"), "kappa": 10.0}, retention="l2",
                                 decay=G("alpha"), lr=G("eta")),
               init={"weight_scale": 3.0}))
# Titans' memory with an outlier-robust bias: huber_norm caps each token's pull
# (param delta ~ sqrt(D), the typical ||v||: tokens fall on both sides of the cap)
_addm(MlpModel("robust_titans", {"theta": SCALAR, "mu": SCALAR, "alpha": SCALAR},
               lambda P: MlpRule(Mlp(2, 4, "silu"), "huber_norm", {"delta": P["delta"]},
                                 retention="l2", decay=G("alpha"), optimizer="momentum",
                                 lr=G("theta"), beta=G("mu")),
               params={"delta": 8.0}))
# logits N(0, 2^2): peaked rows keep the LN input's variance up
_addm(MlpModel("memora", {"eta": SCALAR, "alpha": SCALAR},
               lambda P: MlpRule(Mlp(**MIRAS_MLP), "l2", retention="kl", decay=G("alpha"),
                                 lr=G("eta")),
               init={"logit_scale": 2.0}))

# test modules for the finite-difference check of the compiled gradient (modules/mlp_fd_*)
_addm(MlpModel("mlp_fd_gelu", {"eta": SCALAR},
               lambda P: MlpRule(Mlp(2, 2, "gelu", True, True), "l2", lr=G("eta"))))
_addm(MlpModel("mlp_fd_silu", {"eta": SCALAR},
               lambda P: MlpRule(Mlp(3, 2, "silu"), "lp", {"p": 3.0}, lr=G("eta"))))
_addm(MlpModel("mlp_fd_relu", {"eta": SCALAR},
               lambda P: MlpRule(Mlp(3, 2, "relu", residual=True), "logcosh", lr=G("eta"))))
_addm(MlpModel("mlp_fd_gelu_tanh", {"eta": SCALAR},
               lambda P: MlpRule(Mlp(2, 2, "gelu_tanh", layernorm=True), "l2", lr=G("eta"))))


# --------------------------------------------------------------------------------------
# generic composition from a module's declarations (check_module.py --model dsl)
#
# A deliberately small reading of the four choices of a .miras file, enough to build an
# MlpRule: `param N = num;`, `gate N : scalar;`, `memory mlp(...)`, `bias NAME(args)`,
# `retention NAME(args)`, `optimizer NAME(args)`, `read ...`, `chunk N`. Argument values
# are numbers, params (their values, -D overrides) or scalar gates.

import re  # noqa: E402

_BIAS_ALIASES = {"lp": "lp", "l2": "l2", "dot": "dot", "huber": "huber",
                 "huber_norm": "huber_norm", "value_shift": "value_shift",
                 "yaad_mix": "yaad_mix"}


def _strip_comments(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def _decl(src, kw):
    m = re.search(r"\b%s\s+([A-Za-z_]\w*)\s*(?:\(([^)]*)\))?\s*;" % kw, src)
    if not m:
        return None, {}
    args, flags = {}, []
    for part in (m.group(2) or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            n, val = part.split("=", 1)
            args[n.strip()] = val.strip()
        else:
            flags.append(part)
    args["_flags"] = flags
    return m.group(1), args


class _ExprParser:
    """A user-written bias `bias(y, v) = EXPR;` read into a numpy loss function.

    The grammar of frontend/grammar/Miras.g4 (loosest first): comparisons, + -, * /,
    unary -, ^ (right-assoc, the exponent a unary). Functions (Sema.cpp): abs sign tanh
    sqrt exp log cosh (element-wise), min max (binary), sum norm (over the vector, kept as
    [..., 1]), where(cond, a, b). Names: the prediction / target names, params (numbers)
    and gates (the bias arguments of the rule). Evaluated in whatever dtype y and v have
    (np.longdouble for the finite differences), independently of the compiler.
    """

    _TOK = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|"
                      r"([A-Za-z_]\w*)|(<=|>=|[-+*/^(),<>]))")
    _UNARY = {"abs": np.abs, "sign": np.sign, "tanh": np.tanh, "sqrt": np.sqrt,
              "exp": np.exp, "log": np.log, "cosh": np.cosh}
    _CMP = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
    _ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}

    def __init__(self, text, pred, target, params, gates):
        self.toks, pos, text = [], 0, text.strip()
        while pos < len(text):
            m = self._TOK.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError("dsl reference: cannot read bias expression at %r" % text[pos:])
            self.toks.append(("num", float(m.group(1))) if m.group(1) else
                             ("id", m.group(2)) if m.group(2) else ("op", m.group(3)))
            pos = m.end()
        self.i, self.pred, self.target = 0, pred, target
        self.params, self.gates, self.used_gates = params, gates, set()
        self.fn = self.expr()
        if self.i != len(self.toks):
            raise ValueError("dsl reference: trailing tokens in bias expression")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, op=None):
        t = self.peek()
        if op is not None and t != ("op", op):
            raise ValueError("dsl reference: expected '%s' in bias expression" % op)
        self.i += 1
        return t

    def expr(self):
        a = self.sum()
        if self.peek()[0] == "op" and self.peek()[1] in self._CMP:
            f, b = self._CMP[self.take()[1]], self.sum()
            return lambda y, v, g, a=a, b=b, f=f: f(a(y, v, g), b(y, v, g))
        return a

    def _binary(self, sub, ops):
        a = sub()
        while self.peek()[0] == "op" and self.peek()[1] in ops:
            f, b = self._ARITH[self.take()[1]], sub()
            a = (lambda a, b, f: lambda y, v, g: f(a(y, v, g), b(y, v, g)))(a, b, f)
        return a

    def sum(self):
        return self._binary(self.term, "+-")

    def term(self):
        return self._binary(self.unary, "*/")

    def unary(self):
        if self.peek() == ("op", "-"):
            self.take()
            a = self.unary()
            return lambda y, v, g: -a(y, v, g)
        return self.power()

    def power(self):
        a = self.atom()
        if self.peek() == ("op", "^"):
            self.take()
            b = self.unary()
            return lambda y, v, g: a(y, v, g) ** b(y, v, g)
        return a

    def atom(self):
        kind, val = self.take()
        if kind == "num":
            return lambda y, v, g: val
        if (kind, val) == ("op", "("):
            a = self.expr()
            self.take(")")
            return a
        if kind != "id":
            raise ValueError("dsl reference: unexpected '%s' in bias expression" % val)
        if self.peek() == ("op", "("):
            self.take()
            args = [self.expr()]
            while self.peek() == ("op", ","):
                self.take()
                args.append(self.expr())
            self.take(")")
            return self.call(val, args)
        if val == self.pred:
            return lambda y, v, g: y
        if val == self.target:
            return lambda y, v, g: v
        if val in self.gates:
            self.used_gates.add(val)
            return lambda y, v, g: g[val]
        if val in self.params:
            c = self.params[val]
            return lambda y, v, g: c
        raise ValueError("dsl reference: unknown name '%s' in bias expression" % val)

    def call(self, f, args):
        n = {"min": 2, "max": 2, "where": 3}.get(f, 1)
        if len(args) != n:
            raise ValueError("dsl reference: %s takes %d arguments" % (f, n))
        if f in self._UNARY:
            h, a = self._UNARY[f], args[0]
            return lambda y, v, g: h(a(y, v, g))
        if f == "sum":
            return lambda y, v, g: np.sum(args[0](y, v, g), axis=-1, keepdims=True)
        if f == "norm":
            return lambda y, v, g: np.sqrt(np.sum(args[0](y, v, g) ** 2, axis=-1, keepdims=True))
        if f in ("min", "max"):
            h = np.minimum if f == "min" else np.maximum
            return lambda y, v, g: h(args[0](y, v, g), args[1](y, v, g))
        if f == "where":
            return lambda y, v, g: np.where(*(a(y, v, g) for a in args))
        raise ValueError("dsl reference: unknown function '%s'" % f)

    def loss(self, y, v, g):
        r = self.fn(y, v, g)
        r = np.broadcast_to(r, np.broadcast(r, y[..., :1]).shape)
        return np.sum(r, axis=-1)        # the loss is a scalar per token: [..., 1] -> [...]


def _user_bias(src, params, gates, key):
    """`bias(y, v) = EXPR;` -> registers LOSSES[key] and an FD PSI[key]; returns the
    gates the expression reads (they become bias arguments), or None without one."""
    m = re.search(r"\bbias\s*\(\s*([A-Za-z_]\w*)\s*,\s*([A-Za-z_]\w*)\s*\)\s*=\s*([^;]*);", src)
    if not m:
        return None
    ex = _ExprParser(m.group(3), m.group(1), m.group(2), params, gates)
    LOSSES[key] = ex.loss
    PSI[key] = lambda y, v, g: fd_psi(ex.loss, y, v, g).astype(np.asarray(y).dtype)
    return {n: G(n) for n in sorted(ex.used_gates)}


def model_from_source(src, overrides=None, name=None):
    """-> Model (linear memory) or MlpModel built from the declarations of a .miras module.

    Linear memories: gates scalar or channel(dk | dv); retention none / l2(decay, order) /
    l2_coupled(strength); optimizer gd / implicit; the generic composition run_generic.
    MLP memories: scalar gates; run_mlp (hand-written backprop). A user-written bias
    `bias(y, v) = EXPR;` is read by _ExprParser and differentiated numerically (fd_psi).
    """
    src = _strip_comments(src)
    mname = name or re.search(r"\bmodule\s+([A-Za-z_]\w*)", src).group(1)
    params = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"\bparam\s+([A-Za-z_]\w*)\s*=\s*([-+0-9.eE]+)\s*;", src)}
    for n, val in (overrides or {}).items():
        params[n] = float(val)
    mem, margs = _decl(src, "memory")
    gates = {}
    for m in re.finditer(r"\bgate\s+([A-Za-z_]\w*)\s*:\s*([A-Za-z_]\w*)\s*(?:\(\s*(\w+)\s*\))?",
                         src):
        kind, axis = m.group(2), m.group(3)
        if kind == "scalar":
            gates[m.group(1)] = SCALAR
        elif kind == "channel" and mem == "linear" and axis in ("dk", "dv"):
            gates[m.group(1)] = ("channel", axis)
        else:
            raise ValueError("dsl reference: gate %s : %s%s on a %s memory" % (
                m.group(1), kind, "(%s)" % axis if axis else "", mem))

    def val(x, what):
        x = x.strip()
        if x in gates:
            return G(x)
        if x in params:
            return params[x]
        try:
            return float(x)
        except ValueError:
            raise ValueError("dsl reference: cannot read %s = %s" % (what, x))

    user_args = _user_bias(src, params, gates, "dsl:" + mname)
    if user_args is not None:
        bias, bias_args = "dsl:" + mname, user_args
    else:
        bname, bargs = _decl(src, "bias")
        bflags = bargs.pop("_flags")
        if bname not in _BIAS_ALIASES:
            raise ValueError("dsl reference: bias %s" % bname)
        bias = _BIAS_ALIASES[bname]
        if bias == "lp" and ("smooth" in bflags or val(bargs.get("p", "2"), "p") < 2):
            bias = "lp_smooth"
        bias_args = {n: val(x, n) for n, x in bargs.items()}
    rname, rargs = _decl(src, "retention")
    rargs.pop("_flags", None)
    oname, oargs = _decl(src, "optimizer")
    oargs.pop("_flags", None)
    rd = re.search(r"\bread\s+([A-Za-z_]\w*)\s*;", src)
    ch = re.search(r"\bchunk\s+([A-Za-z_0-9.]+)\s*;", src)
    decay = val(rargs["decay"], "decay") if "decay" in rargs else None
    read = rd.group(1) if rd else "after_write"
    chunk = int(val(ch.group(1), "chunk")) if ch else 1
    if mem == "linear":
        rname = rname or "none"
        if rname not in ("none", "l2", "l2_coupled"):
            raise ValueError("dsl reference: retention %s on a linear memory" % rname)
        oname = oname or "gd"
        if oname not in ("gd", "implicit"):
            raise ValueError("dsl reference: optimizer %s on a linear memory" % oname)
        axis = gates[decay[1]][1] if isinstance(decay, tuple) else None
        order = rargs.get("order", "decoupled").strip()
        strength = val(rargs["strength"], "strength") if "strength" in rargs else None
        rule = Rule(bias, bias_args, retention=rname, decay=decay, decay_axis=axis,
                    order=order, optimizer=oname, lr=val(oargs["lr"], "lr"),
                    strength=strength, read=read, chunk=chunk)
        fd = user_args is not None
        return Model(mname, gates, lambda P: rule, params=params,
                     primary="fd" if fd else "generic", fd=fd)
    if mem != "mlp":
        raise ValueError("dsl reference: memory %s" % mem)
    flags = margs.pop("_flags")
    mlp = Mlp(depth=int(val(margs.get("depth", "2"), "depth")),
              expansion=int(val(margs.get("expansion", "4"), "expansion")),
              act=margs.get("act", "gelu"), residual="residual" in flags,
              layernorm="layernorm" in flags)
    rule = MlpRule(mlp, bias, bias_args, retention=rname or "none", decay=decay,
                   q=val(rargs.get("q", "4"), "q"), optimizer=oname or "gd",
                   lr=val(oargs["lr"], "lr"),
                   beta=val(oargs["beta"], "beta") if "beta" in oargs else None,
                   read=read, chunk=chunk)
    # LN divides by the output's spread: larger weights / peaked softmax rows keep it up
    init = {"weight_scale": 3.0 if mlp.layernorm else 1.0, "logit_scale": 2.0}
    return MlpModel(mname, gates, lambda P: rule, params=params, init=init)
