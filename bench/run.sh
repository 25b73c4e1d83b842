#!/usr/bin/env bash
# The benchmark, in one command: builds the release binary, installs nginx and wrk if they are
# missing, measures every figure against the "direct" and "nginx" baselines on loopback, writes
# bench/results/latest.json and prints a Markdown table. Takes about two minutes.
# bench/run.sh --peers also installs LiteLLM's proxy and measures it the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "bench: installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked
PATH=$PATH:/usr/sbin exec python3 bench/bench.py "$@"
