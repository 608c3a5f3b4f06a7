/**
 * `deno task serve --model <plain Hugging Face folder>`: config.json, safetensors and a tokenizer, never
 * exported nor trained here. The decoder is built at load over the folder's own weights (as `sample` and
 * `eval` do, lib/model/open.ts) and the server answers a chat completion with it — the same tokens the
 * library's generator draws greedily — then exits 0 on SIGTERM, leaving no graph folder behind.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { generate } from "../../lib/model/generate.ts";
import { openGenerator } from "../../lib/model/open.ts";
import { tokenizePrompt } from "../../lib/data/tokenize.ts";
import { loopSetup } from "../loop/_fixtures.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

Deno.test("deno task serve --model <plain HF folder> answers a chat completion", async () => {
  const s = await loopSetup();
  const messages = [{ role: "user", content: "sort 3 1 2" }];
  // what the folder's model says greedily, through the library
  const expected = await (async () => {
    await using g = await openGenerator(s.model, {
      device: "cpu",
      threads: 1,
      log: () => {},
      withTokenizer: true,
    });
    const ids = tokenizePrompt(g.tokenizer, messages);
    const { rows } = await generate(g.session, [ids], {
      maxNewTokens: 6,
      temperature: 0,
      eosTokenIds: g.eosIds,
      padTokenId: g.padId,
    });
    const body = rows[0].stopReason === "eos" ? rows[0].tokens.slice(0, -1) : rows[0].tokens;
    assert.ok(body.length > 0, "the model says something");
    return g.codec.decode(body);
  })();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "serve", "--model", s.model, "--port", "0", "--threads", "1"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let out = "";
  const text = new TextDecoder();
  const pump = async (r: ReadableStream<Uint8Array>) => {
    for await (const chunk of r) out += text.decode(chunk, { stream: true });
  };
  const pumped = Promise.all([pump(child.stdout), pump(child.stderr)]);
  try {
    const deadline = Date.now() + 90_000;
    let port = 0;
    while (!port) {
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) port = Number(m[1]);
      else if (Date.now() > deadline) assert.fail(`the server did not start:\n${out}`);
      else await new Promise((r) => setTimeout(r, 50));
    }
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "model", messages, max_tokens: 6, temperature: 0 }),
    });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.object, "chat.completion");
    assert.equal(body.choices[0].message.role, "assistant");
    assert.equal(body.choices[0].message.content, expected);
    assert.ok(["stop", "length"].includes(body.choices[0].finish_reason));
    const models = await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json();
    assert.equal(models.data[0].id, "model", "the folder's name");
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    await pumped;
    assert.equal(status.code, 0, out);
    const left = [...Deno.readDirSync(s.model)].filter((e) => e.name.startsWith(".nca-graphs-"));
    assert.deepEqual(left, [], "no graph folder left in the model folder");
    await Deno.remove(s.dir, { recursive: true });
  }
});
