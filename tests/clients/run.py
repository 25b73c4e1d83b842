"""Runs stock clients against the real vertex-proxy in front of a fake Vertex.

Usage: python run.py PATH_TO_VERTEX_PROXY_BINARY PATH_TO_FAKE_VERTEX_BINARY
(CLIENTS=codex_cli,responses_docs runs only those of the functions below.)

The fake is the test suite's own (tests/support), built as the example `fake_vertex`.

Clients: the OpenAI Python SDK, the OpenAI Agents SDK, the OpenAI Node SDK (clients.mjs), the
pi coding agent (OpenAI and Anthropic providers), LangChain's ChatOpenAI, the Anthropic Python
SDK and Claude Code; on Gemini's own API, Gemini CLI, google-genai (Python) and @google/genai
(genai.mjs); and on the Responses API (/v1/responses), the OpenAI Python SDK's
client.responses, the Agents SDK's default OpenAIResponsesModel, Codex CLI (`codex exec`) and
the Vercel AI SDK's @ai-sdk/openai (aisdk.mjs). Each step prints "ok" or what went wrong; the
last line counts them.

Codex runs `codex exec` in a temporary HOME with ~/.codex/config.toml exactly as README and
/docs give it (the two must agree), in a git repository, standard input closed. The fake calls
its shell tool, exec_command, with the prompt (`echo MARKER`) as the command; Codex runs it and
sends the output back, and its answer, the fake's "The tool said: …", must quote the marker. On
Gemini 3 the second request must carry the call with the signature the fake issued, restored
from the call_id. README's and /docs' Responses snippets (Python, Vercel AI SDK) run as printed.

Gemini CLI runs `gemini -p` in a temporary HOME exactly as /docs sets it up (its two variables,
settings.json and command), with usage statistics, telemetry and update checks off and standard
input closed: the stand-in calls the first function it declares, and the CLI's second request
must carry that call's thoughtSignature and its functionResponse. The CLI renames its short
model names, so the aliases here are named as the ids it was seen sending. The google-genai
steps check that Vertex's native method got each body as the SDK sent it, and /docs' Python and
JavaScript snippets run as given.

Four proxies run: the main one, A, with the defaults (retries on, THOUGHT_SIGNATURES=restore);
B, a second instance with the same settings; one with MAX_ATTEMPTS=1, where only the SDKs
retry; and one with THOUGHT_SIGNATURES=off, which shows that the fake refuses what Gemini 3
refuses. A round-robin front in this script sends each request to A, then B, then A…, as
Cloud Run may spread a conversation over its instances: pi, the Agents SDK and LangChain run a
two-step Gemini 3 tool loop through it (the Agents SDK and Codex on /v1/responses too), each
dropping the thought signature, and the instance
that serves the second step, which never saw the first, must restore it from the tool-call id.
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request


HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "sk_clients_0123456789abcdef"
ALIASES = {
    "flash": "google/gemini-2.5-flash",
    "ratelimited": "google/always-429",
    "flaky": "google/flaky-503",
    "pro-preview": "google/gemini-3.1-pro-preview",
    "stream429": "google/stream-429-once",
    "claude-sonnet": {"model": "anthropic/claude-sonnet-4-5@20250929", "location": "us-east5"},
    "embed": "google/gemini-embedding-001",
    # A private Cloud Run service; its upstream, the fake's own origin, is set at start.
    "gemma": {"upstream": None, "model": "google/gemma-3-12b-it"},
    # Named as the ids Gemini CLI 0.61 sends, as the fake saw them: `-m pro` (and auto's
    # choice) is gemini-3.1-pro-preview, `-m flash` gemini-3.8-flash, `-m flash-lite`
    # gemini-3.5-flash-lite, which auto, the default, also asks first which model to use.
    "gemini-3.1-pro-preview": "google/gemini-3.1-pro-preview",
    "gemini-3.8-flash": "google/gemini-3-flash-preview",
    "gemini-3.5-flash-lite": "google/gemini-2.5-flash-lite",
}
CLAUDE = "anthropic/claude-sonnet-4-5@20250929"
CLAUDE_PATH = "/v1/projects/{project}/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:"
RESULTS = {"passed": 0, "failed": 0}


def step(client, name):
    """Decorator: runs the check at once, counting and reporting it by client and step."""
    def run(check):
        fake_reset()
        try:
            check()
        except Exception as error:  # noqa: BLE001 - every failure is reported, then counted
            RESULTS["failed"] += 1
            print(f"FAIL {client}: {name}: {error!r}")
            traceback.print_exc(limit=3)
        else:
            RESULTS["passed"] += 1
            print(f"ok   {client}: {name}")
        return check
    return run


FAKE = {}  # what the fake printed: its addresses, the token and the project it serves
PROXY_URL = None
NO_RETRY_URL = None  # MAX_ATTEMPTS=1
OFF_URL = None  # THOUGHT_SIGNATURES=off
FRONT_URL = None  # the round-robin front: each request to A, then B, then A…


def fake_url():
    return "http://" + FAKE["vertex"]


def start_fake(binary):
    fake = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = fake.stdout.readline()
    if not line:
        raise SystemExit("the fake Vertex did not start")
    FAKE.update(json.loads(line))
    ALIASES["gemma"]["upstream"] = fake_url() + "/service/v1"
    return fake


def fake_reset():
    urllib.request.urlopen(urllib.request.Request(fake_url() + "/_reset", data=b"", method="POST")).read()


def recorded():
    return json.loads(urllib.request.urlopen(fake_url() + "/_recorded").read())


def assert_vertex_saw(model="google/gemini-2.5-flash", count=None, stream=None):
    """What reached the fake Vertex: the rewritten model (for Claude, in the URL), the Google
    token, no client key."""
    requests = recorded()
    assert requests, "nothing reached Vertex"
    if count is not None:
        assert len(requests) == count, f"{len(requests)} requests reached Vertex, expected {count}"
    for request in requests:
        if model == CLAUDE:
            assert request["path"].startswith(CLAUDE_PATH.format(project=FAKE["project"])) or \
                request["path"].endswith("/count-tokens:rawPredict"), request["path"]
            assert "model" not in request["body"] or request["path"].endswith("count-tokens:rawPredict")
            assert request["body"]["anthropic_version"] == "vertex-2023-10-16", request["body"]
            assert "anthropic-version" not in request["headers"]
        else:
            assert request["body"]["model"] == model, f"Vertex got model {request['body']['model']!r}"
        assert request["headers"].get("authorization") == "Bearer " + FAKE["token"], request["headers"]
        assert KEY not in json.dumps(request["headers"]), "the client key reached Vertex"
        assert "x-api-key" not in request["headers"]
        if stream is not None:
            assert bool(request["body"].get("stream")) == stream, request["body"]
    return requests


def start_proxy(binary, name, **settings):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": tempfile.mkdtemp(),
        "PORT": "0",
        "API_KEYS_JSON": json.dumps([{"id": "clients", "key": KEY}]),
        "MODEL_ALIASES_JSON": json.dumps(ALIASES),
        "GOOGLE_CLOUD_PROJECT": FAKE["project"],
        "VERTEX_BASE_URL": fake_url(),
        "GCE_METADATA_HOST": FAKE["metadata"],
        **settings,
    }
    proxy = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proxy.stdout.readline()  # the startup line says where it listens
    if not line:
        raise SystemExit("the proxy did not start: " + proxy.stderr.read())
    port = json.loads(line)["config"]["listen"].rsplit(":", 1)[1]
    # Keep draining its log so it never blocks on a full pipe, and keep it: all of them for the
    # leak check, each instance's own to see what that instance did.
    own = LOGS.setdefault(name, [])

    def drain():
        for log_line in proxy.stdout:
            own.append(log_line)
            PROXY_LOG.append(log_line)
    threading.Thread(target=drain, daemon=True).start()
    return proxy, f"http://127.0.0.1:{port}"


PROXY_LOG = []  # every proxy's lines
LOGS = {}  # each proxy's lines, by name


def check_log():
    """No key and no Google token in anything the proxy logged while the clients ran."""
    text = "".join(PROXY_LOG)
    assert PROXY_LOG, "the proxy logged nothing"
    for secret in (KEY, FAKE["token"], "hello there", "You said"):
        assert secret not in text, f"{secret[:8]}… reached the proxy's log"


# The round-robin front: Cloud Run spreads one conversation's requests over its instances, and
# this front does so on purpose, request by request, so that every step of a tool loop lands on
# another instance than the step before.
FRONT = {"served": []}  # (instance, method, path) of each request the front passed on, in order


def with_close(head):
    """An HTTP/1.1 head, request or response, with `Connection: close` instead of its own
    connection headers: one request per connection, so round robin by connection is by request."""
    lines = head.decode("latin-1").split("\r\n")[:-2]
    hop = ("connection:", "keep-alive:", "proxy-connection:")
    kept = [line for line in lines[1:] if not line.lower().startswith(hop)]
    return "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")


async def pipe(reader, writer):
    """Copies bytes as they come, unbuffered, until the reader's end."""
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()


