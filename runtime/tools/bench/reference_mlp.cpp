// reference_mlp.cpp: scalar references of the two-layer MLP memories of SPEC sections 3-5,
// forward and backward: Titans (SiLU, l2 bias, l2 retention by a decay gate, momentum)
// and TTT-MLP (GELU-tanh, residual, affine-free LayerNorm, l2 bias, gradient descent).
//
//   f(W; z) = [z +] [LN] (W2 act(W1 z)),   W1 [hidden, dk], W2 [dv, hidden]
//   g_t = grad_W 1/2 ||f(W_{t-1}; k_t) - v_t||^2
//   Titans:  S_t = mu_t S_{t-1} - theta_t g_t,  W_t = alpha_t W_{t-1} + S_t (per weight)
//   TTT-MLP: W_t = W_{t-1} - eta_t g_t
//   o_t = f(W_t; q_t)
// With chunk C > 1 (SPEC section 7) g_t is taken at the weights W1, W2 of the start of
// token t's chunk (its anchor), whose adjoint the reverse sweep sums over the chunk.
//
// The inner gradient and its reverse (the Hessian-vector products the outer backward
// needs) are written out by hand below, one line per step of the chain rule, from the
// formulas above: nothing comes from the compiler. The recognition of a module as one of
// these is in reference.cpp (findReference). Like reference.cpp this file is compiled
// without auto-vectorisation: it is the scalar "x vs reference" of `miras bench`.
#include "reference_mlp.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace miras::bench {

namespace {

// GELU's tanh approximation: 0.5 x (1 + tanh(C0 (x + C1 x^3))), C0 = sqrt(2 / pi).
constexpr float kGeluC0 = 0.7978845608028654f, kGeluC1 = 0.044715f;

// ---------------------------------------------------------------------------------------
// The activation, its first and second derivatives.

float activate(MlpActivation act, float x) {
  if (act == MlpActivation::Silu)
    return x / (1.0f + std::exp(-x));
  const float u = kGeluC0 * (x + kGeluC1 * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(u));
}

float activateDerivative(MlpActivation act, float x) {
  if (act == MlpActivation::Silu) {
    const float s = 1.0f / (1.0f + std::exp(-x));
    return s * (1.0f + x * (1.0f - s));
  }
  const float u = kGeluC0 * (x + kGeluC1 * x * x * x);
  const float th = std::tanh(u), du = kGeluC0 * (1.0f + 3.0f * kGeluC1 * x * x);
  return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
}

float activateSecondDerivative(MlpActivation act, float x) {
  if (act == MlpActivation::Silu) {
    const float s = 1.0f / (1.0f + std::exp(-x));
    return s * (1.0f - s) * (2.0f + x * (1.0f - 2.0f * s));
  }
  const float u = kGeluC0 * (x + kGeluC1 * x * x * x);
  const float th = std::tanh(u), sech2 = 1.0f - th * th;
  const float du = kGeluC0 * (1.0f + 3.0f * kGeluC1 * x * x), ddu = kGeluC0 * 6.0f * kGeluC1 * x;
  return sech2 * du + 0.5f * x * sech2 * (ddu - 2.0f * th * du * du);
}

// ---------------------------------------------------------------------------------------
// One evaluation of the memory f(W; z), every intermediate kept for the reverse.

struct MlpShape {
  int64_t dk, dv, hidden;
};

struct MlpEval {
  std::vector<float> a, h; // [hidden]: W1 z and act(W1 z)
  std::vector<float> y;    // [dv]: W2 h
  std::vector<float> c;    // [dv]: y - mean(y) (LayerNorm only)
  float s = 1.0f;          // sqrt(mean(c^2) + eps) (LayerNorm only)
  std::vector<float> f;    // [dv]: f(W; z)

