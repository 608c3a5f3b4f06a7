/**
 * The plumbing of bench/parity/ours.ts (PyTorch itself is not on this machine): model folders saved like
 * transformers saves them, a parity.json in parity.py's format whose "torch" numbers are our own CPU
 * results, then the comparison passes with zero differences, and fails when a gradient is perturbed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { compare, computeOurs, main, type ParityReference } from "../../bench/parity/ours.ts";
import { UsageError } from "../../bench/_common.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, saveModelFolder } from "../../lib/model/model_folder.ts";
import { mulberry32 } from "../../lib/data/random.ts";
import { collector } from "./_helpers.ts";

const R = 8, T = 12;

/** A parity.json skeleton: a batch with right (rows 0-3) and left (rows 4-7) padding; zero "torch" values. */
function skeleton(model: string, vocab: number, names: Map<string, number[]>): ParityReference {
  const rand = mulberry32(7);
  const ids: number[][] = [], mask: number[][] = [], labels: number[][] = [];
  for (let r = 0; r < R; r++) {
    const prompt = 2 + (r % 3), n = prompt + 3 + (r % 4), start = r < 4 ? 0 : T - n;
    ids.push(new Array(T).fill(0));
    mask.push(new Array(T).fill(0));
    labels.push(new Array(T).fill(-100));
    for (let t = 0; t < n; t++) {
      const tok = 3 + Math.floor(rand() * (vocab - 4));
      ids[r][start + t] = tok;
      mask[r][start + t] = 1;
      if (t >= prompt) labels[r][start + t] = tok;
    }
  }
  const zeros = (shape: number[]) => ({ shape, data: new Array(shape.reduce((a, b) => a * b, 1)).fill(0) });
  const grads = () => Object.fromEntries([...names].map(([n, s]) => [n, zeros(s)]));
  const noise = (shape: number[]) => ({ shape, data: zeros(shape).data.map(() => -40 + 6 * rand()) });
  return {
    model,
    rows: R,
    width: T,
    input_ids: ids,
    attention_mask: mask,
    labels,
    logits: zeros([R, T, vocab]),
    logps: zeros([R]),
    losses: {
      dpo: { beta: 0.5, k: 2, ref_logps: noise([4, 2]), loss: 0, grads: grads() },
      nca: {
        beta: 0.5,
        k: 4,
        ref_logps: noise([2, 4]),
        soft_labels: { shape: [2, 4], data: [0.1, 0.2, 0.3, 0.4, 0.7, 0.1, 0.1, 0.1] },
        loss: 0,
        grads: grads(),
      },
    },
  };
}

Deno.test("parity/ours: compare() measures against the reference's scale", () => {
  const d = compare([1, 2.5, 0], [1, 2, 1e-9], 0.1);
  assert.deepEqual(d, { max_abs: 0.5, max_rel: 0.25, scale: 2, ok: false });
  assert.equal(compare([1, 2.1], [1, 2], 0.1).ok, true);
  assert.equal(compare([NaN], [1], 0.1).ok, false);
  assert.equal(compare([5, 1], [0, 1], 1e-6, [false, true]).ok, true, "masked out");
});

Deno.test("parity/ours: folders and parity.json in parity.py's layout compare clean; a wrong gradient fails", async () => {
  const dir = await Deno.makeTempDir({ prefix: "parity_" });
  try {
    const models = {
      gpt2: tinyConfig("gpt2", { vocabSize: 40 }),
      llama: tinyConfig("llama", { vocabSize: 40 }),
      qwen2: tinyConfig("llama", { vocabSize: 40, modelType: "qwen2" }),
    };
    const compared = {
      gpt2: ["wte.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_fc.bias", "ln_f.weight"],
      llama: ["model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight", "lm_head.weight"],
      qwen2: ["model.layers.0.self_attn.q_proj.bias", "model.norm.weight"],
    };
    for (const [name, cfg] of Object.entries(models)) {
      const folder = join(dir, name);
      await saveModelFolder(folder, cfg, initWeights(cfg, { seed: 3, std: 0.1, biasStd: 0.1, normStd: 0.1 }));
      const loaded = await loadModelFolder(folder);
      const names = new Map(
        compared[name as keyof typeof compared].map((n) => [n, loaded.stored.get(n)!.shape]),
      );
      const ref = skeleton(name, cfg.vocabSize, names);
      for (const loss of ["dpo", "nca"]) {
        const ours = await computeOurs(loaded, ref, loss, "cpu");
        const spec = ref.losses[loss];
        ref.logits.data = [...ours.logits];
        ref.logps.data = [...ours.logps];
        spec.loss = ours.loss;
        for (const n of names.keys()) spec.grads[n].data = [...ours.grads[n]];
      }
      await Deno.writeTextFile(join(folder, "parity.json"), JSON.stringify(ref));
    }
    await Deno.writeTextFile(
      join(dir, "manifest.json"),
      JSON.stringify({ models: ["gpt2", "llama", "qwen2"] }),
    );

    const c = collector();
    const recs = await main(["--dir", dir], c.print);
    assert.deepEqual(recs.map((r) => `${r.model}/${r.loss}`), [
      "gpt2/dpo",
      "gpt2/nca",
      "llama/dpo",
      "llama/nca",
      "qwen2/dpo",
      "qwen2/nca",
    ]);
    for (const r of recs) {
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal((r.logits as { max_abs: number }).max_abs, 0);
      assert.ok((r.logits as { scale: number }).scale > 0);
      const grads = r.grads as Record<string, { scale: number; max_abs: number }>;
      for (const [n, d] of Object.entries(grads)) {
        assert.ok(d.scale > 0 && d.max_abs === 0, `${r.model} ${n}`);
      }
      assert.ok(Number.isFinite(r.loss_ours) && r.loss_ours === r.loss_torch);
    }
    assert.deepEqual(c.lines.map((l) => JSON.parse(l)), recs);

    // a wrong gradient entry is reported and named
    const file = join(dir, "llama", "parity.json");
    const ref: ParityReference = JSON.parse(await Deno.readTextFile(file));
    const g = ref.losses.nca.grads["lm_head.weight"];
    g.data[5] += 0.5 * Math.max(...g.data.map(Math.abs));
    await Deno.writeTextFile(file, JSON.stringify(ref));
    const bad = await main(["--dir", dir, "--models", "llama"], () => {});
    assert.deepEqual(bad.map((r) => r.ok), [true, false]);
    assert.equal((bad[1].worst as { what: string }).what, "grad lm_head.weight");

    await assert.rejects(main([]), (e) => e instanceof UsageError && /--dir is required/.test(e.message));
    await assert.rejects(main(["--dir", join(dir, "none")]), /manifest\.json.*parity\.py --out/);
    await assert.rejects(
      main(["--dir", dir, "--models", "opt"]),
      (e) => e instanceof UsageError && /"opt"/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