def start_front(instances):
    """Listens on loopback and passes each request, whole and streamed both ways, to the next of
    `instances` ((name, url) pairs) in turn. Returns the front's URL."""
    turn = [0]

    async def serve(client_reader, client_writer):
        upstream_writer = None
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
            name, url = instances[turn[0] % len(instances)]
            turn[0] += 1
            method, path, _ = head.split(b" ", 2)
            FRONT["served"].append((name, method.decode(), path.decode()))
            host, port = url.removeprefix("http://").rsplit(":", 1)
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            upstream_writer.write(with_close(head))
            await upstream_writer.drain()
            # The body (Content-Length or chunked) goes on as it comes, while the answer comes back.
            body = asyncio.ensure_future(pipe(client_reader, upstream_writer))
            body.add_done_callback(lambda done: done.cancelled() or done.exception())  # ends as it may
            try:
                answer = await upstream_reader.readuntil(b"\r\n\r\n")
                client_writer.write(with_close(answer))
                await client_writer.drain()
                await pipe(upstream_reader, client_writer)  # the instance closes after the answer
            finally:
                body.cancel()
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            print(f"     front: {error!r}")
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def front_mark():
    """Where the front's record and each instance's log stand before a step, once the lines of
    earlier steps are all in: each proxy hands its lines to a writer thread that writes them
    within 10 ms, so they are in once none has come for a while."""
    deadline = time.monotonic() + 5
    seen = len(PROXY_LOG)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if len(PROXY_LOG) == seen:
            break
        seen = len(PROXY_LOG)
    return len(FRONT["served"]), {name: len(lines) for name, lines in LOGS.items()}


def chat_lines(name, since, path="/v1/chat/completions"):
    """The log lines of instance `name` after `since` for requests to `path` (chat completions)."""
    return [json.loads(line) for line in LOGS[name][since:]
            if f'"{path}"' in line and '"httpRequest"' in line]


def signature_for(call_id):
    """The signature the fake issues with a Gemini 3 tool call (`demo::gemini3::signature_for`)."""
    digest = hashlib.sha256(f"stand-in thought for {call_id}".encode()).digest()
    return base64.b64encode(digest[:24]).decode()


def spliced(call_id):
    """The id a client sees for Vertex's `call_id`, its signature carried in it (SPEC step 9)."""
    signature = base64.b64decode(signature_for(call_id))
    check = hashlib.sha256(signature).digest()[:4]
    carried = base64.urlsafe_b64encode(signature + check).rstrip(b"=").decode()
    return f"{call_id}__thought__{carried}"


def assert_steps_alternated(mark, stream=None, path="/v1/chat/completions"):
    """A two-step Gemini 3 tool loop sent through the front since `mark`: its two requests to
    `path` (chat completions, or responses) went to different instances; the one that served the
    second step, which had never seen the first, restored the real signature from the id (and
    filled none); Vertex got its own id back with its real signature. Returns Vertex's id of the
    call."""
    served_since, logs_since = mark
    chats = [s for s in FRONT["served"][served_since:] if s[1] == "POST" and s[2] == path]
    assert len(chats) == 2, f"the front passed on {FRONT['served'][served_since:]}"
    (one, _, _), (other, _, _) = chats
    assert one != other, f"both steps went to {one}"
    first, second = assert_vertex_saw(model="google/gemini-3.1-pro-preview", count=2, stream=stream)
    assert not any(m.get("tool_calls") for m in first["body"]["messages"]), first["body"]
    call = next(m for m in second["body"]["messages"] if m["role"] == "assistant" and m.get("tool_calls"))
    call = call["tool_calls"][0]
    call_id = call["id"]
    assert "__thought__" not in call_id and call_id.startswith("call_"), call
    # The real signature the fake issued with that id, not the sentinel.
    assert call["extra_content"]["google"]["thought_signature"] == signature_for(call_id), call
    results = [m["tool_call_id"] for m in second["body"]["messages"] if m["role"] == "tool"]
    assert results == [call_id], results
    # Each instance logs a request once its answer has ended, just after the client has it.
    deadline = time.monotonic() + 10
    while [len(chat_lines(name, logs_since[name], path)) for name in (one, other)] != [1, 1]:
        assert time.monotonic() < deadline, {n: chat_lines(n, logs_since[n], path) for n in (one, other)}
        time.sleep(0.05)
    (step1,), (step2,) = chat_lines(one, logs_since[one], path), chat_lines(other, logs_since[other], path)
    assert step1["alias"] == step2["alias"] == "pro-preview", (step1, step2)
    assert "thought_signatures" not in step1, step1
    assert step2.get("thought_signatures") == {"restored": 1, "filled": 0}, step2
    return call_id


def text_pieces(chunks):
    """The text of a streamed chat completion, chunk by chunk."""
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def gemini_path(model, method):
    """Vertex's native path for a Google model (`google/…`) and method."""
    name = model.removeprefix("google/")
    return f"/v1/projects/{FAKE['project']}/locations/global/publishers/google/models/{name}:{method}"


def assert_gemini_saw(model, method, count=None, sse=False):
    """What reached the fake Vertex from one of Google's clients: Vertex's native method for the
    alias's model, the client's query (`alt=sse`) without a key, the Google token, and no client
    key in any header."""
    requests = recorded()
    assert requests, "nothing reached Vertex"
    if count is not None:
        assert len(requests) == count, [r["path"] for r in requests]
    for request in requests:
        assert request["path"] == gemini_path(model, method) + ("?alt=sse" if sse else ""), request["path"]
        assert request["headers"].get("authorization") == "Bearer " + FAKE["token"], request["headers"]
        assert KEY not in json.dumps(request["headers"]), "the client key reached Vertex"
        assert "x-goog-api-key" not in request["headers"] and "x-api-key" not in request["headers"]
    return requests


def assert_sent_as_is(sent, requests):
    """Each body the fake received is the one the client sent (`sent`, httpx requests in order),
    to the byte count."""
    assert len(sent) == len(requests), (len(sent), len(requests))
    for client, vertex in zip(sent, requests):
        assert vertex["body"] == json.loads(client.content), (vertex["body"], client.content)
        assert int(vertex["headers"]["content-length"]) == len(client.content), vertex["headers"]


def native_signature(call):
    """The signature the stand-in gives a native function call (`demo::gemini::signature`)."""
    args = json.dumps(call["args"], separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return signature_for(f"{json.dumps(call['name'])}:{args}")


def last_logged(text, since=0):
    """The last line of any proxy's log after `since` that holds `text`, waiting for it: lines
    reach stdout through the proxy's writer thread, a few milliseconds after their answers."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in PROXY_LOG[since:] if text in line]
        if lines or time.monotonic() > deadline:
            assert lines, f"no log line with {text}"
            return lines[-1]
        time.sleep(0.05)


def gemini_log_lines(since, alias, count):
    """Proxy A's log lines after `since` for requests on `alias`, once there are `count` of them
    (each is written when its answer has ended, just after the client has it)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in LOGS["A"][since:] if f'"alias":"{alias}"' in line]
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) == count, lines
            return lines
        time.sleep(0.05)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def python_sdk():
    import openai
    client = openai.OpenAI(base_url=PROXY_URL + "/v1", api_key=KEY, max_retries=0)
    assert client.base_url.path.rstrip("/").endswith("/v1")

    @step("python openai", "models.list shows the aliases with vertex_id")
    def _():
        models = {m.id: m for m in client.models.list()}
        assert set(models) == set(ALIASES), models
        assert models["flash"].vertex_id == "google/gemini-2.5-flash"

    @step("python openai", "models.retrieve")
    def _():
        model = client.models.retrieve("flash")
        assert model.id == "flash" and model.vertex_id == "google/gemini-2.5-flash"

    @step("python openai", "chat.completions.create")
    def _():
        reply = client.chat.completions.create(model="flash", messages=[{"role": "user", "content": "hello there"}])
        assert reply.choices[0].message.content == "You said: hello there", reply
        assert reply.usage.total_tokens > 0
        assert_vertex_saw(count=1, stream=False)

    @step("python openai", "streaming, with the usage chunk")
    def _():
        chunks = list(client.chat.completions.create(
            model="flash", messages=[{"role": "user", "content": "one two three four"}],
            stream=True, stream_options={"include_usage": True}))
        texts = text_pieces(chunks)
        assert len(texts) >= 3, f"the text came in {len(texts)} chunks"
        assert "".join(texts) == "You said: one two three four"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        assert_vertex_saw(count=1, stream=True)

    @step("python openai", "tool-call round trip")
    def _():
        messages = [{"role": "user", "content": "Paris"}]
        first = client.chat.completions.create(model="flash", messages=messages, tools=[WEATHER_TOOL])
        call = first.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        final = client.chat.completions.create(model="flash", messages=messages, tools=[WEATHER_TOOL])
        assert final.choices[0].message.content == "The tool said: sunny"
        requests = assert_vertex_saw(count=2)
        assert requests[1]["body"]["messages"][1]["tool_calls"][0]["id"] == call.id

    @step("python openai", "embeddings.create")
    def _():
        result = client.embeddings.create(model="flash", input=["a", "b"])
        assert len(result.data) == 2 and len(result.data[0].embedding) == 8
        assert_vertex_saw(count=1)

    @step("python openai", "a private Cloud Run service: chat, stream and embeddings, with its ID token")
    def _():
        reply = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "hello there"}])
        assert reply.choices[0].message.content == "You said: hello there", reply
        chunks = list(client.chat.completions.create(
            model="gemma", messages=[{"role": "user", "content": "one two three four"}], stream=True))
        texts = text_pieces(chunks)
        assert len(texts) >= 3 and "".join(texts) == "You said: one two three four", texts
        vectors = client.embeddings.create(model="gemma", input=["a", "b"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 8
        requests = recorded()
        paths = [r["path"] for r in requests]
        assert paths == ["/service/v1/chat/completions"] * 2 + ["/service/v1/embeddings"], paths
        for request in requests:
            assert request["body"]["model"] == "google/gemma-3-12b-it", request["body"]
            token = request["headers"]["authorization"].removeprefix("Bearer ")
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            assert claims["aud"] == fake_url() + "/", claims
            assert KEY not in json.dumps(request["headers"]) and "x-api-key" not in request["headers"]

    @step("python openai", "embeddings.create on a Google embedding model, by :predict, float and base64")
    def _():
        floats = client.embeddings.create(model="embed", input=["a", "b c"], encoding_format="float")
        # Without encoding_format the SDK asks for base64 and decodes it itself.
        default = client.embeddings.create(model="embed", input=["a", "b c"])
        assert [d.embedding for d in floats.data] == [d.embedding for d in default.data], (floats, default)
        assert len(floats.data) == 2 and len(floats.data[0].embedding) == 8 and floats.model == "embed"
        assert floats.usage.prompt_tokens == 3, floats.usage
        requests = recorded()
        assert len(requests) == 4 and all(r["path"].endswith("/gemini-embedding-001:predict") for r in requests)
        assert all(len(r["body"]["instances"]) == 1 for r in requests), "gemini-embedding-001 takes one text a call"
        assert all(r["headers"]["authorization"] == "Bearer " + FAKE["token"] for r in requests)

    @step("python openai", "a bad key raises AuthenticationError")
    def _():
        bad = openai.OpenAI(base_url=PROXY_URL + "/v1", api_key="sk_wrong_0000000000000", max_retries=0)
        try:
            bad.models.list()
        except openai.AuthenticationError as error:
            assert "invalid API key" in str(error)
        else:
            raise AssertionError("no AuthenticationError")
        assert recorded() == []

    @step("python openai", "an unknown alias raises BadRequestError")
    def _():
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        except openai.BadRequestError as error:
            assert "gpt-4o" in str(error) and "flash" in str(error)
        else:
            raise AssertionError("no BadRequestError")
        assert recorded() == []

    @step("python openai", "an upstream 429 is a readable RateLimitError, after the SDK's retries")
    def _():
        # Only the SDK retries here: it waits the Retry-After the proxy passes on (1 s), twice.
        retrying = openai.OpenAI(base_url=NO_RETRY_URL + "/v1", api_key=KEY, max_retries=2)
        try:
            retrying.chat.completions.create(model="ratelimited", messages=[{"role": "user", "content": "x"}])
        except openai.RateLimitError as error:
            assert error.status_code == 429, error.status_code
            assert error.code == "RESOURCE_EXHAUSTED", error.code
            assert error.message.startswith("Error code: 429 - "), error.message
            assert error.body["message"] == "RESOURCE_EXHAUSTED: the fake says so. Please try again later.", error.body
            assert error.response.headers["retry-after"] == "1"
        else:
            raise AssertionError("no RateLimitError")
        assert_vertex_saw(model="google/always-429", count=3)

    @step("python openai", "the SDK's retry gets through a 503")
    def _():
        retrying = openai.OpenAI(base_url=NO_RETRY_URL + "/v1", api_key=KEY, max_retries=2)
        reply = retrying.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "again"}])
        assert reply.choices[0].message.content == "You said: again"
        assert_vertex_saw(model="google/flaky-503", count=2)

    @step("python openai", "the proxy's own retry gets through a 503 before the SDK sees it")
    def _():
        reply = client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "again"}])
        assert reply.choices[0].message.content == "You said: again"
        assert_vertex_saw(model="google/flaky-503", count=2)

    @step("python openai", "a stream whose first event is a 429 is retried by the proxy, unseen")
    def _():
        chunks = list(client.chat.completions.create(
            model="stream429", messages=[{"role": "user", "content": "one two three"}], stream=True))
        texts = text_pieces(chunks)
        assert "".join(texts) == "You said: one two three", texts
        assert_vertex_saw(model="google/stream-429-once", count=2, stream=True)

    @step("python openai", "the proxy's retries and the SDK's multiply on a lasting 429")
    def _():
        retrying = openai.OpenAI(base_url=PROXY_URL + "/v1", api_key=KEY, max_retries=1)
        try:
            retrying.chat.completions.create(model="ratelimited", messages=[{"role": "user", "content": "x"}])
        except openai.RateLimitError as error:
            assert error.status_code == 429
        else:
            raise AssertionError("no RateLimitError")
        # Two SDK attempts, each of which the proxy tried three times.
        assert_vertex_saw(model="google/always-429", count=6)