  explicit MlpEval(const MlpShape &n) : a(n.hidden), h(n.hidden), y(n.dv), c(n.dv), f(n.dv) {}
};

void evaluate(const MlpReference &m, const MlpShape &n, const float *W1, const float *W2,
              const float *z, MlpEval &e) {
  for (int64_t i = 0; i < n.hidden; ++i) {
    float sum = 0.0f;
    for (int64_t j = 0; j < n.dk; ++j)
      sum += W1[i * n.dk + j] * z[j];
    e.a[i] = sum;
    e.h[i] = activate(m.activation, sum);
  }
  for (int64_t i = 0; i < n.dv; ++i) {
    float sum = 0.0f;
    for (int64_t j = 0; j < n.hidden; ++j)
      sum += W2[i * n.hidden + j] * e.h[j];
    e.y[i] = sum;
  }
  if (m.layerNorm) {
    float mean = 0.0f;
    for (int64_t i = 0; i < n.dv; ++i)
      mean += e.y[i];
    mean /= float(n.dv);
    float variance = 0.0f;
    for (int64_t i = 0; i < n.dv; ++i) {
      e.c[i] = e.y[i] - mean;
      variance += e.c[i] * e.c[i];
    }
    e.s = std::sqrt(variance / float(n.dv) + m.epsilon);
    for (int64_t i = 0; i < n.dv; ++i)
      e.f[i] = e.c[i] / e.s;
  } else {
    for (int64_t i = 0; i < n.dv; ++i)
      e.f[i] = e.y[i];
  }
  if (m.residual) // dk == dv (the DSL checks it)
    for (int64_t i = 0; i < n.dv; ++i)
      e.f[i] += z[i];
}

// The LayerNorm's reverse, dn (of n = c / s) to dc (of c, s a function of c):
// dc = dn / s - c (dn . c) / (D s^3). It is symmetric in dn, so it is also the adjoint
// map of dc = LNback(r) with respect to r.
void layerNormBack(const MlpShape &n, const MlpEval &e, const float *dn, float *dc) {
  float dot = 0.0f;
  for (int64_t i = 0; i < n.dv; ++i)
    dot += dn[i] * e.c[i];
  const float scale = dot / (float(n.dv) * e.s * e.s * e.s);
  for (int64_t i = 0; i < n.dv; ++i)
    dc[i] = dn[i] / e.s - e.c[i] * scale;
}

// x -= mean(x).
void center(std::vector<float> &x) {
  float mean = 0.0f;
  for (float value : x)
    mean += value;
  mean /= float(x.size());
  for (float &value : x)
    value -= mean;
}

// The adjoint dy of the pre-norm output y from the adjoint dout of f's output (the
// residual's share is the caller's).
void outputBack(const MlpReference &m, const MlpShape &n, const MlpEval &e, const float *dout,
                std::vector<float> &dy) {
  if (!m.layerNorm) {
    std::copy(dout, dout + n.dv, dy.begin());
    return;
  }
  layerNormBack(n, e, dout, dy.data());
  center(dy);
}

// The inner gradient at W for the pair (k, v): g_W2 = dy h^T, g_W1 = da k^T with
// r = f(W; k) - v, dy its adjoint at y, e2 = W2^T dy, da = e2 act'(a).
struct InnerGradient {
  MlpEval eval;
  std::vector<float> r, dy, e2, da;

  explicit InnerGradient(const MlpShape &n)
      : eval(n), r(n.dv), dy(n.dv), e2(n.hidden), da(n.hidden) {}
};

void innerGradient(const MlpReference &m, const MlpShape &n, const float *W1, const float *W2,
                   const float *k, const float *v, InnerGradient &g) {
  evaluate(m, n, W1, W2, k, g.eval);
  for (int64_t i = 0; i < n.dv; ++i)
    g.r[i] = g.eval.f[i] - v[i];
  outputBack(m, n, g.eval, g.r.data(), g.dy);
  std::fill(g.e2.begin(), g.e2.end(), 0.0f);
  for (int64_t i = 0; i < n.dv; ++i)
    for (int64_t j = 0; j < n.hidden; ++j)
      g.e2[j] += W2[i * n.hidden + j] * g.dy[i];
  for (int64_t j = 0; j < n.hidden; ++j)
    g.da[j] = g.e2[j] * activateDerivative(m.activation, g.eval.a[j]);
}

// The carried tensors of one (batch, head) pair at one time in one flat buffer: W1,
// W2, then S1, S2 with momentum.
struct StateLayout {
  int64_t w1 = 0, w2 = 0, s1 = 0, s2 = 0, size = 0;
  int64_t weights = 0; // W1 and W2: what an anchor holds
  // Each tensor's place in the buffer and its index in metadata order.
  struct Part {
    int64_t offset, size;
    int index;
  };
  std::vector<Part> parts;

  StateLayout(const MlpReference &m, const MlpShape &n) {
    const int64_t layer1 = n.hidden * n.dk, layer2 = n.dv * n.hidden;
    w2 = layer1;
    s1 = w2 + layer2;
    s2 = s1 + layer1;
    size = m.momentum ? s2 + layer2 : s1;
    weights = layer1 + layer2;
    parts = {{w1, layer1, m.w1}, {w2, layer2, m.w2}};
    if (m.momentum)
      parts.insert(parts.end(), {{s1, layer1, m.s1}, {s2, layer2, m.s2}});
  }

