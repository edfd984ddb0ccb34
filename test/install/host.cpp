// host.cpp: the C++ wrapper (miras::runtime_cxx) over the module of host.c: o and the
// final state of a forward, and a second call continued from that state, which must
// equal one call over the whole sequence. Exit 0 when it does.
#include <cmath>
#include <cstdio>

#include <miras/runtime.hpp>

int main(int argc, char **argv) {
  try {
    miras::Library lib = miras::Library::open(argc > 1 ? argv[1] : MODULE_PATH);
    const int64_t B = 1, T = 6, H = 2, D = 8;
    miras::TensorMap whole;
    for (const char *name : {"q", "k", "v"}) {
      miras::Tensor t({B, T, H, D});
      for (int64_t i = 0; i < t.numel(); ++i)
        t.values()[i] = 0.5f * std::sin(0.29f * i + name[0]);
      whole[name] = t;
    }
    miras::TensorMap full = lib.forward(whole);
    // The same sequence in two calls of 3 tokens, the state carried.
    miras::TensorMap first, second;
    for (const char *name : {"q", "k", "v"}) {
      const miras::Tensor &t = whole.at(name);
      std::vector<float> head(t.values().begin(), t.values().begin() + 3 * H * D);
      std::vector<float> tail(t.values().begin() + 3 * H * D, t.values().end());
      first[name] = miras::Tensor({B, 3, H, D}, head);
      second[name] = miras::Tensor({B, 3, H, D}, tail);
    }
    miras::TensorMap a = lib.forward(first);
    second["W"] = a.at("W");
    miras::TensorMap b = lib.forward(second);
    double worst = 0;
    for (int64_t i = 0; i < 3 * H * D; ++i) {
      worst = std::fmax(worst, std::fabs(a.at("o").values()[i] - full.at("o").values()[i]));
      worst = std::fmax(worst, std::fabs(b.at("o").values()[i] -
                                         full.at("o").values()[3 * H * D + i]));
    }
    for (int64_t i = 0; i < full.at("W").numel(); ++i)
      worst = std::fmax(worst, std::fabs(b.at("W").values()[i] - full.at("W").values()[i]));
    std::printf("split vs whole: max difference %.3g\n", worst);
    return worst < 1e-6 ? 0 : 1;
  } catch (const miras::Error &e) {
    std::fprintf(stderr, "miras: %s\n", e.what());
    return 1;
  }
}