RESPONSES_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def responses_lines(since, count, name="A"):
    """Instance `name`'s log lines after `since` for /v1/responses, once there are `count` of them
    (each is written when its answer has ended, just after the client has it)."""
    deadline = time.monotonic() + 10
    while True:
        lines = chat_lines(name, since, "/v1/responses")
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) == count, lines
            for line in lines:
                assert line["api"] == "responses", line
            return lines
        time.sleep(0.05)


def assert_round_trip(first, second, call_id, result, model="google/gemini-2.5-flash"):
    """A tool round trip as Vertex got it: the first request without calls, the second with the
    call Vertex made (id `call_id`, as Vertex issued it, with Gemini 3's signature for it) in an
    assistant message, then the tool message answering it with `result`."""
    assert not any(m.get("tool_calls") or m["role"] == "tool" for m in first["body"]["messages"]), first["body"]
    asked = first["body"]["messages"]
    assert second["body"]["messages"][:len(asked)] == asked, "the history changed between the steps"
    assistant, tool = second["body"]["messages"][len(asked):]
    assert assistant["role"] == "assistant" and not assistant.get("content"), assistant
    (call,) = assistant["tool_calls"]
    assert call["id"] == call_id and call["type"] == "function", call
    if model.startswith("google/gemini-3"):
        assert call["extra_content"] == {"google": {"thought_signature": signature_for(call_id)}}, call
    else:
        assert "extra_content" not in call, call
    assert tool == {"role": "tool", "tool_call_id": call_id, "content": result}, tool
    return call


