/**
 * The memory plan of a run: the estimate's arithmetic on a known shape, checkpointing decided by the
 * budget, a run that will not fit refused before any work with the settings to lower, and a run with
 * activation checkpointing training the same weights as one without.
 */
import assert from "node:assert/strict";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import type { StoredTensor } from "../../lib/model/weight_files.ts";
import { estimateMemory, headChunk, planRun } from "../../lib/train/memory.ts";
import { loadLatestCheckpoint } from "../../lib/train/checkpoint.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

const GiB = 2 ** 30;

/** A config whose per-token sizes are easy to add up by hand. */
const cfg = tinyConfig("llama", {
  hiddenSize: 4,
  intermediateSize: 8,
  numHeads: 2,
  numKvHeads: 1,
  vocabSize: 10,
  numLayers: 3,
  tieWordEmbeddings: true,
});

Deno.test("memory: the estimate adds up as documented on a known shape", () => {
  const base = {
    cfg,
    weightBytes: 1000,
    headElementBytes: 4,
    trainableParams: 100,
    rows: 2,
    width: 8,
    computeBytes: 4,
    lora: null,
    chunk: 0,
  };
  const e = estimateMemory({ ...base, checkpointing: false });
  // per token and layer: 4·D + 2·q + 2·kv + 5·ff + 2·heads·seq = 16 + 8 + 4 + 40 + 32 = 100 elements
  const tokens = 16, perToken = 100 * 4;
  assert.equal(e.weights, 1000);
  assert.equal(e.trainable, 100 * 4 * 10);
  assert.equal(e.activations, tokens * perToken * 3);
  assert.equal(e.head, tokens * 10 * 4 * 3);
  assert.equal(e.total, e.weights + e.trainable + e.activations + e.layer + e.head + e.runtime);
  // checkpointing keeps each layer's input (and the embeddings and final rows) and one layer's working set
  const c = estimateMemory({ ...base, checkpointing: true });
  assert.equal(c.activations, tokens * 4 * 4 * (3 + 2));
  assert.equal(c.layer, tokens * perToken * 1.5);
  assert.ok(c.total < e.total);
  // LoRA with dropout keeps the dropped-out inputs too: 4·D + q + ff more, and A·x, B-input per module
  const l = estimateMemory({ ...base, checkpointing: false, lora: { dropout: true, modules: 21, r: 2 } });
  assert.equal(l.activations, tokens * (100 + 7 * 2 * 2 + 16 + 4 + 8) * 4 * 3);
  // a head weight stored narrower than the compute dtype is cast whole while the head runs
  const h = estimateMemory({ ...base, checkpointing: false, headElementBytes: 2 });
  assert.equal(h.head - e.head, 10 * 4 * 4);
});

Deno.test("memory: checkpointing is turned on when the budget needs it, and the LM head goes in blocks", () => {
  const stored = new Map<string, StoredTensor>([[
    "model.embed_tokens.weight",
    { file: "/m.safetensors", dtype: "BF16", shape: [10, 4], begin: 0, end: 80 },
  ]]);
  const inputs = { cfg, stored, rows: 2, width: 8, trainableParams: 100, lora: null, computeBytes: 4 };
  const roomy = planRun({ ...inputs, budget: 64 * GiB });
  assert.equal(roomy.checkpointing, false);
  assert.equal(roomy.segments, "save", "bf16 weights cast for fp32 compute: casts computed again, not kept");
  const needed = planRun({ ...inputs, budget: roomy.without.total - 1 });
  assert.equal(needed.checkpointing, true);
  assert.equal(needed.segments, "recompute");
  assert.ok(needed.estimate.total < needed.without.total);
  // on the CPU it turns on past half the free memory, on a GPU past 90%
  const between = 1.5 * roomy.without.total;
  assert.equal(planRun({ ...inputs, budget: between }).checkpointing, true, "cpu: over half the free memory");
  assert.equal(planRun({ ...inputs, budget: between, device: "cuda" }).checkpointing, false, "cuda: fits");
  assert.equal(planRun({ ...inputs, budget: roomy.without.total, device: "cuda" }).checkpointing, true);
  assert.equal(planRun({ ...inputs, budget: 1, checkpointing: false }).checkpointing, false, "the flag wins");
  assert.equal(planRun({ ...inputs, checkpointing: true }).checkpointing, true);
  assert.equal(planRun(inputs).checkpointing, false, "no budget known: off unless asked");
  // 128 MiB of fp32 logits per block
  assert.equal(headChunk(tinyConfig("llama", { vocabSize: 128256 }), 100_000), 261);
  assert.equal(headChunk(tinyConfig("llama", { vocabSize: 128256 }), 200), 0, "a small batch at once");
});

Deno.test("memory: a run that will not fit is refused before any work, naming the settings to lower", async () => {
  const s = await tinySetup();
  const lines: string[] = [];
  await assert.rejects(
    () =>
      train(tinyConfigFor(s, { out: `${s.dir}/tight`, gradientCheckpointing: false }), {
        log: (l) => lines.push(l),
        memoryBudget: 1e6,
      }),
    (e: Error) => {
      assert.match(e.message, /needs about [\d.]+ GiB but the cpu has 0\.0 GiB free/);
      for (const flag of ["--batch-size (now 4)", "--max-length (now 48", "--gradient-checkpointing"]) {
        assert.ok(e.message.includes(flag), `${flag} in: ${e.message}`);
      }
      return true;
    },
  );
  assert.ok(lines.some((l) => l.startsWith("memory estimate:")), "the estimate is printed first");
  // left to decide, checkpointing is turned on first, and the refusal says so
  await assert.rejects(
    () => train(tinyConfigFor(s, { out: `${s.dir}/tight` }), { log: () => {}, memoryBudget: 1e6 }),
    /free \(with gradient checkpointing\)\. Lower --batch-size/,
  );
  for (const later of ["reference_logps.json", "checkpoints", "policy"]) {
    assert.equal(await Deno.stat(`${s.dir}/tight/${later}`).then(() => true, () => false), false, later);
  }
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("memory: with activation checkpointing a run trains the same weights (LoRA dropout on)", async () => {
  const s = await tinySetup();
  const run = async (name: string, gradientCheckpointing: boolean) => {
    const res = await train(
      tinyConfigFor(s, { out: `${s.dir}/${name}`, loraDropout: 0.1, gradientCheckpointing, epochs: 1 }),
      { log: () => {} },
    );
    assert.equal(res.summary?.gradient_checkpointing, gradientCheckpointing);
    return (await loadLatestCheckpoint(`${s.dir}/${name}/checkpoints`))!.tensors;
  };
  const plain = await run("plain", false), ckpt = await run("ckpt", true);
  for (const [name, x] of Object.entries(plain)) {
    const y = ckpt[name];
    for (let i = 0; i < x.length; i++) {
      assert.ok(
        Math.abs(x[i] - y[i]) <= 1e-6 * Math.max(1, Math.abs(x[i])),
        `${name}[${i}]: ${y[i]} vs ${x[i]}`,
      );
    }
  }
  await Deno.remove(s.dir, { recursive: true });
});
