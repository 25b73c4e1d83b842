#!/usr/bin/env python3
"""Peak memory (VmHWM) of one large chat request whose shape the thought-signature pass walks.

For each case a fresh proxy (the defaults: `MAX_BODY_BYTES` 32 MiB, `THOUGHT_SIGNATURES`
restore) gets one POST of about 32 MB, in front of an upstream of our own that reads the
whole body and answers a small completion; the figure is the proxy's VmHWM after the answer,
with its idle VmHWM beside it, and the CPU time the process has used (start included).

Usage, from the project root after `cargo build --release`:
  python3 bench/signature_peaks.py [CASE ...]
VERTEX_PROXY_BINARY measures another build, e.g. the one before a change.
"""

import base64
import hashlib
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("VERTEX_PROXY_BINARY") or os.path.join(ROOT, "target", "release", "vertex-proxy")
KEY = "sk_bench_0123456789abcdef"
SIZE = 32_000_000


def repeated(prefix, unit, suffix):
    """`prefix` + as many `unit`s, comma-separated, as fit in SIZE + `suffix`."""
    n = (SIZE - len(prefix) - len(suffix)) // (len(unit) + 1)
    return (prefix + ",".join([unit] * n) + suffix).encode()


def conversation():
    """A tool loop as an agent sends it: user, assistant call, tool result, over and over."""
    step = ('{"role":"user","content":"%s"},{"role":"assistant","content":null,"tool_calls":'
            '[{"id":"call_%d","type":"function","function":{"name":"get_weather",'
            '"arguments":"{\\"city\\":\\"Paris\\"}"}}]},'
            '{"role":"tool","tool_call_id":"call_%d","content":"%s"}')
    size = len(step % ("x" * 200, 10**6, 10**6, "y" * 300)) + 1
    steps = [step % ("x" * 200, i, i, "y" * 300) for i in range(SIZE // size)]
    return ('{"model":"pro-preview","messages":[' + ",".join(steps) + "]}").encode()


def shared_detail():
    """Eight calls that name one 2 MB `reasoning_details` signature."""
    data = "QUFB" * (2_000_000 // 4)
    calls = ",".join(['{"id":"x"}'] * 8)
    return ('{"model":"pro-preview","messages":[{"role":"assistant","tool_calls":[%s],'
            '"reasoning_details":[{"type":"reasoning.encrypted","id":"x","data":"%s"}]}]}'
            % (calls, data)).encode()


def named_detail():
    """One assistant message: `{"id":"x"}` again and again, and one detail for `x`."""
    detail = '],"reasoning_details":[{"type":"reasoning.encrypted","id":"x","data":"QUFB"}]}]}'
    return repeated('{"model":"pro-preview","messages":[{"role":"assistant","tool_calls":[', '{"id":"x"}', detail)


def carried_ids():
    """One assistant message: calls whose ids carry a (one-byte) signature, again and again."""
    signature = b"\0"
    carried = base64.urlsafe_b64encode(signature + hashlib.sha256(signature).digest()[:4]).rstrip(b"=").decode()
    return repeated('{"model":"pro-preview","messages":[{"role":"assistant","tool_calls":[',
                    '{"id":"x__thought__%s"}' % carried, "]}]}")


CASES = {
    # The outside review's: a user's `reasoning_details` of `{}`, on a Gemini 3 model and on
    # `flash` with the marker somewhere in the body (which alone makes the pass run).
    "user_details": lambda: repeated('{"model":"pro-preview","messages":[{"role":"user","reasoning_details":[', "{}", "]}]}"),
    "flash_marker": lambda: repeated('{"model":"flash","x":"__thought__","messages":[{"role":"user","reasoning_details":[', "{}", "]}]}"),
    "empty_messages": lambda: repeated('{"model":"pro-preview","messages":[', "{}", "]}"),
    "empty_calls": lambda: repeated('{"model":"pro-preview","messages":[{"role":"assistant","tool_calls":[', "{}", "]}]}"),
    # Every message a step to fill: the splices are the work, one per message.
    "filled_steps": lambda: repeated('{"model":"pro-preview","messages":[', '{"role":"assistant","tool_calls":[{}]}', "]}"),
    "conversation": conversation,
    "shared_detail": shared_detail,
    # Every call restored from the one detail: the densest splices a body can ask.
    "named_detail": named_detail,
    "carried_ids": carried_ids,
}


class Upstream(http.server.BaseHTTPRequestHandler):
    """Vertex and the metadata server in one: reads every body whole, answers a completion."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return total
                while size:
                    got = len(self.rfile.read(min(size, 1 << 20)))
                    size -= got
                    total += got
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", 0))
        while total < length:
            total += len(self.rfile.read(min(length - total, 1 << 20)))
        return total

    def reply(self, content_type, text):
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.endswith("/project/project-id"):
            return self.reply("application/text", "bench")
        self.reply("application/json", '{"access_token":"t","expires_in":3599,"token_type":"Bearer"}')

    def do_POST(self):
        received = self.read_body()
        self.reply("application/json", json.dumps({
            "id": "x", "object": "chat.completion", "received": received,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_mib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def measure(case, upstream_port):
    body = CASES[case]()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "PORT": str(port),
        "API_KEYS_JSON": json.dumps([{"id": "bench", "key": KEY}]), "GOOGLE_CLOUD_PROJECT": "bench",
        "VERTEX_BASE_URL": f"http://127.0.0.1:{upstream_port}", "GCE_METADATA_HOST": f"127.0.0.1:{upstream_port}",
        "MODEL_ALIASES_JSON": json.dumps({"flash": "google/gemini-2.5-flash", "pro-preview": "google/gemini-3.1-pro-preview"}),
    }
    proxy = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        idle = status_mib(proxy.pid, "VmHWM")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("POST", "/v1/chat/completions", body=body,
                           headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        answer = connection.getresponse()
        sent_on = json.loads(answer.read()).get("received")
        # A request the proxy refuses (400 too_many_tool_calls) sends Vertex nothing.
        sent = "nothing" if sent_on is None else f"{sent_on / 1e6:.1f} MB"
        print(f"| {case} | {len(body) / 1e6:.1f} MB | {answer.status} | {sent} "
              f"| {idle:.0f} MiB | {status_mib(proxy.pid, 'VmHWM'):.0f} MiB | {cpu_ms(proxy.pid)} ms |", flush=True)
    finally:
        proxy.terminate()
        proxy.wait(15)


def main():
    cases = sys.argv[1:] or list(CASES)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("| case | body | status | sent on | idle VmHWM | peak VmHWM | CPU |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        measure(case, server.server_address[1])


if __name__ == "__main__":
    main()
