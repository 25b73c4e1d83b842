#!/usr/bin/env bash
# Runs the stock clients (OpenAI Python and Node SDKs, OpenAI Agents SDK, pi, LangChain, the
# Anthropic SDK, Claude Code, Gemini CLI, the google-genai SDKs for Python and JavaScript, Codex
# CLI and the Vercel AI SDK)
# against the real proxy, two instances of it behind an alternating front among others, in
# front of the tests' fake Vertex (built here as the example `fake_vertex`). Installs the
# pinned client versions first:
# Python packages into .venv, npm packages into tests/clients/node_modules (both git-ignored).
#
#   tests/clients/run.sh [PATH_TO_VERTEX_PROXY]   (default: target/release/vertex-proxy)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:-$root/target/release/vertex-proxy}
binary=$(realpath "$binary" 2>/dev/null || echo "$binary")
[[ -x $binary ]] || { echo "clients: no proxy binary at $binary; run cargo build --release --locked" >&2; exit 1; }

(cd "$root" && cargo build --locked --quiet --example fake_vertex)
fake=$root/target/debug/examples/fake_vertex

if [[ ! -x $root/.venv/bin/python ]]; then
  python3 -m venv "$root/.venv"
fi
"$root/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

cd "$here"
exec "$root/.venv/bin/python" run.py "$binary" "$fake"
