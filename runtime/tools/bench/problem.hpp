// problem.hpp: the inputs of one `miras bench` run, shared by the compiled module, the
// scalar reference and the hand-fused baseline so that all three see the same numbers.
#ifndef MIRAS_TOOLS_BENCH_PROBLEM_HPP
#define MIRAS_TOOLS_BENCH_PROBLEM_HPP

#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace miras::bench {

// Tensors in the layout of SPEC section 8 (C-contiguous float32):
//   q, k [B, T, H, dk]; v, o [B, T, H, dv]; scalar gate [B, T, H];
//   channel gate [B, T, H, dim]; state [B, H, shape] (linear W: [B, H, dv, dk]).
struct Problem {
  int64_t batch = 0, length = 0, heads = 0, dk = 0, dv = 0;
  const float *q = nullptr, *k = nullptr, *v = nullptr;
  std::vector<const float *> gates;     // metadata->gates order
  std::vector<const float *> initialStates; // metadata->states order
};

// Runs body(begin, end) over the flattened B * H (batch, head) pairs split into
// `threads` contiguous ranges, one std::thread each (the caller's thread takes the
// first), the way the runtime's pool splits a forward: every pair runs on one thread.
inline void forEachPairRange(int64_t pairs, int threads,
                             const std::function<void(int64_t, int64_t)> &body) {
  if (threads <= 1 || pairs <= 1) {
    body(0, pairs);
    return;
  }
  int64_t parts = threads < pairs ? threads : pairs;
  std::vector<std::thread> workers;
  for (int64_t p = 1; p < parts; ++p)
    workers.emplace_back(body, pairs * p / parts, pairs * (p + 1) / parts);
  body(0, pairs / parts);
  for (std::thread &worker : workers)
    worker.join();
}

} // namespace miras::bench

#endif // MIRAS_TOOLS_BENCH_PROBLEM_HPP
