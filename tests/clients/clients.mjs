// The OpenAI Node SDK against vertex-proxy; run by run.py, which passes PROXY_URL, FAKE_URL,
// KEY and TOKEN, and NO_RETRY_URL (a proxy with MAX_ATTEMPTS=1, where only the SDK retries). Prints "ok   node openai: STEP" or "FAIL node openai: STEP: what came back".
import assert from "node:assert/strict";
import OpenAI from "openai";

const { PROXY_URL, NO_RETRY_URL, FAKE_URL, KEY, TOKEN } = process.env;
const baseURL = `${PROXY_URL}/v1`;
let failed = 0;

async function reset() {
  await fetch(`${FAKE_URL}/_reset`, { method: "POST" });
}

async function vertexSaw({ model = "google/gemini-2.5-flash", count, stream } = {}) {
  const requests = await (await fetch(`${FAKE_URL}/_recorded`)).json();
  assert.ok(requests.length > 0, "nothing reached Vertex");
  if (count !== undefined) assert.equal(requests.length, count, "requests that reached Vertex");
  for (const request of requests) {
    assert.equal(request.body.model, model);
    assert.equal(request.headers.authorization, `Bearer ${TOKEN}`);
    assert.ok(!JSON.stringify(request.headers).includes(KEY), "the client key reached Vertex");
    assert.equal(request.headers["x-api-key"], undefined);
    if (stream !== undefined) assert.equal(Boolean(request.body.stream), stream);
  }
  return requests;
}

async function step(name, check) {
  await reset();
  try {
    await check();
    console.log(`ok   node openai: ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL node openai: ${name}: ${error?.message ?? error}`);
  }
}

const client = new OpenAI({ baseURL, apiKey: KEY, maxRetries: 0 });
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

await step("models.list shows the aliases with vertex_id", async () => {
  const models = [];
  for await (const model of client.models.list()) models.push(model);
  assert.deepEqual(models.map((m) => m.id).sort(), ["claude-sonnet", "embed", "flaky", "flash", "gemini-3.1-pro-preview", "gemini-3.5-flash-lite", "gemini-3.8-flash", "gemma", "pro-preview", "ratelimited", "stream429"]);
  assert.equal(models.find((m) => m.id === "flash").vertex_id, "google/gemini-2.5-flash");
});

await step("models.retrieve", async () => {
  const model = await client.models.retrieve("flash");
  assert.equal(model.vertex_id, "google/gemini-2.5-flash");
});

await step("chat.completions.create", async () => {
  const reply = await client.chat.completions.create({
    model: "flash",
    messages: [{ role: "user", content: "hi from node" }],
  });
  assert.equal(reply.choices[0].message.content, "You said: hi from node");
  await vertexSaw({ count: 1, stream: false });
});

await step("streaming, with the usage chunk", async () => {
  const stream = await client.chat.completions.create({
    model: "flash",
    messages: [{ role: "user", content: "a b c d" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const texts = [];
  let usage = null;
  for await (const chunk of stream) {
    const text = chunk.choices[0]?.delta?.content;
    if (text) texts.push(text);
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(texts.length >= 3, `the text came in ${texts.length} chunks`);
  assert.equal(texts.join(""), "You said: a b c d");
  assert.ok(usage && usage.total_tokens > 0, "no usage chunk");
  await vertexSaw({ count: 1, stream: true });
});

await step("tool-call round trip", async () => {
  const messages = [{ role: "user", content: "Oslo" }];
  const first = await client.chat.completions.create({ model: "flash", messages, tools: [weather] });
  const call = first.choices[0].message.tool_calls[0];
  assert.deepEqual(JSON.parse(call.function.arguments), { city: "Oslo" });
  messages.push(first.choices[0].message, { role: "tool", tool_call_id: call.id, content: "snow" });
  const final = await client.chat.completions.create({ model: "flash", messages, tools: [weather] });
  assert.equal(final.choices[0].message.content, "The tool said: snow");
  await vertexSaw({ count: 2 });
});

await step("embeddings.create", async () => {
  const result = await client.embeddings.create({ model: "flash", input: "vector me" });
  assert.equal(result.data.length, 1);
  assert.equal(result.data[0].embedding.length, 8);
  await vertexSaw({ count: 1 });
});

await step("x-api-key in defaultHeaders wins over the SDK's placeholder Bearer", async () => {
  const keyed = new OpenAI({ baseURL, apiKey: "placeholder", defaultHeaders: { "x-api-key": KEY }, maxRetries: 0 });
  const reply = await keyed.chat.completions.create({ model: "flash", messages: [{ role: "user", content: "x" }] });
  assert.equal(reply.choices[0].message.content, "You said: x");
  await vertexSaw({ count: 1 });
});

await step("a bad key raises AuthenticationError", async () => {
  const bad = new OpenAI({ baseURL, apiKey: "sk_wrong_0000000000000", maxRetries: 0 });
  await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
});

await step("an unknown alias raises BadRequestError", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] }),
    OpenAI.BadRequestError,
  );
  const requests = await (await fetch(`${FAKE_URL}/_recorded`)).json();
  assert.equal(requests.length, 0);
});

await step("an upstream 429 raises a readable RateLimitError after the SDK's retries", async () => {
  const retrying = new OpenAI({ baseURL: `${NO_RETRY_URL}/v1`, apiKey: KEY, maxRetries: 2 });
  await assert.rejects(
    retrying.chat.completions.create({ model: "ratelimited", messages: [{ role: "user", content: "x" }] }),
    (error) => {
      assert.ok(error instanceof OpenAI.RateLimitError, String(error));
      assert.equal(error.status, 429);
      assert.equal(error.code, "RESOURCE_EXHAUSTED");
      assert.match(error.message, /^429 RESOURCE_EXHAUSTED: the fake says so/);
      return true;
    },
  );
  await vertexSaw({ model: "google/always-429", count: 3 });
});

await step("the SDK's retry gets through a 503", async () => {
  const retrying = new OpenAI({ baseURL: `${NO_RETRY_URL}/v1`, apiKey: KEY, maxRetries: 2 });
  const reply = await retrying.chat.completions.create({
    model: "flaky",
    messages: [{ role: "user", content: "again" }],
  });
  assert.equal(reply.choices[0].message.content, "You said: again");
  await vertexSaw({ model: "google/flaky-503", count: 2 });
});

process.exit(failed ? 1 : 0);
