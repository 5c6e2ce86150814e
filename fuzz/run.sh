#!/usr/bin/env bash
# Builds the fuzz targets with the stable toolchain and fuzzes each for a bounded time.
# libFuzzer comes from the libfuzzer-sys crate; the coverage instrumentation it needs is
# asked of rustc with stable codegen options (-C passes / -C llvm-args), so neither nightly
# nor cargo-fuzz is needed. A crash stops the run: its input is in fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh                 # every target, 20 s each (CI runs 10 s each: `run.sh 10`)
#   bash fuzz/run.sh 600 ps_result   # one target for 10 minutes
#
# The committed corpus (fuzz/corpus/<target>/) is only read; what the fuzzer learns goes to
# <target dir>/fuzz-corpus/<target>/, so longer runs on one machine build on each other.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
if ! command -v c++ >/dev/null 2>&1; then
    # libfuzzer-sys compiles libFuzzer (C++) in its build script.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/var/tmp/mailboxd-target}-fuzz}"
# What `cargo fuzz build --sanitizer none` passes, without its nightly-only flags.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth"
# With an explicit --target, RUSTFLAGS reach only the targets' code, not build scripts and
# proc macros (which libFuzzer's hooks would leave unlinkable).
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --bins --target "$host"
bin="$CARGO_TARGET_DIR/$host/release"
for t in "${targets[@]}"; do
    learned="$CARGO_TARGET_DIR/fuzz-corpus/$t"
    mkdir -p "$learned" "artifacts/$t"
    echo "== fuzz $t for ${seconds}s"
    # -max_len: 16 KiB keeps each run fast; bigger bodies are the poison samples' job.
    "$bin/$t" "$learned" "corpus/$t" \
        -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" 2>&1 |
        grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY|Done|    #|thread|panicked|artifact_prefix|Test unit written)' || true
    # The pipe hides libFuzzer's exit status: a crash leaves its input behind instead.
    if [ -n "$(ls -A "artifacts/$t")" ]; then
        echo "fuzz: $t crashed; inputs in fuzz/artifacts/$t/ (replay: $bin/$t <file>)" >&2
        exit 1
    fi
done
