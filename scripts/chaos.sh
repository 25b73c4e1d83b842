#!/usr/bin/env bash
# The long chaos run: 100,000 requests (or $1) with faults from Vertex and from clients mixed
# at random, every outcome checked. Prints the counts per fault and the RSS before and after.
#   scripts/chaos.sh [REQUESTS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_REQUESTS=${1:-100000}
[[ -z ${2:-} ]] || export CHAOS_SEED=$2
exec cargo test --release --locked --test it chaos::chaos -- --exact --nocapture
