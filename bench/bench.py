"""The vertex-proxy benchmark: run by bench/run.sh, which builds the release binary first.

Everything runs on loopback. The fake Vertex is nginx serving fixed responses (and the
metadata token); the SSE figures use a small asyncio upstream of our own, since they need
timed chunks. Each figure is measured for the proxy and, where it applies, for two baselines
in the same run: "direct" (client straight to the fake) and "nginx" (nginx as a reverse proxy
that checks a key with a map, sets Authorization, and does not buffer).

Writes bench/results/latest.json and prints a Markdown table. With --peers it also installs
LiteLLM's proxy (pinned, into bench/.venv-peers) and measures it against the same fake.
"""

import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# VERTEX_PROXY_BINARY measures another build, e.g. the one before a change.
BINARY = os.environ.get("VERTEX_PROXY_BINARY") or os.path.join(ROOT, "target", "release", "vertex-proxy")
KEY = "sk_bench_0123456789abcdef"
PROJECT = "bench"
CHAT_PATH = f"/v1/projects/{PROJECT}/locations/global/endpoints/openapi/chat/completions"
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "google/gemini-2.5-flash",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
})
CHAT_BODY = json.dumps({"model": "flash", "messages": [{"role": "user", "content": "Hello"}]})
# Claude through /v1/messages: the alias, the body, and the path Vertex is asked for.
CLAUDE_ALIAS = {"model": "anthropic/claude-sonnet-4-5@20250929", "location": "us-east5"}
CLAUDE_BODY = json.dumps({"model": "sonnet", "stream": True, "max_tokens": 64,
                          "messages": [{"role": "user", "content": "Hello"}]})
CLAUDE_PATH = (f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/"
               "claude-sonnet-4-5@20250929:streamRawPredict")
# Gemini's own API: the proxy's path, the body, and Vertex's native path it goes to.
GEMINI_BODY = json.dumps({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]})
GEMINI_PROXY_PATH = "/v1beta/models/flash:streamGenerateContent?alt=sse"
GEMINI_PATH = (f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/"
               "gemini-2.5-flash:streamGenerateContent?alt=sse")
TMP = tempfile.mkdtemp(prefix="vertex-proxy-bench-")
PROCESSES = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- nginx

NGINX_CONF = """
worker_processes 2;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    client_max_body_size 64m;
    keepalive_requests 1000000;

    # The fake Vertex, and the metadata server's token.
    server {{
        listen 127.0.0.1:{upstream};
        location ~ /chat/completions$ {{ default_type application/json; return 200 '{completion}'; }}
        location = /computeMetadata/v1/instance/service-accounts/default/token {{
            default_type application/json;
            return 200 '{{"access_token":"ya29.bench","expires_in":3599,"token_type":"Bearer"}}';
        }}
        location = /computeMetadata/v1/project/project-id {{ return 200 '{project}'; }}
    }}

    # The fake Vertex again over TLS with HTTP/2, as Google's front ends are (the tests' CA).
    server {{
        listen 127.0.0.1:{tls} ssl http2;
        ssl_certificate {root}/tests/tls/leaf.pem;
        ssl_certificate_key {root}/tests/tls/leaf.key;
        location ~ /chat/completions$ {{ default_type application/json; return 200 '{completion}'; }}
    }}

    # The nginx baseline: the nearest same job as the proxy.
    map $http_x_api_key $key_ok {{ "{key}" 1; default 0; }}
    upstream vertex {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{nginx};
        location / {{
            if ($key_ok = 0) {{ return 401; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header x-api-key "";
            proxy_set_header Authorization "Bearer ya29.bench";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_pass http://vertex;
        }}
    }}
}}
"""


def start_nginx(upstream, nginx, tls):
    for sub in ("body", "proxy"):
        os.makedirs(os.path.join(TMP, sub), exist_ok=True)
    conf = NGINX_CONF.format(tmp=TMP, upstream=upstream, nginx=nginx, tls=tls, root=ROOT, key=KEY, project=PROJECT,
                             completion=COMPLETION.replace("'", ""),
                             user="user root;" if os.geteuid() == 0 else "")
    path = os.path.join(TMP, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    process = subprocess.Popen(["nginx", "-p", TMP, "-c", path, "-g", "daemon off;"])
    PROCESSES.append(process)
    wait_for_port(upstream)
    wait_for_port(nginx)
    wait_for_port(tls)


def wait_for_port(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"nothing listens on {port}")


# ---------------------------------------------------------------------------- the proxy

def proxy_env(port, upstream_url, metadata_port):
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": TMP,
        "PORT": str(port),
        "API_KEYS_JSON": json.dumps([{"id": "bench", "key": KEY}]),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "VERTEX_BASE_URL": upstream_url,
        "GCE_METADATA_HOST": f"127.0.0.1:{metadata_port}",
        "MAX_BODY_BYTES": str(64 * 1024 * 1024),
        "MODEL_ALIASES_JSON": json.dumps({"flash": "google/gemini-2.5-flash", "sonnet": CLAUDE_ALIAS}),
    }


