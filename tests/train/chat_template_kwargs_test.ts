/**
 * `deno task train --chat-template-kwargs`: a JSON object (the flag's text, or a config file's object),
 * anything else refused; the run's prompts and responses are rendered with it; it is stored in the run's
 * config.json and is part of its identity (a resume with another value is refused).
 */
import assert from "node:assert/strict";
import {
  OptionsError,
  parseConfigObject,
  parseTrainOptions,
  resolveTrainOptions,
  trainHelp,
} from "../../lib/train/options.ts";
import type { TrainOptions } from "../../lib/train/option_specs.ts";
import { loadRunInputs } from "../../lib/train/run_inputs.ts";
import { train, type TrainConfig } from "../../lib/train/trainer.ts";
import { tinyVocab } from "../fixtures/tokenizer.ts";
import { writeThinkingTemplate } from "../fixtures/thinking_template.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

const OFF = { enable_thinking: false };
const vocab = tinyVocab();
const ids = (s: string) => s.split(" ").map((t) => vocab.indexOf(t));

Deno.test("train --chat-template-kwargs: a JSON object from the flag or a config file; anything else refused", () => {
  const base = ["--model", "m", "--data", "d.jsonl"];
  const opts = parseTrainOptions([
    ...base,
    "--chat-template-kwargs",
    '{"enable_thinking": false}',
  ]) as TrainOptions;
  assert.deepEqual(opts.chatTemplateKwargs, OFF);
  assert.equal((parseTrainOptions(base) as TrainOptions).chatTemplateKwargs, undefined);
  for (const key of ["chatTemplateKwargs", "chat-template-kwargs"]) {
    const layer = parseConfigObject({ model: "m", data: "d", [key]: OFF }, "c.json");
    assert.deepEqual(resolveTrainOptions(layer).chatTemplateKwargs, OFF);
  }
  for (const bad of ["[1]", "true", "{nope", '{"add_generation_prompt": true}']) {
    assert.throws(
      () => parseTrainOptions([...base, "--chat-template-kwargs", bad]),
      (e: Error) =>
        e instanceof OptionsError &&
        /--chat-template-kwargs (must be a JSON object|may not set)/.test(e.message),
      bad,
    );
  }
  assert.throws(
    () => parseConfigObject({ chatTemplateKwargs: "x" }, "c.json"),
    /--chat-template-kwargs must be a JSON object.*\(in c\.json\)/,
  );
  assert.match(trainHelp(), /--chat-template-kwargs <json>/);
});

Deno.test("train: prompts and responses are rendered with the kwargs, which are stored and part of the run's identity", async () => {
  const s = await tinySetup();
  try {
    await writeThinkingTemplate(s.model);
    const log = () => {};
    const cfg = (over: Partial<TrainConfig> = {}) =>
      tinyConfigFor(s, { loss: "dpo", data: `${s.dir}/pref.jsonl`, ...over });
    // thinking on: the template's "answer :" starts each response; off: it ends each prompt
    const on = await loadRunInputs(cfg(), log);
    const off = await loadRunInputs(cfg({ chatTemplateKwargs: OFF }), log);
    for (const [i, ex] of on.train.entries()) {
      assert.deepEqual(ex.promptIds.slice(-1), ids("<|assistant|>"));
      for (const r of ex.responseIds) assert.deepEqual(r.slice(0, 2), ids("answer :"));
      const other = off.train[i];
      assert.deepEqual(other.promptIds.slice(-3), ids("<|assistant|> answer :"));
      assert.deepEqual(other.responseIds, ex.responseIds.map((r) => r.slice(2)));
    }

    const run = `${s.dir}/run`;
    const cut = await train(cfg({ out: run, chatTemplateKwargs: OFF, maxSteps: 2, stepsPerRun: 1 }), {
      log,
      stopAfterSteps: 1,
    });
    assert.equal(cut.interrupted, true);
    const saved = JSON.parse(await Deno.readTextFile(`${run}/config.json`));
    assert.deepEqual(saved.chatTemplateKwargs, OFF);
    const resume = (...flags: string[]) =>
      parseTrainOptions(["--resume", run, ...flags]) as TrainOptions as TrainConfig;
    await assert.rejects(
      () => train(resume("--chat-template-kwargs", '{"enable_thinking": true}'), { log }),
      /these differ: --chat-template-kwargs \{"enable_thinking":true\} \(the run has \{"enable_thinking":false\}\)/,
    );
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
