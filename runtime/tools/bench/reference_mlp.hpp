// reference_mlp.hpp: the scalar references of the two-layer MLP memories (Titans,
// TTT-MLP), forward and backward; reference.hpp's runReference and runReferenceBackward
// call these for a ReferenceModel whose mlp.hidden is set.
#ifndef MIRAS_TOOLS_BENCH_REFERENCE_MLP_HPP
#define MIRAS_TOOLS_BENCH_REFERENCE_MLP_HPP

#include "reference.hpp"

namespace miras::bench {

void runMlpReference(const ReferenceModel &model, const Problem &problem, float *o,
                     const std::vector<float *> &finalStates, int64_t pairBegin,
                     int64_t pairEnd);

void runMlpReferenceBackward(const ReferenceModel &model, const Problem &problem,
                             const ReferenceAdjoints &adjoints, int64_t segment,
                             int64_t pairBegin, int64_t pairEnd);

} // namespace miras::bench

#endif // MIRAS_TOOLS_BENCH_REFERENCE_MLP_HPP