def start_proxy(port, upstream_url, metadata_port):
    process = subprocess.Popen([BINARY], env=proxy_env(port, upstream_url, metadata_port),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCESSES.append(process)
    wait_for_port(port)
    return process


def stop(process):
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=15)
    if process in PROCESSES:
        PROCESSES.remove(process)


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def http_status(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


# ---------------------------------------------------------------------------- figures

def cold_start(metadata_port, upstream_url, runs=10, extra_env=None, kinds=("health", "completion")):
    """exec → first 200 on /healthz, and exec → first proxied completion (token included)."""
    health, completion = [], []
    for _ in range(runs):
        for kind, series in (("health", health), ("completion", completion)):
            if kind not in kinds:
                continue
            port = free_port()
            env = {**proxy_env(port, upstream_url, metadata_port), **(extra_env or {})}
            started = time.perf_counter()
            process = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while True:
                try:
                    if kind == "health":
                        status = http_status(port, "GET", "/healthz")
                    else:
                        status = http_status(port, "POST", "/v1/chat/completions", CHAT_BODY,
                                             {"x-api-key": KEY, "content-type": "application/json"})
                    if status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.0002)
            series.append((time.perf_counter() - started) * 1000)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
    return statistics.median(health or [0]), statistics.median(completion)


def cold_tls(metadata_port, tls_port, runs=10):
    """exec → first completion against the TLS (HTTP/2) fake, with and without the upstream
    connection opened at startup."""
    result = {}
    for preconnect in ("true", "false"):
        env = {"UPSTREAM_CA_FILE": os.path.join(ROOT, "tests", "tls", "ca.pem"), "UPSTREAM_PRECONNECT": preconnect}
        _, ms = cold_start(metadata_port, f"https://localhost:{tls_port}", runs, env, kinds=("completion",))
        result["preconnect" if preconnect == "true" else "no_preconnect"] = ms
    return result


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["content-type"] = "application/json"
wrk.headers["{header}"] = "{value}"
"""


def wrk(url, connections, seconds, threads, bearer=False):
    script = os.path.join(TMP, "post.lua")
    header, value = ("authorization", f"Bearer {KEY}") if bearer else ("x-api-key", KEY)
    with open(script, "w") as f:
        f.write(WRK_SCRIPT.format(body=CHAT_BODY, header=header, value=value))
    output = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                             "-s", script, url], capture_output=True, text=True, check=True).stdout

    def latency(label):
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        match = re.search(pattern, output)
        if match:
            errors += sum(int(g) for g in match.groups())
    return {"p50_ms": latency("50"), "p99_ms": latency("99"),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "requests": requests, "errors": errors}


# A tiny SSE upstream: each request gets CHUNKS events, one every INTERVAL, each carrying the
# monotonic time it was sent, so the client can measure the delay of every chunk. Claude's
# path gets Anthropic's framing, with a `vertex_event` after every tenth event, as Vertex
# sends them (the proxy drops those).
async def sse_upstream(port, chunks, interval):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1)) if b"ontent-" in head.lower() else 0
                if length:
                    await reader.readexactly(length)
                if b"/computeMetadata/" in head.split(b"\r\n", 1)[0]:
                    body = b'{"access_token":"ya29.bench","expires_in":3599,"token_type":"Bearer"}'
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                claude = b"/publishers/anthropic/" in head.split(b"\r\n", 1)[0]
                for n in range(chunks):
                    data = b"data: {\"t\":%d}\n\n" % time.monotonic_ns()
                    if claude:
                        data = b"event: content_block_delta\n" + data
                        if n % 10 == 9:
                            data += b"event: vertex_event\ndata: {\"type\":\"vertex_event\"}\n\n"
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                    await writer.drain()
                    await asyncio.sleep(interval)
                done = b"event: message_stop\ndata: [DONE]\n\n" if claude else b"data: [DONE]\n\n"
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)


async def read_stream(port, path, headers, delays, body=CHAT_BODY):
    """One SSE request; appends each chunk's delay in ms. Returns True if it ended cleanly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    request += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n" + body
    writer.write(request.encode())
    await writer.drain()
    buffer = b""
    done = False
    try:
        while not done:
            data = await reader.read(65536)
            if not data:
                break
            now = time.monotonic_ns()
            buffer += data
            for match in re.finditer(rb'data: \{"t":(\d+)\}', buffer):
                delays.append((now - int(match.group(1))) / 1e6)
            done = b"[DONE]" in buffer
            buffer = buffer[buffer.rfind(b"\n\n") + 2:] if b"\n\n" in buffer else buffer
    finally:
        writer.close()
    return done


