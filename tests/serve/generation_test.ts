/**
 * One request's generation over a scripted engine (no model): EOS ends a choice with "stop" and no text,
 * stop strings cut the text (across tokens) and end the row in the worker, streamed deltas never show text
 * that a stop string later cuts, "length", n rows with their own seeds, abort, ignore_eos.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TextCodec } from "../../lib/data/codec.ts";
import type {
  Engine,
  GenerationHandle,
  GenerationListener,
  GenerationParams,
} from "../../lib/serve/engine.ts";
import { type ChoiceEvent, type GenerationRequest, runGeneration } from "../../lib/serve/generation.ts";
import type { RowFinish } from "../../lib/serve/protocol.ts";
import { tinyVocab, writeTinyTokenizer } from "../fixtures/tokenizer.ts";

const VOCAB = tinyVocab();
const id = (t: string) => {
  const i = VOCAB.indexOf(t);
  if (i < 0) throw new Error(`no token ${t}`);
  return i;
};
const EOS = 1;

/** Plays each row's tokens, one per macrotask, honouring stop-row and abort like the worker. */
class ScriptedEngine implements Engine {
  params: GenerationParams[] = [];
  stops: number[] = [];
  constructor(private readonly rows: { tokens: number[]; end: RowFinish }[]) {}

  generate(params: GenerationParams, listener: GenerationListener): GenerationHandle {
    this.params.push(params);
    const stopped = new Set<number>();
    let aborted = false;
    const tick = () => new Promise((r) => setTimeout(r, 1));
    const done = (async () => {
      await Promise.all(params.prompts.map(async (_, row) => {
        const script = this.rows[row % this.rows.length];
        let end: RowFinish = script.end;
        for (const token of script.tokens) {
          await tick();
          if (aborted) {
            end = "abort";
            break;
          }
          if (stopped.has(row)) {
            end = "stop";
            break;
          }
          listener.onToken({ type: "token", id: 1, row, token, logprob: -1, top: [[token, -1], [2, -3]] });
        }
        listener.onRowDone({ type: "row-done", id: 1, row, finishReason: end });
      }));
    })();
    return {
      stopRow: (row) => {
        this.stops.push(row);
        stopped.add(row);
      },
      abort: () => (aborted = true),
      done,
    };
  }
  activeJobs() {
    return 0;
  }
  failure() {
    return null;
  }
  score(): never {
    throw new Error("not used");
  }
  close() {
    return Promise.resolve();
  }
}

function request(over: Partial<GenerationRequest> = {}): GenerationRequest {
  return {
    prompts: [[id("hi")]],
    promptTokens: 1,
    maxTokens: 16,
    temperature: 0,
    topP: 1,
    stop: [],
    logprobs: true,
    topLogprobs: 2,
    ignoreEos: false,
    continuation: false,
    ...over,
  };
}

Deno.test("generation over a scripted engine", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "serve_generation_" });
  await writeTinyTokenizer(join(dir, "tok"), { chatTemplate: true });
  const codec = await TextCodec.load(join(dir, "tok"));
  const words = (s: string) => s.split(" ").map(id);

  await t.step("EOS ends a choice with finish 'stop'; it has no text and no logprobs entry", async () => {
    const engine = new ScriptedEngine([{ tokens: [...words("the answer"), EOS], end: "eos" }]);
    const r = await runGeneration(engine, codec, request());
    assert.equal(r.choices[0].text, "the answer");
    assert.equal(r.choices[0].finishReason, "stop");
    assert.deepEqual(r.choices[0].tokens, [...words("the answer"), EOS]);
    assert.deepEqual(r.choices[0].logprobs.map((e) => e.token), ["the", " answer"]);
    assert.deepEqual(r.choices[0].logprobs[1].top.map((x) => x.id), [id("answer"), 2]);
    assert.deepEqual(r.usage, { prompt_tokens: 1, completion_tokens: 3, total_tokens: 4 });
    assert.deepEqual(engine.params[0].eosTokenIds, [EOS]);
  });

  await t.step("a stop string cuts the text, ends the row in the engine and is never streamed", async () => {
    const engine = new ScriptedEngine([{ tokens: words("the answer is four yes no"), end: "length" }]);
    const events: ChoiceEvent[] = [];
    const r = await runGeneration(
      engine,
      codec,
      request({ stop: ["answer is"], onEvent: (e) => events.push(e) }),
    );
    assert.equal(r.choices[0].text, "the ");
    assert.equal(r.choices[0].finishReason, "stop");
    assert.deepEqual(engine.stops, [0]);
    assert.deepEqual(r.choices[0].tokens, words("the answer is"), "tokens after the stop are dropped");
    const streamed = events.map((e) => e.kind === "delta" ? e.text : "").join("");
    assert.equal(streamed, "the ");
    assert.deepEqual(events.at(-1), { kind: "finish", index: 0, reason: "stop" });
    assert.ok(!events.some((e) => e.kind === "delta" && e.text.includes("answer")));
  });

  await t.step("length, and streamed deltas add up to the final text", async () => {
    const engine = new ScriptedEngine([{ tokens: words("the cat is a dog"), end: "length" }]);
    let streamed = "";
    const r = await runGeneration(
      engine,
      codec,
      request({ stop: ["zzz"], onEvent: (e) => e.kind === "delta" && (streamed += e.text) }),
    );
    assert.equal(r.choices[0].finishReason, "length");
    assert.equal(r.choices[0].text, "the cat is a dog");
    assert.equal(streamed, r.choices[0].text);
  });

  await t.step("n rows: one seed each, prompt tokens counted once, EOS ignored on request", async () => {
    const engine = new ScriptedEngine([
      { tokens: words("yes"), end: "length" },
      { tokens: words("no no"), end: "length" },
    ]);
    const r = await runGeneration(
      engine,
      codec,
      request({ prompts: [[5, 6], [5, 6]], promptTokens: 2, seed: 41, ignoreEos: true }),
    );
    assert.deepEqual(engine.params[0].seeds, [41, 42]);
    assert.deepEqual(engine.params[0].eosTokenIds, []);
    assert.deepEqual(r.choices.map((c) => c.text), ["yes", "no no"]);
    assert.deepEqual(r.usage, { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });
  });

  await t.step("abort ends every row", async () => {
    const engine = new ScriptedEngine([{
      tokens: words("one two three four five one two three"),
      end: "length",
    }]);
    const abort = new AbortController();
    let seen = 0;
    const r = await runGeneration(
      engine,
      codec,
      request({ signal: abort.signal, onEvent: () => ++seen === 2 && abort.abort() }),
    );
    assert.equal(r.aborted, true);
    assert.equal(r.choices[0].finishReason, "abort");
    assert.ok(r.choices[0].tokens.length < 8);
  });

  await Deno.remove(dir, { recursive: true });
});
