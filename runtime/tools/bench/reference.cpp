// reference.cpp: scalar reference implementations of the linear-memory models of SPEC
// section 6 (linear attention, RetNet, Mamba2, GLA, DeltaNet, Gated DeltaNet, TTT-Linear).
//
// The loops are the recurrences of the SPEC table typed in literally, one token at a
// time, W stored as in SPEC section 8 ([dv, dk], f(W; k) = W k), with the chunk rule of
// section 7: every gradient is evaluated at W_a, the state at the start of the token's
// chunk (C = 1 is the exact sequential recurrence); for Gated DeltaNet (decay before the
// gradient) the residual is alpha_t W_a k_t - v_t, the convention of
// test/numeric/reference.py. Reads follow the module (after or before the write).
//
// This file is compiled WITHOUT auto-vectorisation (see runtime/CMakeLists.txt:
// -fno-tree-vectorize for GCC, -fno-vectorize -fno-slp-vectorize for Clang), so its
// timing is that of genuinely scalar code: it is the "x vs reference" of `miras bench`.
#include "reference.hpp"

#include <cstring>
#include <vector>

namespace miras::bench {

namespace {

const miras_gate_info *findGate(const miras_module_metadata &meta, const char *name,
                                int *index) {
  for (int32_t i = 0; i < meta.num_gates; ++i)
    if (std::strcmp(meta.gates[i].name, name) == 0) {
      *index = i;
      return &meta.gates[i];
    }
  return nullptr;
}

const miras_param_info *findParam(const miras_module_metadata &meta, const char *name) {
  for (int32_t i = 0; i < meta.num_params; ++i)
    if (std::strcmp(meta.params[i].name, name) == 0)
      return &meta.params[i];
  return nullptr;
}

struct GateSpec {
  const char *name;
  int32_t kind;
  int32_t axis;
};

// Checks that the module has exactly the expected gates and records their indices.
bool matchGates(const miras_module_metadata &meta, std::initializer_list<GateSpec> expected,
                ReferenceModel &model, std::string *whyNot) {
  if (meta.num_gates != static_cast<int32_t>(expected.size())) {
    *whyNot = "module '" + std::string(meta.name) + "' has " + std::to_string(meta.num_gates) +
              " gates, the reference expects " + std::to_string(expected.size());
    return false;
  }
  for (const GateSpec &spec : expected) {
    int index = -1;
    const miras_gate_info *gate = findGate(meta, spec.name, &index);
    if (!gate || gate->kind != spec.kind || gate->per_step ||
        (spec.kind == MIRAS_GATE_CHANNEL && gate->axis != spec.axis)) {
      *whyNot = "module '" + std::string(meta.name) + "' lacks the " +
                (spec.kind == MIRAS_GATE_SCALAR ? "scalar" : "key-axis channel") + " gate '" +
                spec.name + "' of the reference";
      return false;
    }
    if (std::strcmp(spec.name, "eta") == 0)
      model.etaGate = index;
    else
      model.alphaGate = index;
  }
  return true;
}

} // namespace

std::optional<ReferenceModel> findReference(const miras_module_metadata &meta,
                                            std::string *whyNot) {
  const std::string name = meta.name;
  ReferenceModel model;
  model.name = name;
  model.chunk = meta.chunk;
  model.readAfterWrite = meta.read_after_write != 0;
  const GateSpec eta{"eta", MIRAS_GATE_SCALAR, MIRAS_AXIS_NONE};
  const GateSpec alpha{"alpha", MIRAS_GATE_SCALAR, MIRAS_AXIS_NONE};
  const GateSpec alphaKeys{"alpha", MIRAS_GATE_CHANNEL, MIRAS_AXIS_KEY};
  bool gatesOk = false;
  if (name == "linear_attention") {
    model.kind = ReferenceKind::LinearAttention;
    gatesOk = matchGates(meta, {}, model, whyNot);
  } else if (name == "retnet") {
    model.kind = ReferenceKind::RetNet;
    const miras_param_info *gamma = findParam(meta, "gamma");
    if (!gamma) {
      *whyNot = "module 'retnet' has no param 'gamma' (its constant decay)";
      return std::nullopt;
    }
    model.constant = static_cast<float>(gamma->value);
    gatesOk = matchGates(meta, {}, model, whyNot);
  } else if (name == "mamba2") {
    model.kind = ReferenceKind::Mamba2;
    gatesOk = matchGates(meta, {alpha}, model, whyNot);
  } else if (name == "gla") {
    model.kind = ReferenceKind::Gla;
    gatesOk = matchGates(meta, {alphaKeys}, model, whyNot);
  } else if (name == "deltanet") {
    model.kind = ReferenceKind::DeltaNet;
    gatesOk = matchGates(meta, {eta}, model, whyNot);
  } else if (name == "gated_deltanet") {
    model.kind = ReferenceKind::GatedDeltaNet;
    gatesOk = matchGates(meta, {eta, alpha}, model, whyNot);
  } else if (name == "ttt_linear") {
    model.kind = ReferenceKind::TttLinear;
    // The learning rate is a param (inner_lr in examples/, or eta), or else a gate eta.
    const miras_param_info *lr = findParam(meta, "inner_lr");
    if (!lr)
      lr = findParam(meta, "eta");
    if (lr) {
      model.constantLr = true;
      model.constant = static_cast<float>(lr->value);
      gatesOk = matchGates(meta, {}, model, whyNot);
    } else {
      gatesOk = matchGates(meta, {eta}, model, whyNot);
    }
  } else {
    *whyNot = "no scalar reference for module '" + name +
              "' (references exist for the linear memories linear_attention, retnet, mamba2, "
              "gla, deltanet, gated_deltanet, ttt_linear)";
    return std::nullopt;
  }
  if (!gatesOk)
    return std::nullopt;
  if (meta.steps != 1 || meta.num_states != 1 || std::strcmp(meta.states[0].name, "W") != 0 ||
      meta.states[0].rank != 2 || meta.states[0].shape[0] != meta.dv ||
      meta.states[0].shape[1] != meta.dk) {
    *whyNot = "module '" + name + "' does not carry the single state W [dv, dk] of a linear "
              "memory with one (k, v) pair per token";
    return std::nullopt;
  }
  if (meta.chunk < 1) {
    *whyNot = "module '" + name + "' has chunk " + std::to_string(meta.chunk);
    return std::nullopt;
  }
  return model;
}

void runReference(const ReferenceModel &model, const Problem &p, float *o, float *finalState,
                  int64_t pairBegin, int64_t pairEnd) {
  const int64_t T = p.length, H = p.heads, dk = p.dk, dv = p.dv;
  const bool hasGradient = model.kind == ReferenceKind::DeltaNet ||
                           model.kind == ReferenceKind::GatedDeltaNet ||
                           model.kind == ReferenceKind::TttLinear;
  std::vector<float> anchor(dv * dk), residual(dv);
  for (int64_t pair = pairBegin; pair < pairEnd; ++pair) {
    const int64_t b = pair / H, h = pair % H;
    float *W = finalState + pair * dv * dk;
    std::memcpy(W, p.initialState + pair * dv * dk, sizeof(float) * dv * dk);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t token = (b * T + t) * H + h; // index of a scalar gate
      const float *k = p.k + token * dk;
      const float *q = p.q + token * dk;
      const float *v = p.v + token * dv;
      float *out = o + token * dv;
      const float eta = model.etaGate >= 0 ? p.gates[model.etaGate][token] : 0.0f;
      const float alpha = model.alphaGate >= 0 ? p.gates[model.alphaGate][token] : 0.0f;

      if (!model.readAfterWrite) // o_t = W_{t-1} q_t
        for (int64_t i = 0; i < dv; ++i) {
          float sum = 0.0f;
          for (int64_t j = 0; j < dk; ++j)
            sum += W[i * dk + j] * q[j];
          out[i] = sum;
        }

      if (hasGradient) {
        // W_a: the state at the start of this token's chunk (the previous one when C = 1).
        const float *Wa = W;
        if (model.chunk > 1) {
          if (t % model.chunk == 0)
            std::memcpy(anchor.data(), W, sizeof(float) * dv * dk);
          Wa = anchor.data();
        }
        // residual = (alpha_t for Gated DeltaNet) W_a k_t - v_t
        for (int64_t i = 0; i < dv; ++i) {
          float prediction = 0.0f;
          for (int64_t j = 0; j < dk; ++j)
            prediction += Wa[i * dk + j] * k[j];
          if (model.kind == ReferenceKind::GatedDeltaNet)
            prediction = alpha * prediction;
          residual[i] = prediction - v[i];
        }
      }

      switch (model.kind) {
      case ReferenceKind::LinearAttention:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] + v[i] * k[j];
        break;
      case ReferenceKind::RetNet:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = model.constant * W[i * dk + j] + v[i] * k[j];
        break;
      case ReferenceKind::Mamba2:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = alpha * W[i * dk + j] + v[i] * k[j];
        break;
      case ReferenceKind::Gla: {
        const float *alphaKeys = p.gates[model.alphaGate] + token * dk;
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] * alphaKeys[j] + v[i] * k[j];
        break;
      }
      case ReferenceKind::DeltaNet:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] - eta * residual[i] * k[j];
        break;
      case ReferenceKind::GatedDeltaNet:
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = alpha * W[i * dk + j] - eta * residual[i] * k[j];
        break;
      case ReferenceKind::TttLinear: {
        const float lr = model.constantLr ? model.constant : eta;
        for (int64_t i = 0; i < dv; ++i)
          for (int64_t j = 0; j < dk; ++j)
            W[i * dk + j] = W[i * dk + j] - lr * residual[i] * k[j];
        break;
      }
      }

      if (model.readAfterWrite) // o_t = W_t q_t
        for (int64_t i = 0; i < dv; ++i) {
          float sum = 0.0f;
          for (int64_t j = 0; j < dk; ++j)
            sum += W[i * dk + j] * q[j];
          out[i] = sum;
        }
    }
  }
}

} // namespace miras::bench
