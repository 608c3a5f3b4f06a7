/**
 * The reward head (lib/model/reward_head.ts) against a float64 plain-loop reference written from
 * transformers' formula: the decoder's final normalized hidden state at the sequence's last token, times
 * `score.weight`ᵀ. Checked on tiny random Llama, Qwen2 (q/k/v biases) and GPT-2 (`transformer.` names,
 * learned positions) folders written as `save_pretrained` writes a `…ForSequenceClassification`, in left-
 * and right-padded batches (each row's reference is its unpadded sequence), and the folder errors.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type Gpt2ModelConfig,
  type LlamaModelConfig,
  type ModelConfig,
  ropeInverseFrequencies,
} from "../../lib/model/config.ts";
import { buildRewardGraph, loadRewardModelFolder } from "../../lib/model/reward_head.ts";
import { loadModelFolder, saveModelFolder } from "../../lib/model/model_folder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import type { WeightMap } from "../../lib/model/weights.ts";
import type { FloatDType } from "../../lib/model/weights.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { mulberry32 } from "../../lib/data/random.ts";
import { rewardConfig, writeRewardFolder } from "./_reward_fixture.ts";

type Vec = number[];

function lin(W: WeightMap, name: string, x: Vec, conv1d = false, bias = false): Vec {
  const w = W.get(`${name}.weight`)!;
  const [rows, cols] = w.shape;
  const outN = conv1d ? cols : rows, inN = conv1d ? rows : cols;
  const y: number[] = [];
  for (let o = 0; o < outN; o++) {
    let s = bias ? W.get(`${name}.bias`)!.data[o] : 0;
    for (let i = 0; i < inN; i++) s += x[i] * w.data[conv1d ? i * cols + o : o * cols + i];
    y.push(s);
  }
  return y;
}
const rms = (x: Vec, w: Float32Array, eps: number) => {
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(ms + eps)) * w[i]);
};
const lnorm = (x: Vec, w: Float32Array, b: Float32Array, eps: number) => {
  const m = x.reduce((a, v) => a + v, 0) / x.length;
  const v = x.reduce((a, u) => a + (u - m) ** 2, 0) / x.length;
  return x.map((u, i) => ((u - m) / Math.sqrt(v + eps)) * w[i] + b[i]);
};
const addv = (a: Vec, b: Vec) => a.map((x, i) => x + b[i]);
const heads = (x: Vec, n: number): Vec[] =>
  Array.from({ length: n }, (_, h) => x.slice(h * x.length / n, (h + 1) * x.length / n));
const row = (W: WeightMap, name: string, i: number) => {
  const t = W.get(name)!;
  return Array.from(t.data.subarray(i * t.shape[1], (i + 1) * t.shape[1]));
};

/** HF's rotate_half rotary on one head at position `pos`. */
function rope(x: Vec, pos: number, inv: Float64Array): Vec {
  const half = inv.length, out = [...x];
  for (let i = 0; i < half; i++) {
    const c = Math.cos(pos * inv[i]), s = Math.sin(pos * inv[i]);
    out[i] = x[i] * c - x[i + half] * s;
    out[i + half] = x[i + half] * c + x[i] * s;
  }
  return out;
}

/** Causal softmax attention of one unpadded sequence; query head h reads kv head ⌊h / rep⌋. */
function attend(q: Vec[][], k: Vec[][], v: Vec[][], H: number, kvH: number): Vec[] {
  const hd = q[0][0].length, rep = H / kvH;
  return q.map((qt, t) => {
    const out: number[] = [];
    for (let h = 0; h < H; h++) {
      const kv = Math.floor(h / rep);
      const sc = k.slice(0, t + 1).map((kj) =>
        qt[h].reduce((a, x, i) => a + x * kj[kv][i], 0) / Math.sqrt(hd)
      );
      const mx = Math.max(...sc), e = sc.map((s) => Math.exp(s - mx)), z = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < hd; i++) out.push(e.reduce((a, ej, j) => a + (ej / z) * v[j][kv][i], 0));
    }
    return out;
  });
}