def start_sse_upstream(port, chunks, interval):
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sse-upstream",
                                str(port), str(chunks), str(interval)])
    PROCESSES.append(process)
    wait_for_port(port)


def serve_sse_upstream(port, chunks, interval):
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)

    async def forever():
        server = await sse_upstream(port, chunks, interval)
        async with server:
            await server.serve_forever()

    asyncio.run(forever())


async def streaming(sse_port, proxy_port, streams, chunks_each, rounds=1, claude=False, gemini=False):
    """`streams` SSE streams at once, direct then through the proxy, `rounds` times over (the
    machine drifts). Each side's figures pool every round; `added_p99_ms` is the median of the
    rounds' paired p99 differences. `claude`: Claude's stream, through /v1/messages; `gemini`:
    Gemini's own API, through /v1beta/models/…:streamGenerateContent."""
    delays = {"direct": [], "proxy": []}
    failures = {"direct": 0, "proxy": 0}
    added = []
    body = CLAUDE_BODY if claude else GEMINI_BODY if gemini else CHAT_BODY
    direct_path, proxy_path = ((CLAUDE_PATH, "/v1/messages") if claude
                               else (GEMINI_PATH, GEMINI_PROXY_PATH) if gemini
                               else (CHAT_PATH, "/v1/chat/completions"))
    for _ in range(rounds):
        p99 = {}
        for name, port, path, headers in (("direct", sse_port, direct_path, {}),
                                          ("proxy", proxy_port, proxy_path, {"x-api-key": KEY})):
            round_delays = []
            ok = await asyncio.gather(*(read_stream(port, path, headers, round_delays, body) for _ in range(streams)))
            failures[name] += ok.count(False)
            delays[name] += round_delays
            p99[name] = percentile(round_delays, 99)
        added.append(p99["proxy"] - p99["direct"])
    results = {name: {"p50_ms": statistics.median(d), "p99_ms": percentile(d, 99),
                      "chunks": len(d), "failures": failures[name]} for name, d in delays.items()}
    results["added_p99_ms"] = statistics.median(added)
    results["rounds_added_p99_ms"] = [round(a, 2) for a in added]
    return results


def chat_urls(upstream_url, nginx_port, port):
    return {"direct": f"{upstream_url}{CHAT_PATH}",
            "nginx": f"http://127.0.0.1:{nginx_port}{CHAT_PATH}",
            "proxy": f"http://127.0.0.1:{port}/v1/chat/completions"}