  // One pair's tensors from per-state [B, H, ...] buffers (metadata order; a NULL or
  // missing entry: zeros).
  void gather(const std::vector<const float *> &from, int64_t pair, float *state) const {
    for (const Part &part : parts) {
      const float *source = size_t(part.index) < from.size() ? from[part.index] : nullptr;
      if (source)
        std::memcpy(state + part.offset, source + pair * part.size, sizeof(float) * part.size);
      else
        std::memset(state + part.offset, 0, sizeof(float) * part.size);
    }
  }

  // The inverse: one pair's part of the per-state buffers `to` (NULL entries skipped).
  void scatter(const float *state, int64_t pair, const std::vector<float *> &to) const {
    for (const Part &part : parts)
      if (to[part.index])
        std::memcpy(to[part.index] + pair * part.size, state + part.offset,
                    sizeof(float) * part.size);
  }
};

// The weights the inner gradient reads at token t of a walk from a sequence's start:
// those of `state` (W_{t-1}), or with chunks (C > 1) the chunk's anchor, which `anchor`
// takes from `state` at the chunk's first token.
const float *gradientWeights(int64_t t, int64_t C, const StateLayout &L, const float *state,
                             float *anchor) {
  if (C <= 1)
    return state;
  if (t % C == 0)
    std::copy_n(state, L.weights, anchor);
  return anchor;
}

struct TokenGates {
  int64_t index; // (b * T + t) * H + h
  float lr, beta, decay;
};

TokenGates gatesAt(const ReferenceModel &model, const Problem &p, int64_t b, int64_t t,
                   int64_t h) {
  TokenGates g;
  g.index = (b * p.length + t) * p.heads + h;
  g.lr = p.gates[model.etaGate][g.index];
  g.beta = model.momentumGate >= 0 ? p.gates[model.momentumGate][g.index] : 0.0f;
  g.decay = model.alphaGate >= 0 ? p.gates[model.alphaGate][g.index] : 1.0f;
  return g;
}

// next = one token's update of prev (next may not alias prev).
void advance(const MlpReference &m, const MlpShape &n, const StateLayout &L, const TokenGates &tg,
             const InnerGradient &g, const float *k, const float *prev, float *next) {
  for (int64_t i = 0; i < n.hidden; ++i)
    for (int64_t j = 0; j < n.dk; ++j) {
      const int64_t e = i * n.dk + j;
      const float grad = g.da[i] * k[j];
      if (m.momentum) {
        next[L.s1 + e] = tg.beta * prev[L.s1 + e] - tg.lr * grad;
        next[L.w1 + e] = tg.decay * prev[L.w1 + e] + next[L.s1 + e];
      } else {
        next[L.w1 + e] = tg.decay * prev[L.w1 + e] - tg.lr * grad;
      }
    }
  for (int64_t i = 0; i < n.dv; ++i)
    for (int64_t j = 0; j < n.hidden; ++j) {
      const int64_t e = i * n.hidden + j;
      const float grad = g.dy[i] * g.eval.h[j];
      if (m.momentum) {
        next[L.s2 + e] = tg.beta * prev[L.s2 + e] - tg.lr * grad;
        next[L.w2 + e] = tg.decay * prev[L.w2 + e] + next[L.s2 + e];
      } else {
        next[L.w2 + e] = tg.decay * prev[L.w2 + e] - tg.lr * grad;
      }
    }
}

} // namespace

void runMlpReference(const ReferenceModel &model, const Problem &p, float *o,
                     const std::vector<float *> &finalStates, int64_t pairBegin,
                     int64_t pairEnd) {
  const MlpReference &m = model.mlp;
  const MlpShape n{p.dk, p.dv, m.hidden};
  const StateLayout L(m, n);
  std::vector<float> state(L.size), next(L.size), anchor(L.weights);
  InnerGradient g(n);
  MlpEval read(n);
  for (int64_t pair = pairBegin; pair < pairEnd; ++pair) {
    const int64_t b = pair / p.heads, h = pair % p.heads;
    L.gather(p.initialStates, pair, state.data());
    for (int64_t t = 0; t < p.length; ++t) {
      const TokenGates tg = gatesAt(model, p, b, t, h);
      const float *q = p.q + tg.index * p.dk, *k = p.k + tg.index * p.dk;
      const float *v = p.v + tg.index * p.dv;
      const float *Wg = gradientWeights(t, model.chunk, L, state.data(), anchor.data());
      innerGradient(m, n, Wg + L.w1, Wg + L.w2, k, v, g);
      advance(m, n, L, tg, g, k, state.data(), next.data());
      std::swap(state, next);
      evaluate(m, n, state.data() + L.w1, state.data() + L.w2, q, read); // after the write
      std::copy(read.f.begin(), read.f.end(), o + tg.index * p.dv);
    }
    L.scatter(state.data(), pair, finalStates);
  }
}