def python_responses():
    import openai
    client = openai.OpenAI(base_url=PROXY_URL + "/v1", api_key=KEY, max_retries=0)

    @step("python openai responses", "responses.create: instructions and input in, a message and usage out")
    def _():
        since = len(LOGS["A"])
        response = client.responses.create(model="flash", instructions="Be brief.", input="hello there", store=False)
        assert response.output_text == "You said: hello there", response
        assert response.id.startswith("resp_") and response.status == "completed", response
        assert response.model == "flash" and response.store is False, response
        (message,) = response.output
        assert message.type == "message" and message.role == "assistant", message
        usage = response.usage
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens and usage.output_tokens > 0, usage
        (request,) = assert_vertex_saw(count=1, stream=False)
        assert request["body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "hello there"}], request["body"]
        assert not {"store", "input", "instructions", "include"} & set(request["body"]), request["body"]
        (line,) = responses_lines(since, 1)
        assert line["alias"] == "flash" and line["usage"]["input_tokens"] == usage.input_tokens, line

    @step("python openai responses", "responses.create: a function-call round trip")
    def _():
        asked = [{"role": "user", "content": "Paris"}]
        first = client.responses.create(model="flash", input=asked, tools=[RESPONSES_WEATHER], store=False)
        (call,) = first.output
        assert call.type == "function_call" and call.name == "get_weather", call
        assert json.loads(call.arguments) == {"city": "Paris"}, call
        # As the SDK's own guide does: the output items go back as they came, then the result.
        second = client.responses.create(
            model="flash", tools=[RESPONSES_WEATHER], store=False,
            input=asked + first.output + [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
        assert second.output_text == "The tool said: sunny", second
        requests = assert_vertex_saw(count=2, stream=False)
        for request in requests:
            (tool,) = request["body"]["tools"]
            assert tool["type"] == "function" and tool["function"]["name"] == "get_weather", tool
            assert tool["function"]["parameters"] == RESPONSES_WEATHER["parameters"], tool
        sent = assert_round_trip(*requests, call.call_id, "sunny")
        assert sent["function"] == {"name": "get_weather", "arguments": call.arguments}, sent

    @step("python openai responses", "responses.stream: text deltas as they come, every event in order")
    def _():
        with client.responses.stream(model="flash", input="one two three four", store=False) as stream:
            events = list(stream)
            final = stream.get_final_response()
        numbers = [event.sequence_number for event in events]
        assert numbers == sorted(set(numbers)), numbers
        deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
        assert len(deltas) >= 3 and "".join(deltas) == "You said: one two three four" == final.output_text, deltas
        kinds = [event.type for event in events if event.type != "response.output_text.delta"]
        assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.done", "response.content_part.done",
                         "response.output_item.done", "response.completed"], kinds
        assert final.usage.total_tokens > 0 and final.status == "completed", final
        (request,) = assert_vertex_saw(count=1, stream=True)
        assert request["body"]["stream_options"] == {"include_usage": True}, request["body"]

    @step("python openai responses", "responses.stream: a tool round trip on Gemini 3 (pro-preview), the signature in the call_id")
    def _():
        since = len(LOGS["A"])
        asked = [{"role": "user", "content": "Porto"}]
        with client.responses.stream(model="pro-preview", input=asked, tools=[RESPONSES_WEATHER], store=False) as stream:
            kinds = [event.type for event in stream]
            first = stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed", kinds
        (call,) = first.output
        assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Porto"}, call
        with client.responses.stream(
                model="pro-preview", tools=[RESPONSES_WEATHER], store=False,
                input=asked + first.output + [{"type": "function_call_output", "call_id": call.call_id,
                                               "output": "sunny in Porto"}]) as stream:
            second = stream.get_final_response()
        assert second.output_text == "The tool said: sunny in Porto", second
        requests = assert_vertex_saw(model="google/gemini-3.1-pro-preview", count=2, stream=True)
        vertex_id = requests[1]["body"]["messages"][1]["tool_calls"][0]["id"]
        # The client saw Vertex's id with the signature carried in it, and sent back only that.
        assert call.call_id == spliced(vertex_id), (call.call_id, vertex_id)
        assert_round_trip(*requests, vertex_id, "sunny in Porto", model="google/gemini-3.1-pro-preview")
        first_line, second_line = responses_lines(since, 2)
        assert "thought_signatures" not in first_line, first_line
        assert second_line["thought_signatures"] == {"restored": 1, "filled": 0}, second_line

    @step("python openai responses", "an unknown alias and previous_response_id: BadRequestError, nothing sent")
    def _():
        try:
            client.responses.create(model="gpt-4o", input="x")
        except openai.BadRequestError as error:
            assert "gpt-4o" in error.message and "flash" in error.message, error.message
        else:
            raise AssertionError("no BadRequestError for an unknown alias")
        try:
            client.responses.create(model="flash", input="x", previous_response_id="resp_earlier")
        except openai.BadRequestError as error:
            assert error.code == "stateless" and "previous_response_id" in error.message, error
            assert "send the full input" in error.message, error.message
        else:
            raise AssertionError("no BadRequestError for previous_response_id")
        assert recorded() == []


def alternating_front():
    import openai
    client = openai.OpenAI(base_url=FRONT_URL + "/v1", api_key=KEY, max_retries=0)

    @step("front", "each request goes to the next instance, and a stream passes as it comes")
    def _():
        mark = front_mark()
        for _ in range(2):
            stream = client.chat.completions.create(
                model="flash", messages=[{"role": "user", "content": "one two three four"}], stream=True)
            stamped = [(time.monotonic(), chunk) for chunk in stream]
            assert "".join(text_pieces([chunk for _, chunk in stamped])) == "You said: one two three four"
            # The fake sends its events 30 ms apart; a buffering front would deliver them at once.
            assert stamped[-1][0] - stamped[0][0] > 0.1, [round(t - stamped[0][0], 3) for t, _ in stamped]
        served = [name for name, _, _ in FRONT["served"][mark[0]:]]
        assert sorted(served) == ["A", "B"], served
        for name in served:
            until = time.monotonic() + 10
            while not chat_lines(name, mark[1][name]):
                assert time.monotonic() < until, f"instance {name} logged no chat completion"
                time.sleep(0.05)
        assert_vertex_saw(count=2, stream=True)


def agents_sdk():
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI
    from openai.types.responses import ResponseTextDeltaEvent

    set_tracing_disabled(True)
    # One event loop and one client for every step, closed at the end, as an application would.
    loop = asyncio.new_event_loop()
    client = AsyncOpenAI(base_url=PROXY_URL + "/v1", api_key=KEY, max_retries=0)
    model = OpenAIChatCompletionsModel(model="flash", openai_client=client)

    @step("openai-agents", "Runner.run with a plain agent")
    def _():
        agent = Agent(name="echo", instructions="Be brief.", model=model)
        result = loop.run_until_complete(Runner.run(agent, "good morning"))
        assert result.final_output == "You said: good morning", result.final_output
        assert_vertex_saw(count=1)

    @step("openai-agents", "a function tool's result reaches the final output")
    def _():
        seen = []

        @function_tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            seen.append(city)
            return f"sunny in {city}"

        agent = Agent(name="weather", instructions="Use tools.", model=model, tools=[get_weather])
        result = loop.run_until_complete(Runner.run(agent, "Lisbon"))
        assert seen == ["Lisbon"], seen
        assert result.final_output == "The tool said: sunny in Lisbon", result.final_output
        assert_vertex_saw(count=2)

    @step("openai-agents", "Runner.run_streamed prints text deltas")
    def _():
        agent = Agent(name="echo", instructions="Be brief.", model=model)

        async def stream():
            result = Runner.run_streamed(agent, "stream me please")
            deltas = []
            async for event in result.stream_events():
                if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
                    deltas.append(event.data.delta)
                    print("     delta:", repr(event.data.delta))
            return deltas, result.final_output

        deltas, final = loop.run_until_complete(stream())
        assert len(deltas) >= 3, deltas
        assert "".join(deltas) == "You said: stream me please" == final
        assert_vertex_saw(count=1, stream=True)

    def weather_agent(model_name, base_url, seen):
        @function_tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            seen.append(city)
            return f"sunny in {city}"

        own = AsyncOpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)
        chat = OpenAIChatCompletionsModel(model=model_name, openai_client=own)
        return Agent(name="weather", instructions="Use tools.", model=chat, tools=[get_weather]), own

    @step("openai-agents", "a two-step tool loop on Gemini 3 (pro-preview): the signature comes back")
    def _():
        seen = []
        since = len(PROXY_LOG)
        agent, own = weather_agent("pro-preview", PROXY_URL, seen)
        result = loop.run_until_complete(Runner.run(agent, "Porto"))
        loop.run_until_complete(own.close())
        assert seen == ["Porto"] and result.final_output == "The tool said: sunny in Porto", result.final_output
        first, second = assert_vertex_saw(model="google/gemini-3.1-pro-preview", count=2)
        call = second["body"]["messages"][-2]["tool_calls"][0]
        signature = call["extra_content"]["google"]["thought_signature"]
        # The Agents SDK drops it for a model name without "gemini"; the proxy restored the
        # real one, not the sentinel.
        assert signature != "skip_thought_signature_validator" and len(signature) > 20, call
        proxy_line = last_logged('"thought_signatures"', since)
        assert proxy_line["thought_signatures"] == {"restored": 1, "filled": 0}, proxy_line

    @step("openai-agents", "the loop's two steps on two alternating instances: the second restores the signature")
    def _():
        seen = []
        mark = front_mark()
        agent, own = weather_agent("pro-preview", FRONT_URL, seen)
        try:
            result = loop.run_until_complete(Runner.run(agent, "Porto"))
        finally:
            loop.run_until_complete(own.close())
        assert seen == ["Porto"] and result.final_output == "The tool said: sunny in Porto", result.final_output
        call_id = assert_steps_alternated(mark, stream=False)
        calls = [item.raw_item.call_id for item in result.new_items if item.type == "tool_call_item"]
        assert calls == [spliced(call_id)], calls

    @step("openai-agents", "the same loop fails with Vertex's 400 when THOUGHT_SIGNATURES=off")
    def _():
        import openai
        seen = []
        agent, own = weather_agent("pro-preview", OFF_URL, seen)
        try:
            loop.run_until_complete(Runner.run(agent, "Porto"))
        except openai.BadRequestError as error:
            assert error.status_code == 400 and "missing a thought_signature" in error.message, error
        else:
            raise AssertionError("the strict fake let a lost signature through")
        finally:
            loop.run_until_complete(own.close())
        assert seen == ["Porto"], seen

    loop.run_until_complete(client.close())
    loop.close()


def agents_responses():
    """The Agents SDK with its default model class, OpenAIResponsesModel, on /v1/responses."""
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI
    from openai.types.responses import ResponseTextDeltaEvent

    set_tracing_disabled(True)
    loop = asyncio.new_event_loop()

    def weather_agent(model_name, base_url, seen):
        @function_tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            seen.append(city)
            return f"sunny in {city}"

        own = AsyncOpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)
        model = OpenAIResponsesModel(model=model_name, openai_client=own)
        return Agent(name="weather", instructions="Use tools.", model=model, tools=[get_weather]), own

    def run(agent, own, prompt):
        try:
            return loop.run_until_complete(Runner.run(agent, prompt))
        finally:
            loop.run_until_complete(own.close())

    @step("openai-agents responses", "Runner.run: a function tool's result reaches the final output")
    def _():
        seen = []
        result = run(*weather_agent("flash", PROXY_URL, seen), "Lisbon")
        assert seen == ["Lisbon"] and result.final_output == "The tool said: sunny in Lisbon", result.final_output
        first, second = assert_vertex_saw(count=2, stream=False)
        assert first["body"]["messages"] == [{"role": "system", "content": "Use tools."},
                                             {"role": "user", "content": "Lisbon"}], first["body"]
        vertex_id = second["body"]["messages"][2]["tool_calls"][0]["id"]
        assert_round_trip(first, second, vertex_id, "sunny in Lisbon")

    @step("openai-agents responses", "Runner.run_streamed prints text deltas")
    def _():
        own = AsyncOpenAI(base_url=PROXY_URL + "/v1", api_key=KEY, max_retries=0)
        agent = Agent(name="echo", instructions="Be brief.", model=OpenAIResponsesModel(model="flash", openai_client=own))

        async def stream():
            result = Runner.run_streamed(agent, "stream me please")
            deltas = [event.data.delta async for event in result.stream_events()
                      if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent)]
            await own.close()
            return deltas, result.final_output

        deltas, final = loop.run_until_complete(stream())
        assert len(deltas) >= 3 and "".join(deltas) == "You said: stream me please" == final, deltas
        assert_vertex_saw(count=1, stream=True)

    @step("openai-agents responses", "a Gemini 3 tool loop on two alternating instances: the second restores the signature")
    def _():
        seen = []
        mark = front_mark()
        result = run(*weather_agent("pro-preview", FRONT_URL, seen), "Porto")
        assert seen == ["Porto"] and result.final_output == "The tool said: sunny in Porto", result.final_output
        call_id = assert_steps_alternated(mark, stream=False, path="/v1/responses")
        calls = [item.raw_item.call_id for item in result.new_items if item.type == "tool_call_item"]
        assert calls == [spliced(call_id)], calls

    loop.close()


def readme_code(heading, language):
    """The code blocks in `language` (```toml, say) of README's section `heading` (## …), in
    order, as printed."""
    with open(os.path.join(HERE, "..", "..", "README.md")) as f:
        text = f.read()
    section = text[text.index(f"\n## {heading}\n"):]
    section = section[:section.find("\n## ", 1)]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.S | re.M)


