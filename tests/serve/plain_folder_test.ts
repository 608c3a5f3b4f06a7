/**
 * `deno task serve --model <plain Hugging Face folder>`: config.json, safetensors and a tokenizer, never
 * exported nor trained here. The decoder is built at load over the folder's own weights (as `sample` and
 * `eval` do, lib/model/open.ts) and the server answers a chat completion with it — the same tokens the
 * library's generator draws greedily — then exits 0 on SIGTERM, leaving no graph folder behind.
 */
import assert from "node:assert/strict";
import { generate } from "../../lib/model/generate.ts";
import { openGenerator } from "../../lib/model/open.ts";
import { tokenizePrompt } from "../../lib/data/tokenize.ts";
import { loopSetup } from "../loop/_fixtures.ts";
import { startServeProcess } from "./_process.ts";

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
  const served = await startServeProcess(
    ["task", "serve", "--model", s.model, "--port", "0", "--threads", "1"],
    90_000,
  ).catch(async (e) => {
    await Deno.remove(s.dir, { recursive: true });
    throw e;
  });
  const { child, port } = served;
  try {
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
    await served.pumped;
    assert.equal(status.code, 0, served.output());
    const left = [...Deno.readDirSync(s.model)].filter((e) => e.name.startsWith(".nca-graphs-"));
    assert.deepEqual(left, [], "no graph folder left in the model folder");
    await Deno.remove(s.dir, { recursive: true });
  }
});