/** LlamaModel's last hidden state (after model.norm) of an unpadded sequence. */
function llamaHidden(cfg: LlamaModelConfig, W: WeightMap, ids: number[]): Vec[] {
  const inv = ropeInverseFrequencies(cfg), b = cfg.attentionBias, eps = cfg.rmsNormEps;
  let h = ids.map((id) => row(W, "model.embed_tokens.weight", id));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const a = h.map((x) => rms(x, W.get(`${p}.input_layernorm.weight`)!.data, eps));
    const q = a.map((x, t) =>
      heads(lin(W, `${p}.self_attn.q_proj`, x, false, b.q), cfg.numHeads).map((u) => rope(u, t, inv))
    );
    const k = a.map((x, t) =>
      heads(lin(W, `${p}.self_attn.k_proj`, x, false, b.k), cfg.numKvHeads).map((u) => rope(u, t, inv))
    );
    const v = a.map((x) => heads(lin(W, `${p}.self_attn.v_proj`, x, false, b.v), cfg.numKvHeads));
    const att = attend(q, k, v, cfg.numHeads, cfg.numKvHeads);
    h = h.map((x, t) => addv(x, lin(W, `${p}.self_attn.o_proj`, att[t], false, b.o)));
    h = h.map((x) => {
      const m = rms(x, W.get(`${p}.post_attention_layernorm.weight`)!.data, eps);
      const gate = lin(W, `${p}.mlp.gate_proj`, m), up = lin(W, `${p}.mlp.up_proj`, m);
      return addv(x, lin(W, `${p}.mlp.down_proj`, gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i])));
    });
  }
  return h.map((x) => rms(x, W.get("model.norm.weight")!.data, eps));
}

/** GPT2Model's last hidden state (after ln_f) of an unpadded sequence. */
function gpt2Hidden(cfg: Gpt2ModelConfig, W: WeightMap, ids: number[]): Vec[] {
  const D = cfg.hiddenSize, H = cfg.numHeads, eps = cfg.layerNormEps;
  const ln = (x: Vec, n: string) => lnorm(x, W.get(`${n}.weight`)!.data, W.get(`${n}.bias`)!.data, eps);
  const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  let h = ids.map((id, t) => addv(row(W, "wte.weight", id), row(W, "wpe.weight", t)));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `h.${l}`;
    const qkv = h.map((x) => lin(W, `${p}.attn.c_attn`, ln(x, `${p}.ln_1`), true, true));
    const att = attend(
      qkv.map((u) => heads(u.slice(0, D), H)),
      qkv.map((u) => heads(u.slice(D, 2 * D), H)),
      qkv.map((u) => heads(u.slice(2 * D), H)),
      H,
      H,
    );
    h = h.map((x, t) => addv(x, lin(W, `${p}.attn.c_proj`, att[t], true, true)));
    h = h.map((x) => {
      const f = lin(W, `${p}.mlp.c_fc`, ln(x, `${p}.ln_2`), true, true).map(gelu);
      return addv(x, lin(W, `${p}.mlp.c_proj`, f, true, true));
    });
  }
  return h.map((x) => ln(x, "ln_f"));
}

/** transformers' reward: score(hidden)[last token], score.weight `[1, hidden]`. */
function referenceReward(cfg: ModelConfig, W: WeightMap, ids: number[]): number {
  const hidden = cfg.family === "gpt2"
    ? gpt2Hidden(cfg, W, ids)
    : llamaHidden(cfg as LlamaModelConfig, W, ids);
  return lin(W, "score", hidden[hidden.length - 1])[0];
}

/** Sequences of lengths 3..9, padded to 10 on the right or the left with pad id 0. */
function batch(seed: number, vocab: number, side: "left" | "right") {
  const rand = mulberry32(seed), lengths = [9, 3, 6, 10, 1];
  const W = Math.max(...lengths);
  const seqs = lengths.map((n) => Array.from({ length: n }, () => 3 + Math.floor(rand() * (vocab - 3))));
  const ids = new Int32Array(seqs.length * W), mask = new Int32Array(seqs.length * W);
  seqs.forEach((s, r) => {
    const start = side === "right" ? 0 : W - s.length;
    s.forEach((tok, t) => {
      ids[r * W + start + t] = tok;
      mask[r * W + start + t] = 1;
    });
  });
  return { seqs, ids, mask, dims: [seqs.length, W] };
}

