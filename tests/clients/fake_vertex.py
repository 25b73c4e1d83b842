"""A fake Vertex AI (OpenAI-compatible endpoint) and metadata server for the client tests.

It answers like the demo's stand-in (echo, tool calls, SSE with usage, embeddings), records
every Vertex request so the tests can check what the proxy sent, and fails on purpose for
models whose id says so:

- google/always-429: every call answers 429, Google-shaped;
- google/flaky-503: the first call per test answers 503, the next ones succeed.
"""

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "ya29.client-tests-token"
PROJECT = "client-tests"


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.calls_by_model = {}

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)
            model = entry["body"].get("model") if isinstance(entry["body"], dict) else None
            self.calls_by_model[model] = self.calls_by_model.get(model, 0) + 1
            return self.calls_by_model[model]

    def reset(self):
        with self.lock:
            self.requests = []
            self.calls_by_model = {}

    def snapshot(self):
        with self.lock:
            return list(self.requests)


STATE = State()


def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("text"))
    return ""


def reply(body):
    """(tool_call or None, text): what the fake model says to this request."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    last_user = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    if last.get("role") == "tool":
        return None, "The tool said: " + text_of(last.get("content"))
    tools = body.get("tools") or []
    if tools:
        function = tools[0].get("function", {})
        arguments = {}
        for name, schema in (function.get("parameters", {}).get("properties") or {}).items():
            kind = schema.get("type")
            arguments[name] = 1 if kind in ("number", "integer") else True if kind == "boolean" else last_user
        call = {"id": "call_1", "type": "function",
                "function": {"name": function.get("name"), "arguments": json.dumps(arguments)}}
        return call, ""
    return None, "You said: " + last_user


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def google_error(self, status, message, reason):
        self.send_json(status, {"error": {"code": status, "message": message, "status": reason}})

    def do_GET(self):
        if self.path.startswith("/computeMetadata/v1/"):
            if self.headers.get("metadata-flavor") != "Google":
                return self.send_json(403, {"error": "Metadata-Flavor"})
            if self.path.startswith("/computeMetadata/v1/instance/service-accounts/default/token"):
                return self.send_json(200, {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})
            if self.path == "/computeMetadata/v1/project/project-id":
                data = PROJECT.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                return self.wfile.write(data)
        if self.path == "/_recorded":
            return self.send_json(200, STATE.snapshot())
        self.send_json(404, {"error": "not found"})

    def do_POST(self):
        if self.path == "/_reset":
            STATE.reset()
            return self.send_json(200, {})
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        call = STATE.record({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                             "body": body})
        if self.headers.get("authorization") != "Bearer " + TOKEN:
            return self.google_error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        if not isinstance(body, dict):
            return self.google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        model = body.get("model")
        if model == "google/always-429":
            return self.google_error(429, "Resource exhausted. Please try again later.", "RESOURCE_EXHAUSTED")
        if model == "google/flaky-503" and call == 1:
            return self.google_error(503, "The service is currently unavailable.", "UNAVAILABLE")
        if self.path.endswith("/endpoints/openapi/chat/completions"):
            return self.chat(body)
        if self.path.endswith("/endpoints/openapi/embeddings"):
            return self.embeddings(body)
        self.google_error(404, "The requested URL was not found on this server.", "NOT_FOUND")

    def chat(self, body):
        call, text = reply(body)
        model = body.get("model")
        prompt = sum(max(1, len(text_of(m.get("content")).split())) for m in body.get("messages") or [])
        usage = {"prompt_tokens": prompt, "completion_tokens": max(1, len(text.split())),
                 "total_tokens": prompt + max(1, len(text.split()))}
        finish = "tool_calls" if call else "stop"
        base = {"id": "chatcmpl-fake", "created": 1700000000, "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None if call else text}
            if call:
                message["tool_calls"] = [call]
            return self.send_json(200, {**base, "object": "chat.completion",
                                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                        "usage": usage})
        chunk = lambda delta, finish_reason=None: {**base, "object": "chat.completion.chunk",
                                                   "choices": [{"index": 0, "delta": delta,
                                                                "finish_reason": finish_reason}]}
        events = [chunk({"role": "assistant", "content": ""})]
        if call:
            events.append(chunk({"tool_calls": [{**call, "index": 0}]}))
        else:
            words = text.split(" ")
            events += [chunk({"content": w + (" " if i < len(words) - 1 else "")}) for i, w in enumerate(words)]
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in events + ["[DONE]"]:
            data = ("data: " + (event if isinstance(event, str) else json.dumps(event)) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"0\r\n\r\n")

    def embeddings(self, body):
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"object": "embedding", "index": i,
                 "embedding": [b / 255 for b in hashlib.sha256(str(text).encode()).digest()[:8]]}
                for i, text in enumerate(inputs)]
        tokens = sum(max(1, len(str(t).split())) for t in inputs)
        self.send_json(200, {"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def start():
    """Starts the fake on an ephemeral loopback port; returns the server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