void runMlpReferenceBackward(const ReferenceModel &model, const Problem &p,
                             const ReferenceAdjoints &d, int64_t segment, int64_t pairBegin,
                             int64_t pairEnd) {
  const MlpReference &m = model.mlp;
  const MlpShape n{p.dk, p.dv, m.hidden};
  const StateLayout L(m, n);
  const int64_t T = p.length, S = segment, N = (T - 1) / S + 1, C = model.chunk;
  const int64_t layer1 = n.hidden * n.dk, layer2 = n.dv * n.hidden;
  std::vector<float> checkpoints(N * L.size), states((S + 1) * L.size);
  std::vector<float> G(L.size);                // adjoint of the state after the token
  std::vector<float> anchor(L.weights);        // the checkpointing pass's anchor
  std::vector<float> anchorAdjoint(L.weights); // summed over the chunk (C > 1)
  std::vector<float> Gg1(layer1), Gg2(layer2); // adjoint of the inner gradient g_W1, g_W2
  std::vector<float> dy(n.dv), dh(n.hidden), da(n.hidden);
  std::vector<float> Gda(n.hidden), Ge2(n.hidden), Ga(n.hidden), Gh(n.hidden);
  std::vector<float> Gdy(n.dv), Gdc(n.dv), Gr(n.dv), Gc(n.dv), Gy(n.dv);
  InnerGradient g(n);
  MlpEval read(n);
  for (int64_t pair = pairBegin; pair < pairEnd; ++pair) {
    const int64_t b = pair / p.heads, h = pair % p.heads;
    // The state before every segment, from the initial one.
    float *W = states.data(), *scratch = states.data() + L.size;
    L.gather(p.initialStates, pair, W);
    for (int64_t t = 0; t < T; ++t) {
      if (t % S == 0)
        std::memcpy(checkpoints.data() + t / S * L.size, W, sizeof(float) * L.size);
      const TokenGates tg = gatesAt(model, p, b, t, h);
      const float *k = p.k + tg.index * p.dk, *v = p.v + tg.index * p.dv;
      const float *Wg = gradientWeights(t, C, L, W, anchor.data());
      innerGradient(m, n, Wg + L.w1, Wg + L.w2, k, v, g);
      advance(m, n, L, tg, g, k, W, scratch);
      std::memcpy(W, scratch, sizeof(float) * L.size);
    }
    L.gather(d.finalStates, pair, G.data());
    std::fill(anchorAdjoint.begin(), anchorAdjoint.end(), 0.0f);
    float *GW1 = G.data() + L.w1, *GW2 = G.data() + L.w2;
    // The momentum's adjoints (Titans); no such tensors without momentum.
    float *GS1 = m.momentum ? G.data() + L.s1 : nullptr;
    float *GS2 = m.momentum ? G.data() + L.s2 : nullptr;
    // Slot j's gradient weights: its own, or (segments start at chunk starts) those of
    // slot j - j % C, the chunk's anchor.
    auto slotGradientWeights = [&](int64_t j) {
      return states.data() + (C > 1 ? j - j % C : j) * L.size;
    };
    for (int64_t c = N - 1; c >= 0; --c) {
      const int64_t start = c * S, count = std::min(S, T - start);
      // Slot j: the state before token start + j (slot count: after the segment).
      std::memcpy(states.data(), checkpoints.data() + c * L.size, sizeof(float) * L.size);
      for (int64_t j = 0; j < count; ++j) {
        const TokenGates tg = gatesAt(model, p, b, start + j, h);
        const float *k = p.k + tg.index * p.dk, *v = p.v + tg.index * p.dv;
        const float *prev = states.data() + j * L.size;
        const float *Wg = slotGradientWeights(j);
        innerGradient(m, n, Wg + L.w1, Wg + L.w2, k, v, g);
        advance(m, n, L, tg, g, k, prev, states.data() + (j + 1) * L.size);
      }
      for (int64_t j = count - 1; j >= 0; --j) {
        const TokenGates tg = gatesAt(model, p, b, start + j, h);
        const float *q = p.q + tg.index * p.dk, *k = p.k + tg.index * p.dk;
        const float *v = p.v + tg.index * p.dv, *dO = d.o + tg.index * p.dv;
        float *dq = d.dq + tg.index * p.dk, *dk = d.dk + tg.index * p.dk;
        float *dv = d.dv + tg.index * p.dv;
        const float *prev = states.data() + j * L.size, *next = prev + L.size;
        const float *W1 = prev + L.w1, *W2 = prev + L.w2;
        // The weights the inner gradient read (W_{t-1} or the anchor) and where the
        // adjoint of that read goes (G, or the anchor's sum over the chunk).
        const float *Wg1 = slotGradientWeights(j) + L.w1, *Wg2 = slotGradientWeights(j) + L.w2;
        float *Hg1 = C > 1 ? anchorAdjoint.data() + L.w1 : GW1;
        float *Hg2 = C > 1 ? anchorAdjoint.data() + L.w2 : GW2;

        // The read, o = f(W_t; q): into G (of W_t) and dq.
        evaluate(m, n, next + L.w1, next + L.w2, q, read);
        outputBack(m, n, read, dO, dy);
        for (int64_t i = 0; i < n.dv; ++i)
          for (int64_t jj = 0; jj < n.hidden; ++jj)
            GW2[i * n.hidden + jj] += dy[i] * read.h[jj];
        std::fill(dh.begin(), dh.end(), 0.0f);
        for (int64_t i = 0; i < n.dv; ++i)
          for (int64_t jj = 0; jj < n.hidden; ++jj)
            dh[jj] += next[L.w2 + i * n.hidden + jj] * dy[i];
        for (int64_t i = 0; i < n.hidden; ++i)
          da[i] = dh[i] * activateDerivative(m.activation, read.a[i]);
        for (int64_t jj = 0; jj < n.dk; ++jj)
          dq[jj] = m.residual ? dO[jj] : 0.0f;
        for (int64_t i = 0; i < n.hidden; ++i)
          for (int64_t jj = 0; jj < n.dk; ++jj) {
            GW1[i * n.dk + jj] += da[i] * q[jj];
            dq[jj] += next[L.w1 + i * n.dk + jj] * da[i];
          }

        // The update. G becomes the adjoint of the state before the token, except the
        // inner gradient's reads of W1, W2 (added below); Gg1, Gg2 take g's adjoint.
        innerGradient(m, n, Wg1, Wg2, k, v, g);
        float dLr = 0.0f, dBeta = 0.0f, dDecay = 0.0f;
        // One layer: g = left right^T (g_W1 = da k^T, g_W2 = dy h^T).
        auto updateBack = [&](float *GW, float *GS, const float *Wp, const float *Sp,
                              const float *left, const float *right, int64_t rows,
                              int64_t cols, float *Gg) {
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t jj = 0; jj < cols; ++jj) {
              const int64_t e = i * cols + jj;
              const float grad = left[i] * right[jj];
              dDecay += GW[e] * Wp[e];
              if (m.momentum) { // S' = beta S - lr g, W' = decay W + S'
                GS[e] += GW[e];
                GW[e] *= tg.decay;
                dBeta += GS[e] * Sp[e];
                dLr -= GS[e] * grad;
                Gg[e] = -tg.lr * GS[e];
                GS[e] *= tg.beta;
              } else { // W' = decay W - lr g
                dLr -= GW[e] * grad;
                Gg[e] = -tg.lr * GW[e];
                GW[e] *= tg.decay;
              }
            }
        };
        const float *S1 = m.momentum ? prev + L.s1 : nullptr;
        const float *S2 = m.momentum ? prev + L.s2 : nullptr;
        updateBack(GW1, GS1, W1, S1, g.da.data(), k, n.hidden, n.dk, Gg1.data());
        updateBack(GW2, GS2, W2, S2, g.dy.data(), g.eval.h.data(), n.dv, n.hidden, Gg2.data());

        // The reverse of the inner gradient (its Hessian-vector products), from Gg1, Gg2.
        // g_W1 = da k^T:
        for (int64_t jj = 0; jj < n.dk; ++jj)
          dk[jj] = 0.0f;
        for (int64_t i = 0; i < n.hidden; ++i) {
          float sum = 0.0f;
          for (int64_t jj = 0; jj < n.dk; ++jj) {
            sum += Gg1[i * n.dk + jj] * k[jj];
            dk[jj] += Gg1[i * n.dk + jj] * g.da[i];
          }
          Gda[i] = sum;
        }
        // da = e2 act'(a):
        for (int64_t i = 0; i < n.hidden; ++i) {
          Ge2[i] = Gda[i] * activateDerivative(m.activation, g.eval.a[i]);
          Ga[i] = Gda[i] * g.e2[i] * activateSecondDerivative(m.activation, g.eval.a[i]);
        }
        // e2 = W2^T dy, and g_W2 = dy h^T:
        std::fill(Gh.begin(), Gh.end(), 0.0f);
        for (int64_t i = 0; i < n.dv; ++i) {
          float sum = 0.0f;
          for (int64_t jj = 0; jj < n.hidden; ++jj) {
            const int64_t e = i * n.hidden + jj;
            Hg2[e] += g.dy[i] * Ge2[jj];
            sum += Wg2[e] * Ge2[jj] + Gg2[e] * g.eval.h[jj];
            Gh[jj] += Gg2[e] * g.dy[i];
          }
          Gdy[i] = sum;
        }
        // dy from r: dy = r, or dy = center(LNback(r)) with c and s functions of y.
        if (m.layerNorm) {
          const MlpEval &e = g.eval;
          const float D = float(n.dv), s = e.s, s3 = s * s * s;
          Gdc = Gdy;
          center(Gdc);
          float P = 0.0f, GdcC = 0.0f, GdcR = 0.0f;
          for (int64_t i = 0; i < n.dv; ++i) {
            P += g.r[i] * e.c[i];
            GdcC += Gdc[i] * e.c[i];
            GdcR += Gdc[i] * g.r[i];
          }
          layerNormBack(n, e, Gdc.data(), Gr.data()); // dc is linear in r
          // dc = r / s - c P / (D s^3), P = r . c: its reads of c and s.
          float Gs = -GdcR / (s * s) + 3.0f * P * GdcC / (D * s3 * s);
          for (int64_t i = 0; i < n.dv; ++i)
            Gc[i] = -(Gdc[i] * P + GdcC * g.r[i]) / (D * s3);
          // r = [k +] c / s - v:
          float GrC = 0.0f;
          for (int64_t i = 0; i < n.dv; ++i) {
            Gc[i] += Gr[i] / s;
            GrC += Gr[i] * e.c[i];
          }
          Gs -= GrC / (s * s);
          // s = sqrt(mean(c^2) + eps), then c = y - mean(y):
          for (int64_t i = 0; i < n.dv; ++i)
            Gc[i] += Gs * e.c[i] / (D * s);
          Gy = Gc;
          center(Gy);
        } else {
          Gr = Gdy;
          Gy = Gdy;
        }
        for (int64_t i = 0; i < n.dv; ++i)
          dv[i] = -Gr[i];
        if (m.residual)
          for (int64_t i = 0; i < n.dv; ++i)
            dk[i] += Gr[i];
        // y = W2 h, h = act(a), a = W1 k:
        for (int64_t i = 0; i < n.dv; ++i)
          for (int64_t jj = 0; jj < n.hidden; ++jj) {
            const int64_t e = i * n.hidden + jj;
            Hg2[e] += Gy[i] * g.eval.h[jj];
            Gh[jj] += Wg2[e] * Gy[i];
          }
        for (int64_t i = 0; i < n.hidden; ++i)
          Ga[i] += Gh[i] * activateDerivative(m.activation, g.eval.a[i]);
        for (int64_t i = 0; i < n.hidden; ++i)
          for (int64_t jj = 0; jj < n.dk; ++jj) {
            Hg1[i * n.dk + jj] += Ga[i] * k[jj];
            dk[jj] += Wg1[i * n.dk + jj] * Ga[i];
          }

        d.gates[model.etaGate][tg.index] = dLr;
        if (model.momentumGate >= 0)
          d.gates[model.momentumGate][tg.index] = dBeta;
        if (model.alphaGate >= 0)
          d.gates[model.alphaGate][tg.index] = dDecay;
        if (C > 1 && (start + j) % C == 0) { // the anchor is the state before this token
          for (int64_t e = 0; e < L.weights; ++e)
            G[L.w1 + e] += anchorAdjoint[e];
          std::fill(anchorAdjoint.begin(), anchorAdjoint.end(), 0.0f);
        }
      }
    }
    L.scatter(G.data(), pair, d.initialStates);
  }
}

} // namespace miras::bench
