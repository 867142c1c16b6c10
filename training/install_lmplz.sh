#!/usr/bin/env bash
# Build KenLM's lmplz and build_binary (n-gram LM estimation, for hf_prunable_ctc.decoding.ngram_lm) and install
# them into PREFIX/bin (default /usr/local). Debian has no KenLM package and PyPI's kenlm wheel is the query module
# only, but its source distribution holds all of KenLM: it is fetched with pip and compiled with cmake (~1 minute on
# two cores). Needs a C++ compiler, cmake, zlib and Boost (Debian: libboost-program-options-dev
# libboost-system-dev libboost-thread-dev libboost-test-dev). Does nothing when both tools are on PATH already.
set -euo pipefail
prefix=${1:-/usr/local}
if command -v lmplz >/dev/null && command -v build_binary >/dev/null; then
    echo "lmplz and build_binary already on PATH: $(command -v lmplz)"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# --no-build-isolation: only the archive is wanted, not kenlm's build requirements.
python -m pip download -q --no-deps --no-binary :all: --no-build-isolation kenlm==0.3.0 -d "$work"
tar -xzf "$work"/kenlm-0.3.0.tar.gz -C "$work"
# Compiler output (KenLM's deprecation warnings) goes to a log, shown only if the build fails.
{ cmake -S "$work/kenlm-0.3.0" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    && cmake --build "$work/build" --target lmplz build_binary -j "$(nproc)"; } > "$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; exit 1; }
install -D -m 755 "$work/build/bin/lmplz" "$prefix/bin/lmplz"
install -D -m 755 "$work/build/bin/build_binary" "$prefix/bin/build_binary"
echo "installed $prefix/bin/lmplz and $prefix/bin/build_binary"
