#!/usr/bin/env bash
# Compares what two mirasc binaries emit, e.g. one built with GCC and one with clang:
# every example and every .miras under test/, at the stages derived, backward, linalg,
# gpu and llvm, with chunk 1 and 4. The IR must not depend on the compiler that built
# mirasc (C++ leaves argument evaluation order unspecified: one builder call per
# statement where two operands create ops). Prints each difference; exit 1 if any.
# Usage: scripts/compare_ir.sh MIRASC_A MIRASC_B
#   e.g. CC=clang-22 CXX=clang++-22 cmake -S . -B build-clang -G Ninja && cmake --build build-clang
#        scripts/compare_ir.sh build/bin/mirasc build-clang/bin/mirasc
set -uo pipefail
A=${1:?usage: scripts/compare_ir.sh MIRASC_A MIRASC_B}
B=${2:?usage: scripts/compare_ir.sh MIRASC_A MIRASC_B}
cd "$(dirname "$0")/.."
emit() { # mirasc file stage chunk: the output with the binary's own path taken out
  # chunk "4c": chunk 4 with the chunked algorithm (auto picks the sequential kernel for
  # these small states); where it does not apply both binaries give the same error.
  local extra=() chunk=$4
  case $2 in backward | linalg) extra=(--backward) ;; gpu) extra=(--target=cuda) ;; esac
  if [[ $chunk == 4c ]]; then chunk=4 extra+=(--algorithm=chunked); fi
  "$1" "$3" -DD=8 --chunk="$chunk" --emit="$2" "${extra[@]}" 2>&1 | sed "s#$1##g"
}
compared=0 differ=0
for f in examples/*.miras $(find test -name '*.miras' | sort); do
  for stage in derived backward linalg gpu llvm; do
    for chunk in 1 4 4c; do
      compared=$((compared + 1))
      if ! cmp -s <(emit "$A" $stage "$f" $chunk) <(emit "$B" $stage "$f" $chunk); then
        echo "differs: $f --emit=$stage --chunk=$chunk"
        differ=$((differ + 1))
      fi
    done
  done
done
echo "compare_ir: $compared outputs compared, $differ differ"
[[ $differ -eq 0 ]]
