// The Google Gen AI SDK for JavaScript (@google/genai) against vertex-proxy, in Gemini API
// mode with httpOptions.baseUrl as /docs gives it; run by run.py, which passes PROXY_URL,
// FAKE_URL, KEY, TOKEN and PROJECT. Prints "ok   node google-genai: STEP" or
// "FAIL node google-genai: STEP: what went wrong".
import assert from "node:assert/strict";
import { GoogleGenAI } from "@google/genai";

const { PROXY_URL, FAKE_URL, KEY, TOKEN, PROJECT } = process.env;
let failed = 0;

// What the SDK sent: it calls the global fetch, which this wraps; the suite's own calls to the
// fake go to the real one.
const realFetch = globalThis.fetch;
const sent = [];
globalThis.fetch = async (input, init = {}) => {
  sent.push({ url: new URL(String(input.url ?? input)), headers: new Headers(init.headers), body: init.body });
  return realFetch(input, init);
};

async function reset() {
  sent.length = 0;
  await realFetch(`${FAKE_URL}/_reset`, { method: "POST" });
}

/** What reached the fake Vertex: the native method for `model`, the Google token, no key, and
 * each body as the SDK sent it, to the byte count. */
async function vertexSaw(model, method, { count, sse = false } = {}) {
  const requests = await (await realFetch(`${FAKE_URL}/_recorded`)).json();
  assert.equal(requests.length, count, "requests that reached Vertex");
  assert.equal(sent.length, count, "requests the SDK sent");
  requests.forEach((request, i) => {
    const path = `/v1/projects/${PROJECT}/locations/global/publishers/google/models/${model}:${method}`;
    assert.equal(request.path, path + (sse ? "?alt=sse" : ""));
    assert.equal(request.headers.authorization, `Bearer ${TOKEN}`);
    assert.ok(!JSON.stringify(request.headers).includes(KEY), "the client key reached Vertex");
    assert.equal(request.headers["x-goog-api-key"], undefined);
    assert.equal(sent[i].headers.get("x-goog-api-key"), KEY);
    assert.deepEqual(request.body, JSON.parse(sent[i].body));
    assert.equal(Number(request.headers["content-length"]), Buffer.byteLength(sent[i].body));
  });
  return requests;
}

async function step(name, check) {
  await reset();
  try {
    await check();
    console.log(`ok   node google-genai: ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL node google-genai: ${name}: ${error?.message ?? error}`);
  }
}

const ai = new GoogleGenAI({ apiKey: KEY, httpOptions: { baseUrl: PROXY_URL } });

await step("models.generateContent", async () => {
  const reply = await ai.models.generateContent({ model: "flash", contents: "hi from node" });
  assert.equal(reply.text, "You said: hi from node");
  assert.ok(reply.usageMetadata.totalTokenCount > 0, "no usage");
  assert.equal(sent[0].url.pathname, "/v1/models/flash:generateContent");
  await vertexSaw("gemini-2.5-flash", "generateContent", { count: 1 });
});

await step("models.generateContentStream: SSE, with the usage", async () => {
  const texts = [];
  let usage = null;
  for await (const chunk of await ai.models.generateContentStream({ model: "flash", contents: "a b c d" })) {
    if (chunk.text) texts.push(chunk.text);
    if (chunk.usageMetadata) usage = chunk.usageMetadata;
  }
  assert.equal(texts.join(""), "You said: a b c d");
  assert.ok(usage && usage.totalTokenCount > 0, "no usage");
  assert.equal(`${sent[0].url.pathname}${sent[0].url.search}`, "/v1/models/flash:streamGenerateContent?alt=sse");
  await vertexSaw("gemini-2.5-flash", "streamGenerateContent", { count: 1, sse: true });
});

await step("a function call on Gemini 3 and its answer: the signature goes back as it came", async () => {
  const tools = [{
    functionDeclarations: [{
      name: "get_weather",
      description: "The weather in a city",
      parametersJsonSchema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    }],
  }];
  // Lisbon's signature has a "+": this SDK keeps base64 as it came.
  const contents = [{ role: "user", parts: [{ text: "Lisbon" }] }];
  const model = "gemini-3.1-pro-preview";
  const first = await ai.models.generateContent({ model, contents, config: { tools } });
  assert.deepEqual(first.functionCalls, [{ name: "get_weather", args: { city: "Lisbon" } }]);
  const signature = first.candidates[0].content.parts[0].thoughtSignature;
  assert.ok(signature.includes("+"), signature);
  contents.push(first.candidates[0].content, {
    role: "user",
    parts: [{ functionResponse: { name: "get_weather", response: { result: "sunny" } } }],
  });
  const final = await ai.models.generateContent({ model, contents, config: { tools } });
  assert.equal(final.text, 'The tool said: {"result":"sunny"}');
  const [, second] = await vertexSaw(model, "generateContent", { count: 2 });
  assert.equal(second.body.contents[1].parts[0].thoughtSignature, signature);
});

process.exit(failed ? 1 : 0);