def throughput(upstream_url, metadata_port, nginx_port, count):
    """64 clients for 5 s, the three interleaved, `count` rounds (the machine's speed drifts over
    seconds); the figure is the round with the median proxy-to-nginx ratio, all ratios beside it.
    A proxy of its own, warmed up first: each worker's allocator reaches its working size only
    after some 100k requests (BENCHMARKS.md)."""
    port = free_port()
    proxy = start_proxy(port, upstream_url, metadata_port)
    urls = chat_urls(upstream_url, nginx_port, port)
    for _ in range(4):
        wrk(urls["proxy"], 4, 3, 1)
    rounds = [{name: wrk(url, 64, 5, 2) for name, url in urls.items()} for _ in range(count)]
    stop(proxy)
    ratios = [r["proxy"]["rps"] / r["nginx"]["rps"] for r in rounds]
    rounds.sort(key=lambda r: r["proxy"]["rps"] / r["nginx"]["rps"])
    return dict(rounds[len(rounds) // 2], ratios=[round(x, 3) for x in ratios],
                median_ratio=round(statistics.median(ratios), 3),
                errors=sum(r["proxy"]["errors"] for r in rounds))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def large_request(port_direct, port_proxy, runs=9):
    """A 20 MiB body, direct and through the proxy in alternation (the machine drifts);
    the added time is the median of the paired differences."""
    import base64
    image = base64.b64encode(os.urandom(15 * 1024 * 1024)).decode()  # about 20 MiB of base64
    body = json.dumps({"model": "flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}}]}]}).encode()
    timings = {"direct": [], "proxy": []}
    for _ in range(runs):
        for name, port, path in (("direct", port_direct, CHAT_PATH), ("proxy", port_proxy, "/v1/chat/completions")):
            started = time.perf_counter()
            status = http_status(port, "POST", path, body, {"x-api-key": KEY, "content-type": "application/json"})
            timings[name].append((time.perf_counter() - started) * 1000)
            assert status == 200, f"{name}: {status}"
    added = statistics.median(p - d for d, p in zip(timings["direct"], timings["proxy"]))
    return len(body), {name: statistics.median(series) for name, series in timings.items()}, added


def memory_budget(metadata_port, clients=16):
    """`clients` bodies of nearly 32 MiB at once, with the default MAX_BUFFERED_BYTES: how many
    are served and how many refused with 503, and the proxy's peak RSS."""
    import concurrent.futures
    upstream_port, port = free_port(), free_port()
    start_sse_upstream(upstream_port, 0, 0)  # reads each whole body, then answers
    env = proxy_env(port, f"http://127.0.0.1:{upstream_port}", metadata_port)
    env["MAX_BODY_BYTES"] = str(32 * 1024 * 1024)
    process = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCESSES.append(process)
    wait_for_port(port)
    pad = 32 * 1024 * 1024 - 100
    body = b'{"model":"flash","messages":[],"pad":"' + b"x" * pad + b'"}'

    def one(_):
        return http_status(port, "POST", "/v1/chat/completions", body,
                           {"x-api-key": KEY, "content-type": "application/json"})

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(one, range(clients)))
    alive = http_status(port, "GET", "/health") == 200
    peak = status_kib(process.pid, "VmHWM")
    stop(process)
    return {"clients": clients, "body_bytes": len(body), "served": statuses.count(200),
            "refused_503": statuses.count(503), "other": len(statuses) - statuses.count(200) - statuses.count(503),
            "alive_after": alive, "peak_rss_kib": peak}


def refusals(requests=5000, warm=500):
    """A private service that refuses every request with 401 (no roles/run.invoker, say):
    the proxy's RSS after `warm` requests and after `requests`, and how many ID tokens it
    fetched and calls it made. Each credential built anew keeps a refresh task until its
    token expires, so one per request made memory grow for the life of the token."""
    import base64
    import http.server
    import threading
    counts = {"identity": 0, "service": 0}

    def b64(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    class Fake(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, content_type, body):
            body = body.encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if "/service-accounts/default/identity" in self.path:
                counts["identity"] += 1
                claims = {"iss": "https://accounts.google.com", "aud": "bench", "sub": "1",
                          "iat": int(time.time()), "exp": int(time.time()) + 3600}
                self.answer(200, "text/plain", f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.c2ln")
            elif "/service-accounts/default/token" in self.path:
                self.answer(200, "application/json",
                            json.dumps({"access_token": "ya29.bench", "expires_in": 3599, "token_type": "Bearer"}))
            else:
                self.answer(404, "text/plain", "not found")

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            counts["service"] += 1
            self.answer(401, "text/html", "<html><body><h1>Error: Unauthorized</h1></body></html>")

    fake_port, port = free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", fake_port), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = proxy_env(port, f"http://127.0.0.1:{fake_port}", fake_port)
    env["MODEL_ALIASES_JSON"] = json.dumps(
        {"flash": "google/gemini-2.5-flash",
         "gemma": {"upstream": f"http://127.0.0.1:{fake_port}/v1", "model": "gemma"}})
    process = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCESSES.append(process)
    wait_for_port(port)
    body = json.dumps({"model": "gemma", "messages": [{"role": "user", "content": "Hello"}]})
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = {}
    rss = {}
    for n in range(1, requests + 1):
        connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if n in (warm, requests):
            rss[n] = status_kib(process.pid, "VmRSS")
    connection.close()
    stop(process)
    server.shutdown()
    grown = rss[requests] - rss[warm]
    return {"requests": requests, "statuses": statuses, "service_calls": counts["service"],
            "id_token_fetches": counts["identity"], "rss_after_warm_kib": rss[warm],
            "rss_after_all_kib": rss[requests],
            "bytes_per_request_after_warm": round(grown * 1024 / (requests - warm), 1)}


def embeddings_memory(requests=8, texts=250, idle_clients=12):
    """`requests` embeddings requests of `texts` texts each to gemini-embedding-001 at once,
    against a :predict fake answering 3,072 numbers a text (as the model does at full size):
    the proxy's peak RSS. Then `idle_clients` clients that send the same request and never
    read: the proxy's RSS after 5 s, and the :predict calls made for them by then."""
    import http.server
    import threading
    values = ",".join(["-0.0123456789012345"] * 3072)
    one = ('{"predictions":[{"embeddings":{"values":[' + values +
           '],"statistics":{"token_count":5,"truncated":false}}}]}').encode()
    counts = {"predict": 0}

    class Fake(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, content_type, body):
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer("application/json",
                        json.dumps({"access_token": "ya29.bench", "expires_in": 3599, "token_type": "Bearer"}).encode())

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            counts["predict"] += 1
            self.answer("application/json", one)

    fake_port, port = free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", fake_port), Fake)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = proxy_env(port, f"http://127.0.0.1:{fake_port}", fake_port)
    env["MODEL_ALIASES_JSON"] = json.dumps({"flash": "google/gemini-2.5-flash", "embed": "google/gemini-embedding-001"})
    env.pop("MAX_BODY_BYTES")  # the defaults: 32 MiB bodies, a 64 MiB budget
    process = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCESSES.append(process)
    wait_for_port(port)
    body = json.dumps({"model": "embed", "input": [f"text number {i}" for i in range(texts)]})
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    rss_start = status_kib(process.pid, "VmRSS")

    def one_request(_):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request("POST", "/v1/embeddings", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            whole = response.status == 200 and len(json.loads(data)["data"]) == texts
            return response.status, whole, len(data)
        finally:
            connection.close()

    import concurrent.futures
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(one_request, range(requests)))
    took = time.monotonic() - started
    peak = status_kib(process.pid, "VmHWM")
    # Clients that send and never read.
    before = counts["predict"]
    idle = []
    request = (f"POST /v1/embeddings HTTP/1.1\r\nhost: p\r\nx-api-key: {KEY}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}").encode()
    for _ in range(idle_clients):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(request)
        idle.append(client)
    time.sleep(5)
    rss_idle = status_kib(process.pid, "VmRSS")
    idle_calls = counts["predict"] - before
    for client in idle:
        client.close()
    stop(process)
    server.shutdown()
    return {"requests": requests, "texts": texts, "statuses": [a[0] for a in answers],
            "whole": all(a[1] for a in answers), "answer_bytes": answers[0][2], "seconds": round(took, 2),
            "rss_start_kib": rss_start, "peak_rss_kib": peak,
            "idle_clients": idle_clients, "rss_with_idle_clients_kib": rss_idle,
            "calls_for_idle_clients": idle_calls, "calls_they_needed": idle_clients * texts}


# ---------------------------------------------------------------------------- main

LITELLM_VERSION = "1.106.2"
LITELLM_CONFIG = """model_list:
  - model_name: flash
    litellm_params:
      model: openai/google/gemini-2.5-flash
      api_base: {upstream}/v1/projects/{project}/locations/global/endpoints/openapi
      api_key: ya29.bench
general_settings:
  master_key: {key}
"""


def peers(upstream_url):
    """LiteLLM's proxy in front of the same fake, measured the same way (--peers)."""
    venv = os.path.join(ROOT, "bench", ".venv-peers")
    if not os.path.exists(os.path.join(venv, "bin", "litellm")):
        log(f"installing litellm[proxy]=={LITELLM_VERSION} into bench/.venv-peers")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True)
    config = os.path.join(TMP, "litellm.yaml")
    with open(config, "w") as f:
        f.write(LITELLM_CONFIG.format(upstream=upstream_url, project=PROJECT, key=KEY))
    env = {"PATH": os.path.join(venv, "bin") + ":" + os.environ.get("PATH", ""), "HOME": TMP}
    cold = []
    for _ in range(3):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen([os.path.join(venv, "bin", "litellm"), "--config", config, "--port", str(port)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        PROCESSES.append(process)
        while True:
            try:
                if http_status(port, "GET", "/health/liveliness") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        cold.append((time.perf_counter() - started) * 1000)
        if len(cold) < 3:
            stop(process)
    rss_start = status_kib(process.pid, "VmRSS")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    result = {"version": LITELLM_VERSION, "cold_start_ms": statistics.median(cold), "rss_start_kib": rss_start,
              "latency": wrk(url, 1, 10, 1, bearer=True), "throughput": wrk(url, 64, 10, 2, bearer=True),
              "rss_after_kib": status_kib(process.pid, "VmRSS")}
    stop(process)
    return result


def streaming_pair(metadata_port, loop):
    """The streaming relay's added delay, on the OpenAI path, Claude's and Gemini's own."""
    sse_port = free_port()
    # The upstream runs in a process of its own, so the client's event loop does not delay
    # the upstream's sends (or the other way round) and skew the per-chunk delays.
    start_sse_upstream(sse_port, 30, 0.05)
    stream_port = free_port()
    proxy = start_proxy(stream_port, f"http://127.0.0.1:{sse_port}", metadata_port)
    results = {"streaming": loop.run_until_complete(streaming(sse_port, stream_port, 40, 30, rounds=5)),
               "streaming_claude": loop.run_until_complete(
                   streaming(sse_port, stream_port, 40, 30, rounds=5, claude=True)),
               "streaming_gemini": loop.run_until_complete(
                   streaming(sse_port, stream_port, 40, 30, rounds=5, gemini=True))}
    stop(proxy)
    return results


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if "--refusals-only" in sys.argv[1:]:
        print(json.dumps(refusals(), indent=2))
        return
    if "--embeddings-only" in sys.argv[1:]:
        print(json.dumps(embeddings_memory(), indent=2))
        return
    upstream, nginx_port, tls_port = free_port(), free_port(), free_port()
    start_nginx(upstream, nginx_port, tls_port)
    upstream_url = f"http://127.0.0.1:{upstream}"
    results = {"machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release()}}
    if "--budget-only" in sys.argv[1:]:
        print(json.dumps(memory_budget(upstream), indent=2))
        return
    if "--cold-tls-only" in sys.argv[1:]:
        print(json.dumps(cold_tls(upstream, tls_port, runs=20), indent=2))
        return
    if "--streaming-only" in sys.argv[1:]:
        print(json.dumps(streaming_pair(upstream, asyncio.new_event_loop()), indent=2))
        return

    if "--throughput-only" in sys.argv[1:]:
        # Paired rounds only (issue 23's figure): `--throughput-only [ROUNDS]`, default 8.
        args = sys.argv[sys.argv.index("--throughput-only") + 1:]
        count = int(args[0]) if args and args[0].isdigit() else 8
        print(json.dumps(throughput(upstream_url, upstream, nginx_port, count), indent=2))
        return

    log("cold start")
    health_ms, completion_ms = cold_start(upstream, upstream_url)
    results["cold_start_ms"] = health_ms
    results["cold_first_completion_ms"] = completion_ms
    results["cold_first_completion_tls_ms"] = cold_tls(upstream, tls_port)

    log("memory, latency and throughput")
    port = free_port()
    proxy = start_proxy(port, upstream_url, upstream)
    http_status(port, "GET", "/healthz")
    rss_start = status_kib(proxy.pid, "VmRSS")
    # Each worker thread's allocator reaches its working size only after some 100k requests
    # (BENCHMARKS.md), so the warm-up is 12 s; growth is then measured over 6 s more.
    warm = [wrk(f"http://127.0.0.1:{port}/v1/chat/completions", 4, 3, 1) for _ in range(4)]
    rss_warm = status_kib(proxy.pid, "VmRSS")
    more = [wrk(f"http://127.0.0.1:{port}/v1/chat/completions", 4, 3, 1) for _ in range(2)]
    rss_after = status_kib(proxy.pid, "VmRSS")
    results["memory"] = {"rss_start_kib": rss_start, "rss_after_warmup_kib": rss_warm,
                         "rss_after_more_kib": rss_after,
                         "warmup_requests": sum(w["requests"] for w in warm),
                         "more_requests": sum(m["requests"] for m in more)}
    results["latency"] = {name: wrk(url, 1, 10, 1) for name, url in chat_urls(upstream_url, nginx_port, port).items()}
    stop(proxy)
    results["throughput"] = throughput(upstream_url, upstream, nginx_port, 5)

    log("streaming relay and many streams")
    loop = asyncio.new_event_loop()
    results.update(streaming_pair(upstream, loop))
    many_port = free_port()
    many_sse = free_port()
    start_sse_upstream(many_sse, 100, 0.05)  # about 5 s per stream
    proxy = start_proxy(many_port, f"http://127.0.0.1:{many_sse}", upstream)
    many = loop.run_until_complete(streaming(many_sse, many_port, 1000, 100))["proxy"]
    results["many_streams"] = {"streams": 1000, "failures": many["failures"],
                               "peak_rss_kib": status_kib(proxy.pid, "VmHWM")}
    stop(proxy)

    log("large request")
    # nginx's `return` answers before it has read a request body, so the proxy would still be
    # sending one body when the next arrives; the asyncio upstream reads every body first, as
    # Vertex does.
    large_port = free_port()
    start_sse_upstream(large_port, 0, 0)
    port = free_port()
    proxy = start_proxy(port, f"http://127.0.0.1:{large_port}", upstream)
    size, timings, added = large_request(large_port, port)
    results["large_request"] = {"body_bytes": size, "direct_ms": timings["direct"], "proxy_ms": timings["proxy"],
                                "added_ms": added,
                                "peak_rss_kib": status_kib(proxy.pid, "VmHWM")}
    stop(proxy)
    log("memory budget")
    results["memory_budget"] = memory_budget(upstream)
    log("a service that refuses every request")
    results["refusals"] = refusals()
    log("embeddings: 8 requests of 250 texts, and clients that never read")
    results["embeddings_memory"] = embeddings_memory()
    results["binary_bytes"] = os.path.getsize(BINARY)
    if "--peers" in sys.argv[1:]:
        log("peers: LiteLLM")
        results["peers"] = {"litellm": peers(upstream_url)}

    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    if "peers" in results:
        print()
        print(peer_table(results))


def peer_table(r):
    lite = r["peers"]["litellm"]
    lat, thr, mem = r["latency"], r["throughput"], r["memory"]
    rows = [
        ("cold start (exec → health 200)", f"{r['cold_start_ms']:.0f} ms", f"{lite['cold_start_ms']:.0f} ms"),
        ("memory after start", f"{mem['rss_start_kib'] / 1024:.1f} MiB", f"{lite['rss_start_kib'] / 1024:.0f} MiB"),
        ("memory after load", f"{mem['rss_after_more_kib'] / 1024:.1f} MiB", f"{lite['rss_after_kib'] / 1024:.0f} MiB"),
        ("latency p50 / p99 (c=1)", f"{lat['proxy']['p50_ms']:.2f} / {lat['proxy']['p99_ms']:.2f} ms",
         f"{lite['latency']['p50_ms']:.2f} / {lite['latency']['p99_ms']:.2f} ms"),
        ("throughput (c=64)", f"{thr['proxy']['rps']:.0f} req/s, {thr['proxy']['errors']} errors",
         f"{lite['throughput']['rps']:.0f} req/s, {lite['throughput']['errors']} errors"),
    ]
    lines = [f"| figure | vertex-proxy | LiteLLM {lite['version']} |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def table(r):
    lat, thr, st = r["latency"], r["throughput"], r["streaming"]
    mib = lambda kib: kib / 1024
    added_p50 = lat["proxy"]["p50_ms"] - lat["direct"]["p50_ms"]
    added_p99 = lat["proxy"]["p99_ms"] - lat["direct"]["p99_ms"]
    nginx_p50 = lat["nginx"]["p50_ms"] - lat["direct"]["p50_ms"]
    nginx_p99 = lat["nginx"]["p99_ms"] - lat["direct"]["p99_ms"]
    stream_added = st["added_p99_ms"]
    claude = r["streaming_claude"]
    gemini = r.get("streaming_gemini")
    large = r["large_request"]
    large_added = large["added_ms"]
    budget = r["memory_budget"]
    mem = r["memory"]
    rows = [
        ("cold start (exec → /healthz 200, median of 10)", f"{r['cold_start_ms']:.1f} ms", "—", "≤ 10 ms",
         r["cold_start_ms"] <= 10),
        ("cold first completion (token included)", f"{r['cold_first_completion_ms']:.1f} ms", "—", "≤ 50 ms",
         r["cold_first_completion_ms"] <= 50),
        ("cold first completion over TLS + HTTP/2, with / without the connection opened at startup",
         f"{r['cold_first_completion_tls_ms']['preconnect']:.1f} / {r['cold_first_completion_tls_ms']['no_preconnect']:.1f} ms",
         "—", "≤ 50 ms", r["cold_first_completion_tls_ms"]["preconnect"] <= 50),
        ("idle memory (start / after warm-up / after more)",
         f"{mib(mem['rss_start_kib']):.1f} / {mib(mem['rss_after_warmup_kib']):.1f} / {mib(mem['rss_after_more_kib']):.1f} MiB",
         f"{mem['warmup_requests']} requests of warm-up, then {mem['more_requests']}", "≤ 10 MiB, no growth",
         max(mem["rss_start_kib"], mem["rss_after_more_kib"]) <= 10 * 1024
         and mem["rss_after_more_kib"] <= mem["rss_after_warmup_kib"] * 1.05),
        ("added latency p50 (c=1, 10 s)", f"{added_p50 * 1000:.0f} µs",
         f"direct {lat['direct']['p50_ms'] * 1000:.0f} µs; nginx adds {nginx_p50 * 1000:.0f} µs", "≤ 150 µs", added_p50 <= 0.15),
        ("added latency p99 (c=1, 10 s)", f"{added_p99 * 1000:.0f} µs",
         f"direct {lat['direct']['p99_ms'] * 1000:.0f} µs; nginx adds {nginx_p99 * 1000:.0f} µs", "≤ 500 µs", added_p99 <= 0.5),
        ("throughput (c=64, median of 5 interleaved 5 s rounds)",
         f"{thr['proxy']['rps']:.0f} req/s, {thr['errors']} errors",
         f"direct {thr['direct']['rps']:.0f}; nginx {thr['nginx']['rps']:.0f} "
         f"({thr['proxy']['rps'] / thr['nginx']['rps']:.2f}× nginx; rounds {', '.join(f'{x:.2f}' for x in thr['ratios'])})",
         "≥ 0.8× nginx, 0 errors", thr["proxy"]["rps"] >= 0.8 * thr["nginx"]["rps"] and thr["errors"] == 0),
        ("streaming relay: added delay per chunk, p99 (median of 5 paired rounds)", f"{stream_added:.2f} ms",
         f"direct p99 {st['direct']['p99_ms']:.2f} ms, proxy p99 {st['proxy']['p99_ms']:.2f} ms (all rounds); rounds " + ", ".join(f"{a:+.2f}" for a in st["rounds_added_p99_ms"]), "≤ 1 ms", stream_added <= 1),
        ("Claude's SSE relay (/v1/messages, vertex_event filter): added delay per event, p99 (median of 5 paired rounds)",
         f"{claude['added_p99_ms']:.2f} ms",
         f"direct p99 {claude['direct']['p99_ms']:.2f} ms, proxy p99 {claude['proxy']['p99_ms']:.2f} ms; rounds " + ", ".join(f"{a:+.2f}" for a in claude["rounds_added_p99_ms"]),
         "≤ 1 ms", claude["added_p99_ms"] <= 1 and claude["proxy"]["failures"] == 0),
    ] + ([] if not gemini else [
        ("Gemini's own API (/v1beta/models/…:streamGenerateContent, passed through): added delay per event, p99 (median of 5 paired rounds)",
         f"{gemini['added_p99_ms']:.2f} ms",
         f"direct p99 {gemini['direct']['p99_ms']:.2f} ms, proxy p99 {gemini['proxy']['p99_ms']:.2f} ms; rounds " + ", ".join(f"{a:+.2f}" for a in gemini["rounds_added_p99_ms"]),
         "≤ 1 ms", gemini["added_p99_ms"] <= 1 and gemini["proxy"]["failures"] == 0),
    ]) + [
        ("1000 concurrent SSE streams, ~5 s", f"{r['many_streams']['failures']} failures, peak {mib(r['many_streams']['peak_rss_kib']):.1f} MiB",
         "—", "0 failures, ≤ 64 MiB",
         r["many_streams"]["failures"] == 0 and r["many_streams"]["peak_rss_kib"] <= 64 * 1024),
        (f"large request ({large['body_bytes'] / 1048576:.1f} MiB body)",
         f"+{large_added:.1f} ms, peak {mib(large['peak_rss_kib']):.1f} MiB",
         f"direct {large['direct_ms']:.1f} ms", "≤ 25 ms, ≤ 3× body",
         large_added <= 25 and large["peak_rss_kib"] * 1024 <= 3 * large["body_bytes"]),
        (f"{budget['clients']} bodies of 32 MiB at once (MAX_BUFFERED_BYTES 64 MiB)",
         f"{budget['served']} served, {budget['refused_503']} refused 503, {budget['other']} other; peak {mib(budget['peak_rss_kib']):.1f} MiB",
         "—", "no crash, peak ≤ 64 MiB + 96 MiB",
         budget["alive_after"] and budget["other"] == 0 and budget["peak_rss_kib"] <= (64 + 96) * 1024),
        ("stripped binary", f"{r['binary_bytes'] / 1048576:.1f} MiB", "—", "≤ 10 MiB", r["binary_bytes"] <= 10 * 1048576),
    ]
    lines = ["| figure | proxy | baselines | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {'yes' if e else '**no**'} |" for a, b, c, d, e in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sse-upstream"]:
        shutil.rmtree(TMP, ignore_errors=True)  # made at import; this process needs none
        serve_sse_upstream(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    try:
        main()
    finally:
        for process in PROCESSES:
            process.terminate()
        shutil.rmtree(TMP, ignore_errors=True)