async function rewardsOf(dir: string, dtype: FloatDType, side: "left" | "right") {
  const folder = await loadRewardModelFolder(dir);
  const g = buildRewardGraph(folder.config, storedWeights(folder.stored), { dtype });
  const session = await ModelSession.create(g.build(), { intraOpThreads: 1, describe: (n) => g.describe(n) });
  try {
    const b = batch(11, folder.config.vocabSize, side);
    const out = await session.run({
      input_ids: { dtype: "int32", dims: b.dims, data: b.ids },
      attention_mask: { dtype: "int32", dims: b.dims, data: b.mask },
    }, ["rewards"]);
    return { rewards: Array.from(out.rewards.data as Float64Array), seqs: b.seqs, cfg: folder.config };
  } finally {
    await session.release();
  }
}

for (const [family, modelType] of [["llama", "llama"], ["llama", "qwen2"], ["gpt2", undefined]] as const) {
  Deno.test(`reward head (${modelType ?? family}): equals the float64 reference, left- and right-padded`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "reward_head_" });
    try {
      const cfg = rewardConfig(family, modelType);
      const W = await writeRewardFolder(dir, cfg);
      for (const side of ["right", "left"] as const) {
        const f64 = await rewardsOf(dir, "float64", side);
        assert.equal(f64.rewards.length, 5);
        f64.seqs.forEach((s, i) => {
          const ref = referenceReward(cfg, W, s);
          assert.ok(
            Math.abs(f64.rewards[i] - ref) <= 1e-9 * Math.max(1, Math.abs(ref)),
            `${side} row ${i}: ${f64.rewards[i]} vs ${ref}`,
          );
        });
        const f32 = await rewardsOf(dir, "float32", side);
        f32.seqs.forEach((s, i) => {
          const ref = referenceReward(cfg, W, s);
          assert.ok(
            Math.abs(f32.rewards[i] - ref) <= 1e-4 * Math.max(1, Math.abs(ref)),
            `${side} row ${i} f32`,
          );
        });
        // the rewards differ between rows: the head reads each row's own last token
        assert.ok(new Set(f64.rewards.map((r) => r.toFixed(6))).size === 5);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

for (
  const [family, modelType] of [["llama", "mistral"], ["llama", "qwen3"], ["gemma", "gemma2"], [
    "phi3",
    "phi3",
  ]] as const
) {
  Deno.test(`reward head (${modelType}): left and right padding read the same last token`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "reward_head_" });
    try {
      await writeRewardFolder(dir, rewardConfig(family, modelType));
      const right = await rewardsOf(dir, "float64", "right"), left = await rewardsOf(dir, "float64", "left");
      right.rewards.forEach((r, i) => assert.ok(Math.abs(r - left.rewards[i]) <= 1e-9, `row ${i}`));
      assert.ok(new Set(right.rewards.map((r) => r.toFixed(6))).size === 5);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("reward head: a folder without score.weight is refused, naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reward_head_" });
  try {
    await writeRewardFolder(dir, rewardConfig("llama"), { omitScore: true });
    await assert.rejects(
      () => loadRewardModelFolder(dir),
      /no "score\.weight" in the checkpoint.*not a reward model/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reward head: two labels are a wrong label count (config and weight)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reward_head_" });
  try {
    await writeRewardFolder(dir, rewardConfig("gpt2"), { numLabels: 2 });
    await assert.rejects(
      () => loadRewardModelFolder(dir),
      /wrong label count: the head has 2 labels \(id2label\)/,
    );
    // no label fields in config.json: the weight's shape says it
    const file = join(dir, "config.json");
    const json = JSON.parse(await Deno.readTextFile(file));
    delete json.id2label;
    delete json.label2id;
    await Deno.writeTextFile(file, JSON.stringify(json));
    await assert.rejects(() => loadRewardModelFolder(dir), /wrong label count: "score\.weight" is \[2,32\]/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reward head: a causal LM folder is not a reward model; causal LM folders still load", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reward_head_" });
  try {
    const cfg = rewardConfig("llama");
    await saveModelFolder(dir, cfg, initWeights(cfg, { seed: 1 }));
    await assert.rejects(() => loadRewardModelFolder(dir), /"LlamaForCausalLM"\] is not a reward model/);
    const lm = await loadModelFolder(dir);
    assert.ok(lm.stored.has("lm_head.weight") && !lm.stored.has("score.weight"));
    await writeRewardFolder(dir, cfg, { architectures: ["FalconForSequenceClassification"] });
    await assert.rejects(
      () => loadRewardModelFolder(dir),
      /is not supported; supported: LlamaForSequenceClassification/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
