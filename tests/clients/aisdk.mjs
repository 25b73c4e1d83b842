// The Vercel AI SDK's OpenAI provider (`@ai-sdk/openai`), whose default model class speaks the
// Responses API, against vertex-proxy; run by run.py, which passes PROXY_URL, FAKE_URL, KEY and
// TOKEN. Set up as README and /docs say: createOpenAI({ baseURL, apiKey }), openai(alias), and
// providerOptions.openai.store = false. Prints "ok   ai sdk: STEP" or "FAIL ai sdk: STEP: why".
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const { PROXY_URL, FAKE_URL, KEY, TOKEN } = process.env;
let failed = 0;

async function vertexSaw({ model = "google/gemini-2.5-flash", count, stream }) {
  const requests = await (await fetch(`${FAKE_URL}/_recorded`)).json();
  assert.equal(requests.length, count, "requests that reached Vertex");
  for (const request of requests) {
    assert.ok(request.path.endsWith("/endpoints/openapi/chat/completions"), request.path);
    assert.equal(request.body.model, model);
    assert.equal(request.headers.authorization, `Bearer ${TOKEN}`);
    assert.ok(!JSON.stringify(request.headers).includes(KEY), "the client key reached Vertex");
    assert.equal(Boolean(request.body.stream), stream);
  }
  return requests;
}

// The signature the fake issues with a Gemini 3 tool call (`demo::gemini3::signature_for`).
function signatureFor(id) {
  return createHash("sha256").update(`stand-in thought for ${id}`).digest().subarray(0, 24).toString("base64");
}

// The second of a tool loop's two requests, as Vertex got it: the first one's messages, then the
// call Vertex made (its own id; on Gemini 3, with the signature it issued) and the tool's result.
function assertRoundTrip([first, second], { city, gemini3 = false }) {
  assert.deepEqual(first.body.messages, [{ role: "user", content: city }]);
  assert.deepEqual(first.body.tools.map((t) => t.function.name), ["get_weather"]);
  assert.deepEqual(second.body.messages.slice(0, 1), first.body.messages);
  const [, assistant, result] = second.body.messages;
  assert.equal(assistant.role, "assistant");
  const [call] = assistant.tool_calls;
  assert.deepEqual(call.function, { name: "get_weather", arguments: JSON.stringify({ city }) });
  assert.ok(!call.id.includes("__thought__"), call.id);
  if (gemini3) assert.deepEqual(call.extra_content, { google: { thought_signature: signatureFor(call.id) } });
  else assert.equal(call.extra_content, undefined);
  assert.equal(result.role, "tool");
  assert.equal(result.tool_call_id, call.id);
  assert.equal(result.content, `sunny in ${city}`);
}

async function step(name, check) {
  await fetch(`${FAKE_URL}/_reset`, { method: "POST" });
  try {
    await check();
    console.log(`ok   ai sdk: ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ai sdk: ${name}: ${error?.message ?? error}`);
  }
}

const openai = createOpenAI({ baseURL: `${PROXY_URL}/v1`, apiKey: KEY });
const providerOptions = { openai: { store: false } };
const seen = [];
const tools = {
  get_weather: tool({
    description: "The weather in a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      seen.push(city);
      return `sunny in ${city}`;
    },
  }),
};

await step("generateText with a tool on flash: the tool's result reaches the text", async () => {
  seen.length = 0;
  const result = await generateText({
    model: openai("flash"), prompt: "Lisbon", tools, stopWhen: stepCountIs(3), providerOptions, maxRetries: 0,
  });
  assert.deepEqual(seen, ["Lisbon"]);
  assert.equal(result.text, "The tool said: sunny in Lisbon");
  assert.equal(result.steps.length, 2);
  assert.equal(result.steps[0].toolCalls[0].toolName, "get_weather");
  assert.ok(result.totalUsage.totalTokens > 0, JSON.stringify(result.totalUsage));
  assertRoundTrip(await vertexSaw({ count: 2, stream: false }), { city: "Lisbon" });
});

await step("streamText with a tool on Gemini 3 (pro-preview): text deltas, the signature restored", async () => {
  seen.length = 0;
  const result = streamText({
    model: openai("pro-preview"), prompt: "Porto", tools, stopWhen: stepCountIs(3), providerOptions, maxRetries: 0,
  });
  const deltas = [];
  for await (const delta of result.textStream) deltas.push(delta);
  assert.deepEqual(seen, ["Porto"]);
  assert.ok(deltas.length >= 3, JSON.stringify(deltas));
  assert.equal(deltas.join(""), "The tool said: sunny in Porto");
  assert.equal((await result.steps).length, 2);
  assert.ok((await result.totalUsage).totalTokens > 0);
  const requests = await vertexSaw({ model: "google/gemini-3.1-pro-preview", count: 2, stream: true });
  for (const request of requests) assert.deepEqual(request.body.stream_options, { include_usage: true });
  assertRoundTrip(requests, { city: "Porto", gemini3: true });
});

await step("a conversation: with store false earlier turns go back whole; without, a 400 that says to set it", async () => {
  const first = await generateText({ model: openai("flash"), prompt: "hello there", providerOptions, maxRetries: 0 });
  assert.equal(first.text, "You said: hello there");
  const messages = [{ role: "user", content: "hello there" }, ...first.response.messages, { role: "user", content: "again" }];
  const second = await generateText({ model: openai("flash"), messages, providerOptions, maxRetries: 0 });
  assert.equal(second.text, "You said: again");
  const [, request] = await vertexSaw({ count: 2, stream: false });
  assert.deepEqual(request.body.messages, [
    { role: "user", content: "hello there" },
    { role: "assistant", content: "You said: hello there" },
    { role: "user", content: "again" },
  ]);
  // The SDK's default, store true: it refers to the earlier answer by id, which nothing kept.
  await assert.rejects(generateText({ model: openai("flash"), messages, maxRetries: 0 }), (error) => {
    assert.equal(error.statusCode, 400);
    assert.match(error.message, /stateless: an `item_reference` cannot be resolved/);
    assert.match(error.message, /set providerOptions\.openai\.store to false/);
    return true;
  });
  await vertexSaw({ count: 2, stream: false });
});

process.exit(failed ? 1 : 0);
