#!/usr/bin/env bash
# Fuzzes the body rewrite and the key and alias parsers with cargo fuzz (libFuzzer).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 600 s, every target)
# The committed seeds are in fuzz/corpus/TARGET; what the fuzzer finds goes to
# fuzz/corpus-work/TARGET (ignored by git), and crashes to fuzz/artifacts/TARGET.
# cargo fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(rewrite keys_config aliases_config)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus-work/$target"
  echo "== $target, $seconds s"
  cargo fuzz run "$target" "fuzz/corpus-work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "fuzz/last-$target.log" \
    | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|Done [0-9]+ runs|==[0-9]+== ERROR|SUMMARY)' || true
  if grep -q 'ERROR: libFuzzer\|panicked' "fuzz/last-$target.log"; then
    echo "fuzz: $target found a failure; see fuzz/last-$target.log and fuzz/artifacts/$target" >&2
    exit 1
  fi
done
