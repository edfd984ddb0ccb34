#!/usr/bin/env bash
# Installs a build into a fresh prefix and builds and runs the host programs of this
# directory against it: with CMake (find_package(miras), miras_add_module) and with
# pkg-config (miras, miras-cxx), then again from a copy of the prefix moved elsewhere.
# Also checks what the prefix promises: versioned SONAMEs, only the public API exported.
# Usage: test/install/check.sh BUILD_DIR   (CTest: install.prefix)
set -euo pipefail
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PREFIX=$WORK/prefix

step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "cmake --install $BUILD --prefix $PREFIX"
cmake --install "$BUILD" --prefix "$PREFIX" > "$WORK/install.log"
LIBDIR=$(dirname "$(find "$PREFIX" -name libmiras_runtime.so -print -quit)")
[ -n "$LIBDIR" ] || fail "no libmiras_runtime.so under $PREFIX"
for f in bin/mirasc bin/miras-opt bin/miras include/miras/runtime.h include/miras/runtime.hpp \
         include/miras/miras_abi.h include/miras/npy.hpp; do
  [ -e "$PREFIX/$f" ] || fail "$f was not installed"
done
for f in cmake/miras/mirasConfig.cmake cmake/miras/MirasModule.cmake pkgconfig/miras.pc \
         pkgconfig/miras-cxx.pc; do
  [ -e "$LIBDIR/$f" ] || fail "$LIBDIR/$f was not installed"
done

step "SONAMEs and exported symbols"
for lib in miras_runtime miras_runtime_cxx; do
  readelf -d "$LIBDIR/lib$lib.so" | grep -q "SONAME.*\[lib$lib\.so\.[0-9]*\]" ||
    fail "lib$lib.so has no versioned SONAME"
done
# The C library exports the functions of runtime.h and nothing else, and needs no C++.
exported=$(nm -D --defined-only "$LIBDIR/libmiras_runtime.so" | awk '$2 == "T" {print $3}' | sort)
declared=$(grep -o 'MIRAS_RUNTIME_API [a-z_0-9 *]*\bmiras_[a-z_0-9]*(' "$PREFIX/include/miras/runtime.h" |
           grep -o 'miras_[a-z_0-9]*($' | tr -d '(' | sort)
[ "$exported" = "$declared" ] ||
  fail "libmiras_runtime.so exports other symbols than runtime.h declares: $(comm -3 <(echo "$exported") <(echo "$declared") | tr '\n' ' ')"
if readelf -d "$LIBDIR/libmiras_runtime.so" | grep -q 'NEEDED.*libstdc++'; then
  fail "libmiras_runtime.so needs libstdc++"
fi

build_and_run() { # $1: prefix to build against
  local prefix=$1 out=$2
  step "CMake host project against $prefix"
  cmake -S "$HERE" -B "$out/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
    -DMIRAS_EXAMPLE="$ROOT/examples/linear_attention.miras" > "$out/configure.log" ||
    { cat "$out/configure.log"; fail "configure against $prefix"; }
  cmake --build "$out/cmake" > "$out/build.log" || { cat "$out/build.log"; fail "build"; }
  local module
  module=$(find "$out/cmake" -name libla.so -print -quit)
  readelf -d "$module" | grep -q 'SONAME.*\[libla\.so\]' || fail "libla.so has no SONAME"
  "$out/cmake/host_c"
  "$out/cmake/host_direct"
  "$out/cmake/host_cxx"

  step "pkg-config host programs against $prefix"
  local pcdir
  pcdir=$(dirname "$(find "$prefix" -name miras.pc -print -quit)")
  export PKG_CONFIG_PATH=$pcdir
  local libdir
  libdir=$(pkg-config --variable=libdir miras)
  cc -o "$out/host_pc" "$HERE/host.c" -DMODULE_PATH="\"$module\"" \
    $(pkg-config --cflags --libs miras) -lm -Wl,-rpath,"$libdir"
  "$out/host_pc"
  c++ -std=c++17 -o "$out/host_pc_cxx" "$HERE/host.cpp" -DMODULE_PATH="\"$module\"" \
    $(pkg-config --cflags --libs miras-cxx) -Wl,-rpath,"$libdir"
  "$out/host_pc_cxx"
  unset PKG_CONFIG_PATH
}

mkdir -p "$WORK/first" "$WORK/moved"
build_and_run "$PREFIX" "$WORK/first"
mv "$PREFIX" "$WORK/elsewhere"
build_and_run "$WORK/elsewhere" "$WORK/moved"
echo "install.prefix: ok"
