/** Shared fixtures of the trainer tests: a tiny model folder with a tokenizer, and small datasets. */
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveModelFolder } from "../../lib/model/model_folder.ts";
import { defaultTrainOptions } from "../../lib/train/options.ts";
import type { TrainConfig } from "../../lib/train/trainer.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";

/** A temp folder with `model/` (tiny random llama + tokenizer) and `reward.jsonl` / `pref.jsonl` / `sft.jsonl`. */
export async function tinySetup(family: "llama" | "gpt2" = "llama"): Promise<{ dir: string; model: string }> {
  const dir = await Deno.makeTempDir({ prefix: "trainer-test-" });
  await writeTinyTokenizer(`${dir}/tok`, { chatTemplate: true });
  const cfg = tinyConfig(family as "llama", { vocabSize: 128 });
  await saveModelFolder(`${dir}/model`, cfg, initWeights(cfg, { seed: 1 }), { tokenizerFrom: `${dir}/tok` });
  const words = ["one", "two", "three", "four", "five", "cat", "dog", "red", "blue"];
  const reward: string[] = [], pref: string[] = [], sft: string[] = [];
  for (let i = 0; i < 24; i++) {
    const q = `what is ${words[i % words.length]} plus ${i % 10}`;
    const good = `${(i + 1) % 10} ${words[(i + 2) % words.length]}`;
    reward.push(JSON.stringify({
      prompt: q,
      responses: [
        { content: "no", reward: 1 },
        { content: good, reward: 5 },
        { content: `${i % 7} hello`, reward: 2 },
        { content: "the cat", reward: 0 },
      ],
    }));
    pref.push(JSON.stringify({ prompt: q, chosen: good, rejected: "no" }));
    sft.push(JSON.stringify({ prompt: q, completion: good }));
  }
  await Deno.writeTextFile(`${dir}/reward.jsonl`, reward.join("\n") + "\n");
  await Deno.writeTextFile(`${dir}/pref.jsonl`, pref.join("\n") + "\n");
  await Deno.writeTextFile(`${dir}/sft.jsonl`, sft.join("\n") + "\n");
  return { dir, model: `${dir}/model` };
}

/** A small, fast training configuration over the setup. */
export function tinyConfigFor(
  s: { dir: string; model: string },
  over: Partial<TrainConfig> = {},
): TrainConfig {
  return {
    ...defaultTrainOptions(),
    model: s.model,
    data: `${s.dir}/reward.jsonl`,
    out: `${s.dir}/run`,
    evalFraction: 0.2,
    loss: "nca",
    beta: 0.1,
    alpha: 1,
    lr: 1e-2,
    epochs: 2,
    batchSize: 4,
    maxLength: 48,
    maxPromptLength: 24,
    loraR: 4,
    loraAlpha: 8,
    loraDropout: 0,
    device: "cpu",
    stepsPerRun: 3,
    seed: 3,
    quiet: true,
    ...over,
  };
}
