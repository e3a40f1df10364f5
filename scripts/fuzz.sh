#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each
# (default 20), starting from the committed seeds in fuzz/seeds (the
# contract's vectors, a real segment) plus what earlier runs found in
# fuzz/corpus, and prints how many inputs each ran without a crash.
# A crash stops the script with the input saved under fuzz/artifacts.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_SANITIZER=address scripts/fuzz.sh 3600 event   # a long run, with ASan
#
# cargo fuzz passes unstable -Z flags to rustc; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain take them. cargo-fuzz is installed on first use.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(event framing jwks proof record)
fi
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz; about half a minute, once)"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}

cargo fuzz build --sanitizer "$sanitizer" "${targets[@]/#/}" >/dev/null 2>&1 || {
  # build one at a time to show the error
  for t in "${targets[@]}"; do cargo fuzz build --sanitizer "$sanitizer" "$t"; done
}
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log=$(mktemp)
  if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz.sh: $t crashed; the input is in fuzz/artifacts/$t" >&2
    rm -f "$log"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(sed -n 's/.*#[0-9]*.*DONE *cov: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  echo "fuzz: $t: ${runs:-?} inputs in ${secs} s without a crash (coverage ${cov:-?} edges, corpus $(ls "corpus/$t" | wc -l) files)"
  rm -f "$log"
done
