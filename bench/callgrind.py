"""Instructions per request, counted by callgrind: deterministic where wall-clock figures are noisy.

Usage: python3 bench/callgrind.py [BINARY] [--requests N] [--runs R] [--stream]
                                  [--tool-call] [--signatures restore|fill|off] [--responses]

Runs `BINARY demo` (default target/release/vertex-proxy) under `valgrind --tool=callgrind`
twice per run, once with no request and once with N chat completions on one keep-alive
connection, and prints (total with N - total with none) / N for each run, then the median.
The demo's stand-in for Vertex runs in the same process, so its work is counted too: compare
two builds with the same settings, not a figure with one from elsewhere.

`--tool-call` asks Gemini 3 (`pro-preview`) for a call to a tool, which the stand-in signs;
`--signatures` sets THOUGHT_SIGNATURES, so that `restore` against `fill` is what splicing the
signature into the call's id costs. `--responses` sends the same request through
`/v1/responses` (translated to chat completions and back) instead of `/v1/chat/completions`.
"""

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading

KEY = "sk-demo-0123456789abcdef"


def instructions(binary, requests, stream, tool_call=False, signatures=None, responses=False):
    out = tempfile.mktemp(suffix=".callgrind")
    env = {"PATH": os.environ.get("PATH", ""), "PORT": "0", "WORKER_THREADS": "1", "HOME": tempfile.mkdtemp()}
    if signatures:
        env["THOUGHT_SIGNATURES"] = signatures
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "demo"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = None
    for line in proxy.stdout:
        match = re.search(r'"listen":"[^"]*:(\d+)"', line)
        if match:
            port = int(match.group(1))
            break
    if port is None:
        raise SystemExit("the proxy did not start under valgrind")
    # Its log goes on being read, or a full pipe would stop it.
    drain = threading.Thread(target=proxy.stdout.read, daemon=True)
    drain.start()
    body = {"model": "flash", "messages": [{"role": "user", "content": "one two three four"}]}
    if tool_call:
        body["model"] = "pro-preview"
        body["tools"] = [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]
    if stream:
        body["stream"] = True
    path = "/v1/chat/completions"
    if responses:
        path = "/v1/responses"
        body["input"] = body.pop("messages")
        for tool in body.get("tools", []):
            tool.update(tool.pop("function"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(requests):
        connection.request("POST", path, json.dumps(body),
                           {"x-api-key": KEY, "content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
    connection.close()
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(timeout=120)
    drain.join()
    with open(out) as data:
        text = data.read()
    os.unlink(out)
    total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return int(total.group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?", default="target/release/vertex-proxy")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--tool-call", action="store_true")
    parser.add_argument("--signatures", choices=["restore", "fill", "off"])
    parser.add_argument("--responses", action="store_true")
    args = parser.parse_args()
    per_request = []
    for _ in range(args.runs):
        settings = (args.stream, args.tool_call, args.signatures, args.responses)
        idle = instructions(args.binary, 0, *settings)
        busy = instructions(args.binary, args.requests, *settings)
        per_request.append((busy - idle) / args.requests)
        print(f"{per_request[-1] / 1000:.1f} k instructions per request")
    print(f"median {statistics.median(per_request) / 1000:.1f} k "
          f"({min(per_request) / 1000:.1f}-{max(per_request) / 1000:.1f}) over {args.runs} runs of {args.requests}")


if __name__ == "__main__":
    main()
