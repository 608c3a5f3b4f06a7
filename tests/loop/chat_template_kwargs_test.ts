/**
 * `--chat-template-kwargs` in `deno task sample`, `eval` and `score`: a JSON object, anything else refused;
 * sampling renders its prompts with it (as training does, so that what is sampled is what is scored), and
 * the sample file's sidecar records it; a reward model renders its conversations with it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseSampleArgs } from "../../sample/main.ts";
import { parseEvalArgs } from "../../eval/main.ts";
import { parseScoreArgs } from "../../score/main.ts";
import { metaPath, sampleToFile } from "../../lib/loop/sample.ts";
import { promptJobs } from "../../lib/loop/sample_rows.ts";
import { readPrompts } from "../../lib/loop/prompts.ts";
import { UsageError } from "../../lib/cli/mod.ts";
import { loadTokenizer, tokenizeExample } from "../../lib/data/tokenize.ts";
import { rewardModelIds } from "../../lib/loop/scorers/reward_model.ts";
import { tinyVocab, writeTinyTokenizer } from "../fixtures/tokenizer.ts";
import { writeThinkingTemplate } from "../fixtures/thinking_template.ts";
import { loopSetup, writePrompts } from "./_fixtures.ts";

const OFF = '{"enable_thinking": false}';
const vocab = tinyVocab();
const ids = (s: string) => s.split(" ").map((t) => vocab.indexOf(t));

Deno.test("sample, eval and score take --chat-template-kwargs: a JSON object, anything else refused", () => {
  const base = ["--model", "m", "--prompts", "p.jsonl"];
  const sample = parseSampleArgs([...base, "--out", "o.jsonl", "--chat-template-kwargs", OFF]);
  assert.ok("sample" in sample);
  assert.deepEqual(sample.sample.templateKwargs, { enable_thinking: false });
  const none = parseSampleArgs([...base, "--out", "o.jsonl"]);
  assert.ok("sample" in none && !("templateKwargs" in none.sample));
  for (const bad of ["[1]", "false", "{oops", '{"messages": []}']) {
    assert.throws(
      () => parseSampleArgs([...base, "--out", "o.jsonl", "--chat-template-kwargs", bad]),
      // a wrong command line, as eval's and score's (the one usage-error path of lib/cli)
      (e: Error) => e instanceof UsageError && /--chat-template-kwargs/.test(e.message),
      bad,
    );
    assert.throws(
      () =>
        parseEvalArgs([
          ...base,
          "--reference",
          "r",
          "--judge-url",
          "http://x",
          "--chat-template-kwargs",
          bad,
        ]),
      (e: Error) => e instanceof UsageError && /--chat-template-kwargs/.test(e.message),
      bad,
    );
    assert.throws(
      () =>
        parseScoreArgs(["--data", "d", "--out", "o", "--reward-model", "rm", "--chat-template-kwargs", bad]),
      (e: Error) => e instanceof UsageError && /--chat-template-kwargs/.test(e.message),
      bad,
    );
  }

  // eval: the models' templates, whatever the scorer; a reward model's too
  const judged = parseEvalArgs([
    ...base,
    "--reference",
    "r",
    "--judge-url",
    "http://x",
    "--chat-template-kwargs",
    OFF,
  ]);
  assert.deepEqual(judged?.sample.templateKwargs, { enable_thinking: false });
  assert.equal(judged?.scorer.kind, "judge");
  const rm = parseEvalArgs([
    ...base,
    "--reference",
    "r",
    "--reward-model",
    "rm",
    "--chat-template-kwargs",
    OFF,
  ]);
  assert.ok(rm?.scorer.kind === "reward-model");
  assert.deepEqual(rm.scorer.templateKwargs, { enable_thinking: false });

  // score: a reward model's template only
  const scored = parseScoreArgs([
    "--data",
    "d",
    "--out",
    "o",
    "--reward-model",
    "rm",
    "--chat-template-kwargs",
    OFF,
  ]);
  assert.ok(scored?.scorer.kind === "reward-model");
  assert.deepEqual(scored.scorer.templateKwargs, { enable_thinking: false });
  assert.throws(
    () => parseScoreArgs(["--data", "d", "--out", "o", "--reward-fn", "f.ts", "--chat-template-kwargs", OFF]),
    /--chat-template-kwargs applies to --reward-model only/,
  );
});

Deno.test("sample: prompts rendered with the template kwargs, as training renders them; the sidecar records them", async () => {
  const s = await loopSetup();
  try {
    await writeThinkingTemplate(s.model);
    const prompts = await writePrompts(s.dir, 3);
    const tokenizer = await loadTokenizer(s.model);
    const { prompts: rows } = await readPrompts(prompts);
    const settings = { maxNewTokens: 4, maxPromptLength: null };
    const on = promptJobs({ tokenizer, contextLength: 64 }, rows, settings);
    const off = promptJobs({ tokenizer, contextLength: 64 }, rows, {
      ...settings,
      templateKwargs: { enable_thinking: false },
    });
    rows.forEach((row, i) => {
      assert.deepEqual(on[i].ids.slice(-1), ids("<|assistant|>"));
      assert.deepEqual(off[i].ids.slice(-3), ids("<|assistant|> answer :"));
      // the prompt training renders with the same kwargs: what the model is sampled after is what it is scored after
      for (const [jobs, kw] of [[on, undefined], [off, { enable_thinking: false }]] as const) {
        const ex = tokenizeExample(tokenizer, { prompt: row.messages, completion: "four" }, {
          templateKwargs: kw,
        });
        assert.deepEqual(ex.promptIds, jobs[i].ids);
      }
    });

    const out = join(s.dir, "samples.jsonl");
    const sampleOpts = {
      model: s.model,
      prompts,
      out,
      k: 1,
      maxNewTokens: 2,
      device: "cpu" as const,
      threads: 1,
      log: () => {},
    };
    await sampleToFile({ ...sampleOpts, templateKwargs: { enable_thinking: false } });
    const meta = JSON.parse(await Deno.readTextFile(metaPath(out)));
    assert.deepEqual(meta.chat_template_kwargs, { enable_thinking: false });
    // resuming with other kwargs would mix two renderings in one file
    await assert.rejects(
      sampleToFile(sampleOpts),
      /sampled with other settings \(chat_template_kwargs\.enable_thinking: false → none\)/,
    );
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("a reward model renders its conversation with the template kwargs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "rm_kwargs_" });
  try {
    await writeTinyTokenizer(dir, { chatTemplate: true });
    await writeThinkingTemplate(dir);
    const tok = await loadTokenizer(dir);
    // a template whose whole-conversation rendering reads a variable
    tok.chat_template = "{% if greeting is defined %}{{ greeting }}{% endif %}" + tok.chat_template;
    const item = { prompt: [{ role: "user" as const, content: "two plus two" }], response: "four" };
    const plain = rewardModelIds(tok, item, 100);
    const greeted = rewardModelIds(tok, item, 100, { greeting: "hello " });
    assert.deepEqual(greeted.ids, [...ids("hello"), ...plain.ids]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
