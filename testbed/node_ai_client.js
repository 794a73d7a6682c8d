// Node clients for the end-to-end tests: the built-in fetch (undici), and the openai npm package when
// testbed/node/node_modules has it (scripts/setup.sh installs it). Both run on the OpenSSL inside the
// node binary. Usage: node node_ai_client.js KEY QUESTION. Prints {"pid", "calls": [...]} as JSON.
const path = require("path");
const [key, ask] = process.argv.slice(2);
const url = "https://api.openai.com/v1/chat/completions";

async function viaFetch() {
  const marker = "[node-fetch]";
  const res = await fetch(url, {
    method: "POST",
    headers: {"authorization": `Bearer ${key}`, "content-type": "application/json"},
    body: JSON.stringify({model: "gpt-4o-mini", messages: [{role: "user", content: `${marker} ${ask}`}]}),
  });
  const body = await res.json();
  return {marker, client: "node-fetch", streaming: false, status: res.status,
          text: body.choices[0].message.content,
          usage: [body.usage.prompt_tokens, body.usage.completion_tokens]};
}

async function viaSdk() {
  let OpenAI;
  try {
    OpenAI = require(path.join(__dirname, "node", "node_modules", "openai"));
  } catch (e) {
    return null; // not installed: the suite says so rather than failing
  }
  const client = new OpenAI({apiKey: key, maxRetries: 0});
  const marker = "[node-openai-stream]";
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini", stream: true, stream_options: {include_usage: true},
    messages: [{role: "user", content: `${marker} ${ask}`}],
  });
  let text = "";
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length && chunk.choices[0].delta.content) text += chunk.choices[0].delta.content;
    if (chunk.usage) usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens];
  }
  return {marker, client: "node-openai", streaming: true, status: 200, text, usage};
}

(async () => {
  const calls = [await viaFetch()];
  const sdk = await viaSdk();
  if (sdk) calls.push(sdk);
  console.log(JSON.stringify({pid: process.pid, calls}));
})().catch((e) => { console.error(e); process.exit(1); });