def codex_cli():
    """Codex CLI, `codex exec`, set up exactly as README and /docs say (~/.codex/config.toml with a
    provider on /v1/responses, the key in VERTEX_PROXY_KEY), in a temporary HOME and a git
    repository, standard input closed. The fake model calls Codex's shell tool, exec_command,
    with the prompt as the command; Codex runs it and sends its output back, and the fake says
    what the tool said, which Codex prints as its answer."""
    import tomllib

    # Codex's sandbox (bubblewrap, which needs user namespaces) is Codex's business, not the
    # proxy's, and a CI machine may not allow it: the commands run unsandboxed in a temporary HOME.
    SANDBOX = ["-s", "danger-full-access"]
    home = tempfile.mkdtemp()
    work = os.path.join(home, "work")
    os.makedirs(os.path.join(home, ".codex"))
    os.makedirs(work)
    subprocess.run(["git", "init", "--quiet", work], check=True)
    codex = os.path.join(HERE, "node_modules", ".bin", "codex")
    config = os.path.join(home, ".codex", "config.toml")

    def run_codex(args, marker):
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "VERTEX_PROXY_KEY": KEY}
        result = subprocess.run([codex, "exec", *SANDBOX, *args, f"echo {marker}"], env=env, cwd=work,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        # Codex prints the last answer on stdout: the fake's, quoting what the command printed.
        assert result.stdout.startswith("The tool said: ") and f"\nOutput:\n{marker}\n" in result.stdout, output
        return result

    def assert_codex_round_trip(requests, marker, model):
        first, second = requests
        for request in requests:
            body = request["body"]
            assert body["stream"] is True and body["stream_options"] == {"include_usage": True}, body
            names = [tool["function"]["name"] for tool in body["tools"]]
            # Codex's own tools, its namespaced ones under their mapped names; not web_search.
            assert names[0] == "exec_command" and "multi_agent_v1__spawn_agent" in names, names
            assert "web_search" not in json.dumps(body["tools"]), names
            # Its developer messages became system messages.
            assert body["messages"][0]["role"] == "system", body["messages"][0]
            assert body["messages"][0]["content"].startswith("You are a coding agent running in the Codex CLI")
            assert not {"store", "include", "client_metadata", "prompt_cache_key"} & set(body), sorted(body)
        assert first["body"]["messages"][-1] == {"role": "user", "content": f"echo {marker}"}, first["body"]
        vertex_id = second["body"]["messages"][-2]["tool_calls"][0]["id"]
        call = assert_round_trip(first, second, vertex_id, second["body"]["messages"][-1]["content"], model=model)
        assert call["function"] == {"name": "exec_command", "arguments": json.dumps({"cmd": f"echo {marker}"},
                                                                                   separators=(",", ":"))}, call
        assert "Process exited with code 0\n" in second["body"]["messages"][-1]["content"]
        assert second["body"]["messages"][-1]["content"].endswith(f"Output:\n{marker}\n"), second["body"]

    @step("codex", "config.toml exactly as README and /docs give it")
    def _():
        (block,) = readme_code("Codex and the Responses API", "toml")
        written = block.replace("https://YOUR-SERVICE/v1", PROXY_URL + "/v1")
        with open(config, "w") as f:
            f.write(written)
        # The same lines (docs_code reads a block without its blank lines).
        docs = docs_code("Codex and the Responses API")
        assert [line for line in written.splitlines() if line] == docs.splitlines(), (written, docs)
        settings = tomllib.loads(written)
        assert settings["model_provider"] == "vertex-proxy" and settings["model"] == "flash", settings
        assert settings["model_providers"]["vertex-proxy"] == {
            "name": "vertex-proxy", "base_url": PROXY_URL + "/v1", "env_key": "VERTEX_PROXY_KEY",
            "wire_api": "responses"}, settings

    @step("codex", "codex exec on flash: it runs the command the model asks for and reports its output")
    def _():
        since = len(LOGS["A"])
        run_codex([], "codex-flash-marker")
        requests = assert_vertex_saw(count=2, stream=True)
        assert_codex_round_trip(requests, "codex-flash-marker", "google/gemini-2.5-flash")
        lines = responses_lines(since, 2)
        assert all(line["alias"] == "flash" and line["usage"]["input_tokens"] > 1000 for line in lines), lines
        assert all("codex_exec/0.171.0" in line["httpRequest"]["userAgent"] for line in lines), lines
        notes = [line for line in LOGS["A"][since:] if "hosted tools" in line]
        assert len(notes) == 2 and all("web_search" in note for note in notes), notes

    @step("codex", "codex exec -m pro-preview: the round trip on Gemini 3, the signature back from the call_id")
    def _():
        since = len(LOGS["A"])
        run_codex(["-m", "pro-preview"], "codex-gemini3-marker")
        requests = assert_vertex_saw(model="google/gemini-3.1-pro-preview", count=2, stream=True)
        assert_codex_round_trip(requests, "codex-gemini3-marker", "google/gemini-3.1-pro-preview")
        first_line, second_line = responses_lines(since, 2)
        assert second_line["thought_signatures"] == {"restored": 1, "filled": 0}, second_line

    @step("codex", "apply_patch, its freeform tool, on Gemini 3: a custom tool call mapped both ways edits a file")
    def _():
        # Codex offers apply_patch as a freeform (custom) tool to models its catalog says take
        # one; "pro-preview" is not in its own, so it gets a catalog of one model here.
        catalog = os.path.join(home, "catalog.json")
        with open(catalog, "w") as f:
            json.dump({"models": [{
                "slug": "pro-preview", "display_name": "pro-preview", "description": None,
                "default_reasoning_level": "medium", "supported_reasoning_levels": [], "shell_type": "shell_command",
                "visibility": "list", "supported_in_api": True, "priority": 0, "upgrade": None,
                "base_instructions": "You are a coding agent.", "supports_reasoning_summaries": False,
                "support_verbosity": False, "default_verbosity": None, "apply_patch_tool_type": "freeform",
                "truncation_policy": {"mode": "bytes", "limit": 10000}, "supports_parallel_tool_calls": False,
                "supports_image_detail_original": False, "context_window": 272000, "max_context_window": 272000,
                "experimental_supported_tools": []}]}, f)
        patch = "*** Begin Patch\n*** Add File: hello.txt\n+patched by codex\n*** End Patch"
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "VERTEX_PROXY_KEY": KEY}
        result = subprocess.run([codex, "exec", *SANDBOX, "-m", "pro-preview", "-c",
                                 f'model_catalog_json="{catalog}"', patch], env=env, cwd=work,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        with open(os.path.join(work, "hello.txt")) as f:
            assert f.read() == "patched by codex\n"
        assert result.stdout.startswith("The tool said: ") and "A hello.txt" in result.stdout, output
        first, second = assert_vertex_saw(model="google/gemini-3.1-pro-preview", count=2, stream=True)
        (tool,) = [t for t in first["body"]["tools"] if t["function"]["name"] == "apply_patch"]
        assert list(tool["function"]["parameters"]["properties"]) == ["input"], tool
        vertex_id = second["body"]["messages"][-2]["tool_calls"][0]["id"]
        result_text = second["body"]["messages"][-1]["content"]
        assert "Success. Updated the following files:\nA hello.txt" in result_text, result_text
        call = assert_round_trip(first, second, vertex_id, result_text, model="google/gemini-3.1-pro-preview")
        assert call["function"] == {"name": "apply_patch", "arguments": json.dumps({"input": patch},
                                                                                  separators=(",", ":"))}, call

    @step("codex", "with THOUGHT_SIGNATURES=off the same round trip fails, and Codex shows Vertex's 400")
    def _():
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "VERTEX_PROXY_KEY": KEY}
        override = f'model_providers.vertex-proxy.base_url="{OFF_URL}/v1"'
        result = subprocess.run([codex, "exec", *SANDBOX, "-m", "pro-preview", "-c", override, "echo codex-off-marker"],
                                env=env,
                                cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "The tool said" not in result.stdout, output
        assert "missing a thought_signature" in output, output
        # A 400 is not retried: the first step, and the second once, refused.
        first, second = assert_vertex_saw(model="google/gemini-3.1-pro-preview", count=2, stream=True)
        assert "extra_content" not in second["body"]["messages"][-2]["tool_calls"][0], second["body"]

    @step("codex", "the Gemini 3 round trip on two alternating instances: the second restores the signature")
    def _():
        mark = front_mark()
        override = f'model_providers.vertex-proxy.base_url="{FRONT_URL}/v1"'
        run_codex(["-m", "pro-preview", "-c", override], "codex-front-marker")
        assert_steps_alternated(mark, stream=True, path="/v1/responses")


def langchain():
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    def chat(base_url, model):
        return ChatOpenAI(model=model, base_url=base_url + "/v1", api_key=KEY, max_retries=0)

    @step("langchain", "ChatOpenAI.invoke and .stream")
    def _():
        model = chat(PROXY_URL, "flash")
        reply = model.invoke([HumanMessage("hello there")])
        assert reply.content == "You said: hello there", reply
        texts = [piece.content for piece in model.stream([HumanMessage("one two three four")]) if piece.content]
        assert len(texts) >= 3 and "".join(texts) == "You said: one two three four", texts
        first, second = assert_vertex_saw(count=2)
        assert not first["body"].get("stream") and second["body"]["stream"] is True, (first, second)

    @step("langchain", "a two-step tool loop on Gemini 3 (pro-preview), its steps on two alternating instances")
    def _():
        model = chat(FRONT_URL, "pro-preview").bind_tools([get_weather])
        mark = front_mark()
        messages = [HumanMessage("Oslo")]
        first = model.invoke(messages)
        (call,) = first.tool_calls
        assert call["name"] == "get_weather" and call["args"] == {"city": "Oslo"}, call
        messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
        final = model.invoke(messages)
        assert final.content == "The tool said: sunny in Oslo", final
        # LangChain sends the call back without its extra_content: the id brought the signature.
        call_id = assert_steps_alternated(mark, stream=False)
        assert call["id"] == spliced(call_id), call


def anthropic_sdk():
    import anthropic
    client = anthropic.Anthropic(base_url=PROXY_URL, api_key=KEY, max_retries=0)

    @step("python anthropic", "messages.create")
    def _():
        reply = client.messages.create(model="claude-sonnet", max_tokens=64,
                                       messages=[{"role": "user", "content": "hello there"}])
        assert reply.content[0].text == "You said: hello there", reply
        assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
        (request,) = assert_vertex_saw(model=CLAUDE, count=1)
        assert request["path"].endswith(":rawPredict"), request["path"]

    @step("python anthropic", "messages.stream: text deltas, no vertex_event")
    def _():
        with client.messages.stream(model="claude-sonnet", max_tokens=64,
                                    messages=[{"role": "user", "content": "one two three four"}]) as stream:
            texts = list(stream.text_stream)
            final = stream.get_final_message()
        assert len(texts) >= 3 and "".join(texts) == "You said: one two three four", texts
        assert final.usage.output_tokens > 0
        (request,) = assert_vertex_saw(model=CLAUDE, count=1)
        assert request["path"].endswith(":streamRawPredict"), request["path"]

    @step("python anthropic", "messages.count_tokens")
    def _():
        counted = client.messages.count_tokens(model="claude-sonnet",
                                               messages=[{"role": "user", "content": "one two three"}])
        assert counted.input_tokens == 3, counted
        (request,) = assert_vertex_saw(model=CLAUDE, count=1)
        assert request["body"]["model"] == "claude-sonnet-4-5@20250929", request["body"]

    @step("python anthropic", "a tool round trip")
    def _():
        tool = {"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
        messages = [{"role": "user", "content": "Paris"}]
        first = client.messages.create(model="claude-sonnet", max_tokens=64, tools=[tool], messages=messages)
        call = next(b for b in first.content if b.type == "tool_use")
        assert call.name == "get_weather" and call.input == {"city": "Paris"}, call
        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
        final = client.messages.create(model="claude-sonnet", max_tokens=64, tools=[tool], messages=messages)
        assert final.content[0].text == "The tool said: sunny", final
        assert_vertex_saw(model=CLAUDE, count=2)

    @step("python anthropic", "errors in Anthropic's shape: a bad key, a Gemini alias")
    def _():
        bad = anthropic.Anthropic(base_url=PROXY_URL, api_key="sk_wrong_0000000000000", max_retries=0)
        try:
            bad.messages.create(model="claude-sonnet", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        except anthropic.AuthenticationError as error:
            assert error.body["error"]["type"] == "authentication_error", error.body
        else:
            raise AssertionError("no AuthenticationError")
        try:
            client.messages.create(model="flash", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        except anthropic.BadRequestError as error:
            assert "/v1/chat/completions" in error.body["error"]["message"], error.body
        else:
            raise AssertionError("no BadRequestError")
        assert recorded() == []


def claude_code():
    home = tempfile.mkdtemp()
    claude = os.path.join(HERE, "node_modules", ".bin", "claude")
    with open(os.path.join(home, "notes.txt"), "w") as f:
        f.write("sunny in Lisbon\n")
    # As /docs says, with a key of ours; nothing else of the network is reachable here.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "ANTHROPIC_BASE_URL": PROXY_URL,
           "ANTHROPIC_AUTH_TOKEN": KEY, "ANTHROPIC_MODEL": "claude-sonnet",
           "ANTHROPIC_DEFAULT_SONNET_MODEL": "claude-sonnet", "ANTHROPIC_DEFAULT_HAIKU_MODEL": "claude-sonnet",
           "CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS": "1", "DISABLE_TELEMETRY": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}

    @step("claude code", "claude -p with a tool round trip through /v1/messages")
    def _():
        result = subprocess.run([claude, "-p", "notes.txt", "--tools", "Read", "--bare"], env=env,
                                capture_output=True, text=True, timeout=120, cwd=home)
        assert result.returncode == 0, result.stdout + result.stderr
        # The stand-in calls the first tool, Read, and then says what it returned.
        assert result.stdout.startswith("The tool said:"), result.stdout + result.stderr
        requests = assert_vertex_saw(model=CLAUDE)
        streamed = [r for r in requests if r["path"].endswith(":streamRawPredict")]
        assert len(streamed) >= 2, [r["path"] for r in requests]
        assert any(m["role"] == "user" and isinstance(m["content"], list)
                   and any(b.get("type") == "tool_result" for b in m["content"])
                   for m in streamed[-1]["body"]["messages"]), "no tool result went back"
        for request in requests:
            for beta in request["headers"].get("anthropic-beta", "").split(","):
                assert beta in ("", "interleaved-thinking-2025-05-14", "context-1m-2025-08-07"), beta


def node_script(script, client):
    """Runs one of the suite's Node scripts, which print "ok   CLIENT: STEP" or "FAIL CLIENT: …"
    for each of their steps, and counts those."""
    env = {**os.environ, "PROXY_URL": PROXY_URL, "NO_RETRY_URL": NO_RETRY_URL, "FAKE_URL": fake_url(), "KEY": KEY,
           "TOKEN": FAKE["token"], "PROJECT": FAKE["project"]}
    fake_reset()
    result = subprocess.run(["node", os.path.join(HERE, script)], env=env, capture_output=True, text=True,
                            timeout=120)
    print(result.stdout, end="")
    if result.stderr.strip():
        print(result.stderr, end="")
    for line in result.stdout.splitlines():
        if line.startswith("ok   "):
            RESULTS["passed"] += 1
        elif line.startswith("FAIL "):
            RESULTS["failed"] += 1
    if result.returncode != 0 and "FAIL " not in result.stdout:
        RESULTS["failed"] += 1
        print(f"FAIL {client}: the script exited {result.returncode}")


def node_sdk():
    node_script("clients.mjs", "node openai")


def docs_pi_block():
    """The models.json block /docs gives for pi (plain text, indented by four spaces)."""
    docs = urllib.request.urlopen(PROXY_URL + "/docs").read().decode()
    section = docs[docs.index("pi coding agent\n"):]
    match = re.search(r"^    \{\n.*?^    \}$", section, re.S | re.M)
    return json.loads("\n".join(line[4:] for line in match.group(0).splitlines()))


def pi_agent():
    home = tempfile.mkdtemp()
    pi = os.path.join(HERE, "node_modules", ".bin", "pi")
    env = {**os.environ, "HOME": home, "VERTEX_PROXY_KEY": KEY, "PI_SKIP_VERSION_CHECK": "1"}
    env.pop("OPENAI_API_KEY", None)

    @step("pi", "models.json exactly as /docs gives it")
    def _():
        block = docs_pi_block()
        provider = block["providers"]["vertex-proxy"]
        assert provider["api"] == "openai-completions" and provider["baseUrl"] == PROXY_URL + "/v1"
        assert provider["apiKey"] == "VERTEX_PROXY_KEY" and provider["headers"]["x-api-key"] == "VERTEX_PROXY_KEY"
        os.makedirs(os.path.join(home, ".pi", "agent"))
        with open(os.path.join(home, ".pi", "agent", "models.json"), "w") as f:
            json.dump(block, f)

    @step("pi", "pi --list-models shows the provider's models")
    def _():
        result = subprocess.run([pi, "--list-models"], env=env, capture_output=True, text=True, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "vertex-proxy" in output and "flash" in output and "ratelimited" in output, output

    @step("pi", "pi -p streams an answer through the proxy")
    def _():
        result = subprocess.run([pi, "-p", "Hello from pi", "--provider", "vertex-proxy", "--model", "flash",
                                 "--no-tools", "--no-session"],
                                env=env, capture_output=True, text=True, timeout=120, cwd=home)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "You said: Hello from pi" in result.stdout, result.stdout + result.stderr
        requests = assert_vertex_saw(stream=True)
        # pi sent both headers; x-api-key decided, and neither reached Vertex.
        assert requests[-1]["body"]["messages"][-1]["role"] == "user"

    with open(os.path.join(home, "notes.txt"), "w") as f:
        f.write("sunny in Lisbon\n")

    def pi_tool_loop(url):
        """pi on pro-preview with its read tool: the stand-in calls the first tool with the prompt
        as its path, so pi reads notes.txt and sends the result back, a two-step loop."""
        models = os.path.join(home, ".pi", "agent", "models.json")
        with open(models) as f:
            block = json.load(f)
        block["providers"]["vertex-proxy"]["baseUrl"] = url + "/v1"
        with open(models, "w") as f:
            json.dump(block, f)
        try:
            return subprocess.run([pi, "-p", "notes.txt", "--provider", "vertex-proxy", "--model", "pro-preview",
                                   "--tools", "read", "--no-session"],
                                  env=env, capture_output=True, text=True, timeout=120, cwd=home)
        finally:
            block["providers"]["vertex-proxy"]["baseUrl"] = PROXY_URL + "/v1"
            with open(models, "w") as f:
                json.dump(block, f)

    @step("pi", "a two-step tool loop on Gemini 3 (pro-preview): the signature comes back")
    def _():
        result = pi_tool_loop(PROXY_URL)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "The tool said: sunny in Lisbon" in result.stdout, result.stdout + result.stderr
        first, second = assert_vertex_saw(model="google/gemini-3.1-pro-preview", count=2, stream=True)
        call = next(m for m in second["body"]["messages"] if m["role"] == "assistant")["tool_calls"][0]
        assert call["function"]["name"] == "read", call
        signature = call["extra_content"]["google"]["thought_signature"]
        # pi 0.73 drops extra_content: what Vertex got is the proxy's, and the real one.
        assert signature != "skip_thought_signature_validator" and len(signature) > 20, call

    @step("pi", "the loop's two steps on two alternating instances: the second restores the signature")
    def _():
        mark = front_mark()
        result = pi_tool_loop(FRONT_URL)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "The tool said: sunny in Lisbon" in result.stdout, result.stdout + result.stderr
        assert_steps_alternated(mark, stream=True)

    @step("pi", "an anthropic-messages provider, as /docs gives it, with a tool round trip")
    def _():
        provider = docs_pi_block()["providers"]["vertex-proxy-claude"]
        assert provider["api"] == "anthropic-messages" and provider["baseUrl"] == PROXY_URL, provider
        assert provider["compat"] == {"supportsEagerToolInputStreaming": False}
        result = subprocess.run([pi, "-p", "notes.txt", "--provider", "vertex-proxy-claude", "--model",
                                 "claude-sonnet", "--tools", "read", "--no-session"],
                                env=env, capture_output=True, text=True, timeout=120, cwd=home)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "The tool said: sunny in Lisbon" in result.stdout, result.stdout + result.stderr
        first, second = assert_vertex_saw(model=CLAUDE, count=2)
        for request in (first, second):
            assert request["path"].endswith(":streamRawPredict"), request["path"]
            # pi asked for fine-grained tool streaming, which Vertex refuses: filtered out.
            assert request["headers"].get("anthropic-beta") == "interleaved-thinking-2025-05-14", request["headers"]
            assert all("eager_input_streaming" not in tool for tool in request["body"]["tools"])

    @step("pi", "the same loop fails with Vertex's readable 400 when THOUGHT_SIGNATURES=off")
    def _():
        result = pi_tool_loop(OFF_URL)
        output = result.stdout + result.stderr
        assert "The tool said" not in result.stdout, output
        assert "missing a thought_signature" in output, output
        requests = assert_vertex_saw(model="google/gemini-3.1-pro-preview", stream=True)
        assert len(requests) >= 2, len(requests)


def docs_code(heading):
    """The first code block under `heading` in /docs as plain text (a heading is underlined with
    dashes, code is indented by four spaces), without its indent."""
    lines = urllib.request.urlopen(PROXY_URL + "/docs").read().decode().splitlines()
    at = next(i for i, line in enumerate(lines[:-1]) if line == heading and set(lines[i + 1]) == {"-"})
    code = []
    for line in lines[at + 2:]:
        if line.startswith("    "):
            code.append(line[4:])
        elif code and line.strip():
            break
    return "\n".join(code).strip("\n")


def gemini_cli():
    home = tempfile.mkdtemp()
    work = os.path.join(home, "work")
    os.makedirs(os.path.join(home, ".gemini"))
    os.makedirs(work)
    with open(os.path.join(work, "notes.txt"), "w") as f:
        f.write("sunny in Lisbon\n")
    gemini = os.path.join(HERE, "node_modules", ".bin", "gemini")
    # The settings /docs gives, as they are: the two variables, settings.json and the command.
    block = docs_code("Gemini CLI")
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", block, re.M))
    # It writes settings.json only where there is none: a user's own settings are kept.
    written = re.search(r"^mkdir -p ~/\.gemini && test -e ~/\.gemini/settings\.json \|\| "
                        r"echo '(.*)' > ~/\.gemini/settings\.json   # .*$", block, re.M)
    settings = json.loads(written.group(1))
    # The line as printed, in this HOME: it writes the file where there is none and keeps one that is there.
    settings_path = os.path.join(home, ".gemini", "settings.json")

    def write_settings_as_docs_do():
        subprocess.run(["bash", "-c", written.group(0)], env={"PATH": os.environ["PATH"], "HOME": home}, check=True)
        with open(settings_path) as f:
            return f.read().strip()

    assert write_settings_as_docs_do() == written.group(1), "settings.json as /docs writes it"
    with open(settings_path, "w") as f:
        f.write('{"kept": true}')
    assert write_settings_as_docs_do() == '{"kept": true}', "an existing settings.json was overwritten"
    command = shlex.split(block.splitlines()[-1])
    # Nothing else of the network: no usage statistics (they go to play.googleapis.com), no
    # telemetry, no update check.
    with open(os.path.join(home, ".gemini", "settings.json"), "w") as f:
        json.dump({**settings, "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
                   "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False}}, f)

    def run_cli(args, key=KEY):
        # TMPDIR: where it writes its error reports.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "TMPDIR": home,
               **{name: value.replace("$VERTEX_PROXY_KEY", key) for name, value in exports.items()}}
        return subprocess.run([gemini, *args], env=env, cwd=work, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120)

    @step("gemini cli", "gemini -p as /docs gives it: a two-step tool loop on Gemini 3, the signature sent back")
    def _():
        assert exports == {"GOOGLE_GEMINI_BASE_URL": PROXY_URL, "GEMINI_API_KEY": "$VERTEX_PROXY_KEY"}, exports
        assert settings == {"security": {"auth": {"selectedType": "gemini-api-key"}}}, settings
        # /docs names an alias the CLI sends as it is: not flash, which it would rename.
        assert command[:3] == ["gemini", "-m", "gemini-3.1-pro-preview"], command
        since = len(LOGS["A"])
        result = run_cli(command[1:])
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        # The stand-in calls the first function the CLI declares (update_topic in 0.61) with an
        # argument it does not take: the CLI answers with its error, and the stand-in says so.
        assert result.stdout.startswith('The tool said: {"error":'), output
        first, second = assert_gemini_saw("google/gemini-3.1-pro-preview", "streamGenerateContent", count=2,
                                          sse=True)
        declared = [f["name"] for tool in first["body"]["tools"] for f in tool["functionDeclarations"]]
        assert "read_file" in declared, declared
        asked = first["body"]["contents"]
        assert second["body"]["contents"][:len(asked)] == asked, "the CLI changed its history"
        call, answer = second["body"]["contents"][len(asked):]
        (part,) = call["parts"]
        assert part["functionCall"]["name"] == declared[0], part
        # The signature the stand-in gave, as it came; the stand-in refuses the request otherwise.
        assert part["thoughtSignature"] == native_signature(part["functionCall"]), part
        assert answer["parts"][0]["functionResponse"]["name"] == declared[0], answer
        for line in gemini_log_lines(since, "gemini-3.1-pro-preview", 2):
            assert line["httpRequest"]["requestUrl"] == "/v1beta/models/gemini-3.1-pro-preview:streamGenerateContent"
            assert line["model"] == "google/gemini-3.1-pro-preview" and line["usage"]["total_tokens"] > 0, line

    @step("gemini cli", "-m pro, flash and flash-lite: the CLI sends its own ids, each an alias here")
    def _():
        # This proxy's own `flash` alias (gemini-2.5-flash) is not what `-m flash` reaches.
        for short, alias in (("pro", "gemini-3.1-pro-preview"), ("flash", "gemini-3.8-flash"),
                             ("flash-lite", "gemini-3.5-flash-lite")):
            fake_reset()
            since = len(LOGS["A"])
            result = run_cli(["-m", short, "-p", "Hello", "--skip-trust"])
            assert result.returncode == 0, f"-m {short}: " + result.stdout + result.stderr
            assert_gemini_saw(ALIASES[alias], "streamGenerateContent", count=2, sse=True)
            gemini_log_lines(since, alias, 2)

    @step("gemini cli", "a bad key: the CLI shows Google's 401, nothing reaches Vertex")
    def _():
        result = run_cli(command[1:], key="sk_wrong_0000000000000")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert '"code":401,"message":"invalid API key","status":"UNAUTHENTICATED"' in output, output
        assert recorded() == []


def google_genai():
    from google import genai
    from google.genai import errors, types

    sent = []  # what the SDK sent, each request as httpx has it
    options = {"base_url": PROXY_URL, "client_args": {"event_hooks": {"request": [sent.append]}}}
    client = genai.Client(api_key=KEY, http_options=options)

    def sent_to(path):
        assert [r.url.path for r in sent] == [path] * len(sent), [str(r.url) for r in sent]
        for request in sent:
            assert request.headers["x-goog-api-key"] == KEY, request.headers
        return sent

    @step("python google-genai", "generate_content: Gemini's path in, Vertex's native method out, the body as sent")
    def _():
        sent.clear()
        reply = client.models.generate_content(model="flash", contents="hello there")
        assert reply.text == "You said: hello there", reply
        assert reply.usage_metadata.total_token_count > 0, reply.usage_metadata
        # google-genai 3.x asks /v1, not /v1beta.
        sent_to("/v1/models/flash:generateContent")
        assert_sent_as_is(sent, assert_gemini_saw("google/gemini-2.5-flash", "generateContent", count=1))

    @step("python google-genai", "generate_content_stream: SSE, with the usage")
    def _():
        sent.clear()
        chunks = list(client.models.generate_content_stream(model="flash", contents="one two three four"))
        assert "".join(c.text or "" for c in chunks) == "You said: one two three four", chunks
        assert chunks[-1].usage_metadata.total_token_count > 0, chunks[-1]
        sent_to("/v1/models/flash:streamGenerateContent")
        assert sent[0].url.query == b"alt=sse", sent[0].url
        assert_sent_as_is(sent, assert_gemini_saw("google/gemini-2.5-flash", "streamGenerateContent", count=1,
                                                  sse=True))

    @step("python google-genai", "automatic function calling on Gemini 3: a Python function, the signature sent back")
    def _():
        sent.clear()
        seen = []

        def get_weather(city: str) -> str:
            """The weather in a city."""
            seen.append(city)
            return f"sunny in {city}"

        config = types.GenerateContentConfig(tools=[get_weather])
        chat = client.chats.create(model="gemini-3.1-pro-preview", config=config)
        # Porto: the SDK sends a signature back in base64url, which Vertex reads as it reads
        # base64, but the stand-in compares the text, and refuses one with "+" or "/" in it
        # (Lisbon's, say) as not valid. Porto's has neither.
        reply = chat.send_message("Porto")
        assert seen == ["Porto"], seen
        assert reply.text == 'The tool said: {"result":"sunny in Porto"}', reply.text
        sent_to("/v1/models/gemini-3.1-pro-preview:generateContent")
        first, second = assert_gemini_saw("google/gemini-3.1-pro-preview", "generateContent", count=2)
        assert_sent_as_is(sent, [first, second])
        call, answer = second["body"]["contents"][1:]
        part = call["parts"][0]
        assert part["functionCall"] == {"name": "get_weather", "args": {"city": "Porto"}}, part
        signature = base64.urlsafe_b64decode(part["thoughtSignature"])
        assert signature == base64.b64decode(native_signature(part["functionCall"])), part
        assert answer["parts"][0]["functionResponse"] == {"name": "get_weather",
                                                          "response": {"result": "sunny in Porto"}}, answer

    @step("python google-genai", "count_tokens")
    def _():
        sent.clear()
        counted = client.models.count_tokens(model="flash", contents="one two three")
        assert counted.total_tokens == 3, counted
        sent_to("/v1/models/flash:countTokens")
        assert_sent_as_is(sent, assert_gemini_saw("google/gemini-2.5-flash", "countTokens", count=1))

    @step("python google-genai", "embed_content, by :batchEmbedContents")
    def _():
        sent.clear()
        result = client.models.embed_content(model="embed", contents=["a", "b c"])
        assert len(result.embeddings) == 2 and len(result.embeddings[0].values) == 8, result
        sent_to("/v1/models/embed:batchEmbedContents")
        (request,) = assert_gemini_saw("google/gemini-embedding-001", "batchEmbedContents", count=1)
        assert_sent_as_is(sent, [request])
        # Each request inside names the alias, as the SDK wrote it.
        assert [r["model"] for r in request["body"]["requests"]] == ["models/embed"] * 2, request["body"]

    @step("python google-genai", "models.list: the aliases Gemini's API reaches, in Gemini's shape")
    def _():
        sent.clear()
        models = {m.name: m for m in client.models.list()}
        reached = [a for a, route in ALIASES.items() if isinstance(route, str) and route.startswith("google/")]
        assert sorted(models) == sorted(f"models/{alias}" for alias in reached), sorted(models)
        assert "embedContent" in models["models/embed"].supported_actions, models["models/embed"]
        assert "generateContent" in models["models/gemini-3.1-pro-preview"].supported_actions
        sent_to("/v1/models")
        assert recorded() == []

    @step("python google-genai", "Vertex mode with an API key: generate_content")
    def _():
        sent.clear()
        vertex = genai.Client(vertexai=True, api_key=KEY, http_options=options)
        reply = vertex.models.generate_content(model="flash", contents="hello vertex")
        assert reply.text == "You said: hello vertex", reply
        # Vertex Express's path; the proxy's route decides the project and location.
        sent_to("/v1beta1/publishers/google/models/flash:generateContent")
        assert_sent_as_is(sent, assert_gemini_saw("google/gemini-2.5-flash", "generateContent", count=1))

    @step("python google-genai", "errors in Google's shape: a bad key, an unknown alias")
    def _():
        bad = genai.Client(api_key="sk_wrong_0000000000000", http_options={"base_url": PROXY_URL})
        try:
            bad.models.generate_content(model="flash", contents="x")
        except errors.ClientError as error:
            assert (error.code, error.status, error.message) == (401, "UNAUTHENTICATED", "invalid API key"), error
        else:
            raise AssertionError("no ClientError")
        try:
            client.models.generate_content(model="nope", contents="x")
        except errors.ClientError as error:
            assert (error.code, error.status) == (400, "INVALID_ARGUMENT"), error
            assert "nope" in error.message and "gemini-3.1-pro-preview" in error.message, error.message
        else:
            raise AssertionError("no ClientError")
        assert recorded() == []


def node_genai():
    node_script("genai.mjs", "node google-genai")


def gemini_docs():
    env = {**os.environ, "VERTEX_PROXY_KEY": KEY}

    def example(code):
        """The alias a snippet asks for, and what the fake saw for it."""
        alias = re.search(r'model(?:=|: )"([^"]+)"', code).group(1)
        return alias, assert_gemini_saw(ALIASES[alias], "generateContent")

    @step("docs", "the google-genai (Python) snippet runs as /docs gives it")
    def _():
        code = docs_code("google-genai (Python)")
        assert f'http_options={{"base_url": "{PROXY_URL}"}}' in code, code
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout == "You said: Hello\n", result.stdout + result.stderr
        example(code)

    @step("docs", "the @google/genai (JavaScript) snippet runs as /docs gives it")
    def _():
        code = docs_code("@google/genai (JavaScript)")
        assert f'httpOptions: {{ baseUrl: "{PROXY_URL}" }}' in code, code
        result = subprocess.run(["node", "--input-type=module", "-e", code], env=env, cwd=HERE, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0 and result.stdout == "You said: Hello\n", result.stdout + result.stderr
        example(code)


def node_ai_sdk():
    node_script("aisdk.mjs", "ai sdk")


def responses_docs():
    """README's and /docs' Responses snippets, run as printed: README's with this proxy's URL for
    https://YOUR-SERVICE/v1, /docs' as the page gives them (it fills in its own URL)."""
    env = {**os.environ, "VERTEX_PROXY_KEY": KEY}

    def run_snippet(command, code):
        result = subprocess.run([*command, code], env=env, cwd=HERE, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def from_readme(language, nth=0):
        code = readme_code("Codex and the Responses API", language)[nth]
        assert code.count("https://YOUR-SERVICE/v1") == 1, code
        return code.replace("https://YOUR-SERVICE/v1", PROXY_URL + "/v1")

    @step("docs", "README's OpenAI Python SDK snippet (responses.create and .stream) runs as printed")
    def _():
        output = run_snippet([sys.executable, "-c"], from_readme("python"))
        assert output == "You said: Say hello\nYou said: Count to five", output
        whole, streamed = assert_vertex_saw(count=2)
        assert not whole["body"].get("stream") and streamed["body"]["stream"] is True, (whole, streamed)

    @step("docs", "README's Agents SDK snippet (OpenAIResponsesModel) runs as printed")
    def _():
        code = from_readme("python", 1)
        assert "OpenAIResponsesModel(" in code, code
        assert run_snippet([sys.executable, "-c"], code) == "You said: Hello\n"
        (request,) = assert_vertex_saw(count=1)
        assert request["body"]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}

    @step("docs", "/docs' Agents SDK snippet (OpenAIResponsesModel) runs as given")
    def _():
        code = docs_code("OpenAI Agents SDK (Python, Responses)")
        assert f'base_url="{PROXY_URL}/v1"' in code and "OpenAIResponsesModel(" in code, code
        assert run_snippet([sys.executable, "-c"], code) == "You said: Hello\n"
        assert_vertex_saw(count=1)

    @step("docs", "README's Vercel AI SDK snippet runs as printed")
    def _():
        output = run_snippet(["node", "--input-type=module", "-e"], from_readme("js"))
        assert output == "You said: Say hello\n", output
        assert_vertex_saw(count=1, stream=False)

    @step("docs", "/docs' OpenAI Python SDK Responses snippet runs as given")
    def _():
        code = docs_code("Python (OpenAI SDK, Responses)")
        assert f'base_url="{PROXY_URL}/v1"' in code and "client.responses.create" in code, code
        assert run_snippet([sys.executable, "-c"], code) == "You said: Hello\n"
        assert_vertex_saw(count=1, stream=False)

    @step("docs", "/docs' Vercel AI SDK snippet runs as given")
    def _():
        code = docs_code("Vercel AI SDK (@ai-sdk/openai)")
        assert f'baseURL: "{PROXY_URL}/v1"' in code and "store: false" in code, code
        assert run_snippet(["node", "--input-type=module", "-e"], code) == "You said: Hello\n"
        assert_vertex_saw(count=1, stream=False)


def main():
    global PROXY_URL, NO_RETRY_URL, OFF_URL, FRONT_URL
    binary, fake_binary = sys.argv[1], sys.argv[2]
    fake = start_fake(fake_binary)
    proxy, PROXY_URL = start_proxy(binary, "A")
    # A second instance with the same settings, and a front that alternates between the two.
    second, second_url = start_proxy(binary, "B")
    FRONT_URL = start_front([("A", PROXY_URL), ("B", second_url)])
    no_retry, NO_RETRY_URL = start_proxy(binary, "no-retry", MAX_ATTEMPTS="1")
    off, OFF_URL = start_proxy(binary, "off", THOUGHT_SIGNATURES="off")
    try:
        clients = (python_sdk, alternating_front, agents_sdk, node_sdk, pi_agent, langchain, anthropic_sdk,
                   claude_code, gemini_cli, google_genai, node_genai, gemini_docs, python_responses,
                   agents_responses, codex_cli, node_ai_sdk, responses_docs)
        only = os.environ.get("CLIENTS")  # names of some of them, comma-separated, while working on those
        for client in [c for c in clients if not only or c.__name__ in only.split(",")]:
            print(f"--- {client.__name__}")
            try:
                client()
            except Exception as error:  # noqa: BLE001 - a client that cannot even start counts as a failure
                RESULTS["failed"] += 1
                print(f"FAIL {client.__name__}: setup: {error!r}")
                traceback.print_exc(limit=3)
    finally:
        for running in (proxy, second, no_retry, off):
            running.terminate()
            running.wait(timeout=15)
    step("proxy", "its log holds no key, token or content")(check_log)
    fake.stdin.close()
    fake.wait(timeout=15)
    print(f"clients: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] or not RESULTS["passed"] else 0)


if __name__ == "__main__":
    main()
