/**
 * Every model family through the whole trainer on tiny folders: load, reference log-probs, NCA steps
 * (LoRA with its PEFT module names, full fine-tuning, with and without recomputation), export, and
 * generation from the exported policy. The math of each family is checked in
 * tests/model/decoder_reference_test.ts; this proves the pipeline around it takes every family.
 */
import assert from "node:assert/strict";
import { type ModelConfig, parseConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveModelFolder } from "../../lib/model/model_folder.ts";
import { generate } from "../../lib/model/generate.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

const V = 128;
const CASES: [
  string,
  ModelConfig,
  { full?: boolean; gradientCheckpointing?: boolean; targets?: string[] },
][] = [
  [
    "qwen3 (q/k norms), LoRA on q_proj/v_proj",
    tinyConfig("llama", { modelType: "qwen3", vocabSize: V, tieWordEmbeddings: true }),
    { targets: ["q_proj", "v_proj"] },
  ],
  [
    "gemma2 (soft caps, sliding layers), LoRA, recomputation",
    tinyConfig("gemma", {
      vocabSize: V,
      attnLogitSoftcap: 20,
      finalLogitSoftcap: 10,
      slidingWindow: 8,
      slidingLayers: [true, false],
    }),
    { gradientCheckpointing: true },
  ],
  [
    "gemma3_text, full fine-tuning",
    tinyConfig("gemma", {
      vocabSize: V,
      modelType: "gemma3_text",
      slidingWindow: 8,
      slidingLayers: [true, false],
    }),
    { full: true },
  ],
  [
    "phi3 (fused projections, partial rotary, longrope), LoRA on qkv_proj/gate_up_proj",
    tinyConfig("phi3", {
      vocabSize: V,
      rotaryDim: 4,
      maxPositions: 256,
      ropeScaling: {
        type: "longrope",
        short_factor: [1, 1.2],
        long_factor: [2, 3],
        original_max_position_embeddings: 64,
      },
    }),
    { targets: ["qkv_proj", "gate_up_proj"] },
  ],
  [
    "mistral (sliding window), full fine-tuning with recomputation",
    tinyConfig("llama", { modelType: "mistral", vocabSize: V, slidingWindow: 6 }),
    { full: true, gradientCheckpointing: true },
  ],
];

for (const [name, cfg, o] of CASES) {
  Deno.test(`families: ${name} trains, exports and generates`, async () => {
    const s = await tinySetup();
    await Deno.remove(s.model, { recursive: true });
    await saveModelFolder(s.model, cfg, initWeights(cfg, { seed: 1, normStd: 0.1 }), {
      tokenizerFrom: `${s.dir}/tok`,
    });
    const lines: string[] = [];
    const res = await train(
      tinyConfigFor(s, {
        maxLength: 200, // past every case's exact length: cut, with a word
        epochs: 1,
        full: o.full ?? false,
        gradientCheckpointing: o.gradientCheckpointing,
        loraTargets: o.targets,
        lr: o.full ? 1e-3 : 1e-2,
      }),
      { log: (l) => lines.push(l) },
    );
    assert.equal(res.steps, res.totalSteps);
    const exact = cfg.family === "phi3" ? 64 : cfg.maxPositions;
    assert.ok(
      lines.some((l) =>
        l.includes(`--max-length 200 is more than the model handles exactly: sequences are cut at ${exact}`)
      ),
      lines.join("\n"),
    );
    const records = await readMetrics(res.run.metrics);
    // at step 1 the policy is the reference: NCA's loss is 2·log 2 whatever the labels
    assert.ok(Math.abs(records[0].loss! - 2 * Math.log(2)) < 1e-5, `initial loss ${records[0].loss}`);
    assert.ok(records.every((r) => r.loss === undefined || Number.isFinite(r.loss)));
    const losses = records.filter((r) => r.loss !== undefined).map((r) => r.loss!);
    assert.ok(losses.some((l) => Math.abs(l - losses[0]) > 1e-6), "the parameters moved");
    const exported = parseConfig(JSON.parse(await Deno.readTextFile(`${res.run.policy}/config.json`)));
    assert.deepEqual({ ...exported, torchDtype: null }, { ...cfg, torchDtype: null });
    if (!o.full) {
      const adapter = JSON.parse(await Deno.readTextFile(`${res.run.dir}/adapter/adapter_config.json`));
      if (o.targets) assert.deepEqual([...adapter.target_modules].sort(), [...o.targets].sort());
    }
    const session = await ModelSession.create(`${res.run.policy}/onnx/model.onnx`);
    const out = await generate(session, [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]], {
      maxNewTokens: 4,
      temperature: 0,
    });
    assert.equal(out.rows[0].tokens.length, 4);
    await session.release();
    await Deno.remove(s.dir, { recursive: true });
  });
}
