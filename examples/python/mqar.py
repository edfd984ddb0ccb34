"""A small language-model-style network around any miras module, and MQAR.

MQAR (multi-query associative recall; Arora et al. 2023, "Zoology", the recall task fla
and the Gated DeltaNet paper use): a sequence of key-value token pairs, then the keys
again in another order; at each repeated key the model must name the value that
followed it. Generated on the fly; chance is 1 / (number of value tokens).

The network: token embedding, then per layer a pre-norm mixer (short causal
convolutions, projections to q, k, v and the module's gates, the memory module, output
projection) and a pre-norm MLP, each residual; a final norm and the vocabulary head.
q and k are L2-normalised; every gate is produced from the hidden state and mapped into
its declared range (`miras info`): decays (a range ending at 1, e.g. alpha in
[0.85, 1]) in log space, alpha = exp(log(lo) * sigmoid(z)), everything else (learning
rates, thresholds) by lo + (hi - lo) * sigmoid(z). An MLP memory's initial weights are
parameters of the network (per head, learned through the module's state adjoints, as
Titans does): from zeros such a memory's gradient is zero and it never learns.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def mqar_batch(batch, pairs, vocab, queries=None, generator=None):
    """(tokens [batch, 2 pairs + queries], targets: the value at each query, -100 else).

    Keys come from the first half of the vocabulary, values from the second; each
    sequence draws distinct keys, a value per key, then asks `queries` (default: all)
    of its keys in random order."""
    queries = pairs if queries is None else queries
    half = vocab // 2
    if pairs > half:
        raise ValueError(f"{pairs} distinct keys need a vocabulary of at least {2 * pairs}")
    keys = torch.argsort(torch.rand(batch, half, generator=generator), dim=1)[:, :pairs]
    values = half + torch.randint(0, vocab - half, (batch, pairs), generator=generator)
    context = torch.stack([keys, values], dim=2).reshape(batch, 2 * pairs)
    asked = torch.argsort(torch.rand(batch, pairs, generator=generator), dim=1)[:, :queries]
    query_keys = torch.gather(keys, 1, asked)
    answers = torch.gather(values, 1, asked)
    tokens = torch.cat([context, query_keys], dim=1)
    targets = torch.full_like(tokens, -100)
    targets[:, 2 * pairs:] = answers
    return tokens, targets


class ShortConv(nn.Module):
    """Causal depthwise convolution over time (kernel 4), as in Mamba2 / fla's layers:
    it lets the value token see the key token before it."""

    def __init__(self, channels, kernel=4):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, bias=False)

    def forward(self, x):  # [B, T, C]
        y = self.conv(F.pad(x.transpose(1, 2), (self.kernel - 1, 0)))
        return F.silu(y.transpose(1, 2))


def gate_activation(gate):
    """z -> a value inside the gate's declared range (see the module docstring)."""
    lo, hi = gate["sample"]
    if hi == 1 and 0 < lo < 1:
        log_lo = math.log(lo)
        return lambda z: torch.exp(log_lo * torch.sigmoid(z))
    return lambda z: lo + (hi - lo) * torch.sigmoid(z)


class Mixer(nn.Module):
    """Projections to the module's inputs, the memory, the output projection.

    `memory(q, k, v, state, **gates) -> o` is the module call: a miras.Module wrapped by
    `miras_memory`, or any function of the same signature (the tests plug in an eager
    recurrence); `state` is None or a dict of initial states [B, H, ...]."""

    def __init__(self, d_model, heads, metadata, memory):
        super().__init__()
        self.heads, self.memory = heads, memory
        self.dk, self.dv, self.steps = metadata["dk"], metadata["dv"], metadata["steps"]
        pairs = heads * self.steps
        self.q = nn.Linear(d_model, heads * self.dk, bias=False)
        self.k = nn.Linear(d_model, pairs * self.dk, bias=False)
        self.v = nn.Linear(d_model, pairs * self.dv, bias=False)
        self.conv_q = ShortConv(heads * self.dk)
        self.conv_k = ShortConv(pairs * self.dk)
        self.conv_v = ShortConv(pairs * self.dv)
        self.gates = nn.ModuleDict()
        self.gate_shapes, self.gate_maps = {}, {}
        for gate in metadata["gates"]:
            width = self.steps if gate["per_step"] else gate["dim"]
            self.gates[gate["name"]] = nn.Linear(d_model, heads * width)
            self.gate_shapes[gate["name"]] = () if gate["kind"] == "scalar" and not gate["per_step"] else (width,)
            self.gate_maps[gate["name"]] = gate_activation(gate)
        self.out = nn.Linear(heads * self.dv, d_model, bias=False)
        states = metadata["states"]
        mlp = len([s for s in states if s["name"][0] in "WA"]) > 1
        self.initial = nn.ParameterDict({
            s["name"]: nn.Parameter(torch.randn(heads, *s["shape"]) / math.sqrt(s["shape"][-1]))
            for s in states if mlp and s["name"][0] in "WA"})

    def forward(self, x):
        B, T, _ = x.shape
        H, n = self.heads, self.steps
        pair = (B, T, H, n) if n > 1 else (B, T, H)
        q = F.normalize(self.conv_q(self.q(x)).view(B, T, H, self.dk), dim=-1)
        k = F.normalize(self.conv_k(self.k(x)).view(*pair, self.dk), dim=-1)
        v = self.conv_v(self.v(x)).view(*pair, self.dv)
        gates = {name: self.gate_maps[name](proj(x)).view(B, T, H, *self.gate_shapes[name])
                 for name, proj in self.gates.items()}
        state = {name: w.expand(B, *w.shape) for name, w in self.initial.items()} or None
        o = self.memory(q, k, v, state, **gates)
        return self.out(o.reshape(B, T, H * self.dv))


class Layer(nn.Module):
    def __init__(self, d_model, heads, metadata, memory):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mixer = Mixer(d_model, heads, metadata, memory)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RecallModel(nn.Module):
    def __init__(self, vocab, d_model, heads, layers, metadata, memory):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList(Layer(d_model, heads, metadata, memory) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def miras_memory(module):
    """A miras.Module as a Mixer memory: o of a call from zero state."""
    def memory(q, k, v, state, **gates):
        o, _ = module(q, k, v, state=state, **gates)
        return o
    return memory


def loss_and_accuracy(model, tokens, targets):
    logits = model(tokens)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100)
    asked = targets != -100
    accuracy = (logits.argmax(-1)[asked] == targets[asked]).float().mean()
    return loss, accuracy
