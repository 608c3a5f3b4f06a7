/**
 * The graphs against a plain-loop float64 TypeScript implementation written from Hugging Face's modeling
 * code: LlamaRMSNorm, `rotate_half` on halves (not interleaved pairs), `repeat_kv` (query head h reads kv
 * head ⌊h / rep⌋), Qwen2's q/k/v biases, GPT-2's Conv1D layout, fused qkv split, gelu_new and learned
 * positions; positions from the mask (`cumsum − 1`), causal + padding mask.
 *
 * Checked once against PyTorch (transformers 5.17, PEFT 0.21, on a lent GPU machine): folders written by
 * saveModelFolder load with no missing or unexpected keys, and float64 logits of left/right-padded batches
 * agree to ≤ 1e-14 for llama (GQA, biases, head_dim ≠ hidden/heads, llama3 scaling), mistral and qwen2
 * (tied), once HF's float32 islands (rotary cos/sin, LlamaRMSNorm's upcast) are lifted to float64 (≤ 1e-6
 * as shipped), and ≤ 5e-15 for GPT-2; PEFT loads saveAdapter's adapters and matches the LoRA graph, merged
 * or not, to the same precision. HF's eager attention gives NaN on left-padded rows; its sdpa path agrees.
 */
import assert from "node:assert/strict";
import {
  type GemmaModelConfig,
  type Gpt2ModelConfig,
  layerWindow,
  type LlamaModelConfig,
  type ModelConfig,
  type Phi3ModelConfig,
  ropeInverseFrequencies,
} from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import type { WeightMap } from "../../lib/model/weights.ts";
import { assertClose, decoderRunner, floats, tokens } from "./_decoder_helpers.ts";

type Vec = number[];

/** y = W x (+ b) for HF [out, in] weights, or x W (+ b) for GPT-2 [in, out] (conv1d). */
function lin(W: WeightMap, name: string, x: Vec, conv1d = false, bias = false): Vec {
  const w = W.get(`${name}.weight`)!;
  const [rows, cols] = w.shape;
  const outN = conv1d ? cols : rows, inN = conv1d ? rows : cols;
  assert.equal(x.length, inN, name);
  const y = new Array(outN).fill(0);
  for (let o = 0; o < outN; o++) {
    let s = 0;
    for (let i = 0; i < inN; i++) s += x[i] * w.data[conv1d ? i * cols + o : o * cols + i];
    y[o] = s + (bias ? W.get(`${name}.bias`)!.data[o] : 0);
  }
  return y;
}

function rms(x: Vec, w: ArrayLike<number>, eps: number): Vec {
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(ms + eps)) * w[i]);
}

function lnorm(x: Vec, w: Float32Array, b: Float32Array, eps: number): Vec {
  const m = x.reduce((a, v) => a + v, 0) / x.length;
  const v = x.reduce((a, u) => a + (u - m) ** 2, 0) / x.length;
  return x.map((u, i) => ((u - m) / Math.sqrt(v + eps)) * w[i] + b[i]);
}

/**
 * HF apply_rotary_pos_emb on one head vector: x·cos + rotate_half(x)·sin, rotate_half = cat(−x2, x1), on
 * the first 2·inv.length dimensions (Phi-3's partial rotary: the rest pass), cos and sin times `scale`.
 */
function rope(x: Vec, pos: number, inv: Float64Array, scale = 1): Vec {
  const half = inv.length;
  const out = [...x];
  for (let i = 0; i < half; i++) {
    const c = scale * Math.cos(pos * inv[i]), s = scale * Math.sin(pos * inv[i]);
    out[i] = x[i] * c - x[i + half] * s;
    out[i + half] = x[i + half] * c + x[i] * s;
  }
  return out;
}

type AttendOptions = { window?: number | null; scale?: number; softcap?: number | null };

/**
 * Causal masked attention for one sequence; q[t][h], k[t][kvh], v[t][kvh] head vectors. A window w
 * keeps keys j > t − w; scores are scaled by `scale` (default 1/√hd) and soft-capped before the mask.
 */
function attend(
  q: Vec[][],
  k: Vec[][],
  v: Vec[][],
  mask: number[],
  H: number,
  kvH: number,
  o: AttendOptions = {},
): Vec[] {
  const T = q.length, hd = q[0][0].length, rep = H / kvH;
  const scale = o.scale ?? 1 / Math.sqrt(hd), cap = o.softcap ?? null, w = o.window ?? Infinity;
  return q.map((qt, t) => {
    const out: number[] = [];
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / rep); // repeat_kv
      const allowed = [...Array(T).keys()].filter((j) => j <= t && j > t - w && mask[j] === 1);
      const sc = allowed.map((j) => {
        const s = qt[h].reduce((a, x, i) => a + x * k[j][kvh][i], 0) * scale;
        return cap === null ? s : cap * Math.tanh(s / cap);
      });
      const mx = Math.max(...sc);
      const e = sc.map((s) => Math.exp(s - mx));
      const z = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < hd; i++) out.push(allowed.reduce((a, j, n) => a + (e[n] / z) * v[j][kvh][i], 0));
    }
    return out;
  });
}

const heads = (x: Vec, n: number): Vec[] =>
  Array.from({ length: n }, (_, h) => x.slice(h * x.length / n, (h + 1) * x.length / n));
const addv = (a: Vec, b: Vec) => a.map((x, i) => x + b[i]);
const row = (W: WeightMap, name: string, i: number) => {
  const t = W.get(name)!;
  return Array.from(t.data.subarray(i * t.shape[1], (i + 1) * t.shape[1]));
};

function positions(mask: number[]): number[] {
  let c = 0;
  return mask.map((m) => (m ? c++ : 1));
}

function refLlama(cfg: LlamaModelConfig, W: WeightMap, ids: number[], mask: number[]): Vec[] {
  const inv = ropeInverseFrequencies(cfg), pos = positions(mask), b = cfg.attentionBias;
  let h = ids.map((id) => row(W, "model.embed_tokens.weight", id));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const a = h.map((x) => rms(x, W.get(`${p}.input_layernorm.weight`)!.data, cfg.rmsNormEps));
    const qk = (u: Vec, name: string) =>
      cfg.qkNorm ? rms(u, W.get(`${p}.self_attn.${name}.weight`)!.data, cfg.rmsNormEps) : u;
    const q = a.map((x, t) =>
      heads(lin(W, `${p}.self_attn.q_proj`, x, false, b.q), cfg.numHeads).map((u) =>
        rope(qk(u, "q_norm"), pos[t], inv)
      )
    );
    const k = a.map((x, t) =>
      heads(lin(W, `${p}.self_attn.k_proj`, x, false, b.k), cfg.numKvHeads).map((u) =>
        rope(qk(u, "k_norm"), pos[t], inv)
      )
    );
    const v = a.map((x) => heads(lin(W, `${p}.self_attn.v_proj`, x, false, b.v), cfg.numKvHeads));
    const att = attend(q, k, v, mask, cfg.numHeads, cfg.numKvHeads, { window: layerWindow(cfg, l) });
    h = h.map((x, t) => addv(x, lin(W, `${p}.self_attn.o_proj`, att[t], false, b.o)));
    h = h.map((x) => {
      const m = rms(x, W.get(`${p}.post_attention_layernorm.weight`)!.data, cfg.rmsNormEps);
      const gate = lin(W, `${p}.mlp.gate_proj`, m), up = lin(W, `${p}.mlp.up_proj`, m);
      return addv(x, lin(W, `${p}.mlp.down_proj`, gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i])));
    });
  }
  const head = cfg.tieWordEmbeddings ? "model.embed_tokens" : "lm_head";
  return h.map((x) => lin(W, head, rms(x, W.get("model.norm.weight")!.data, cfg.rmsNormEps)));
}

function refGpt2(cfg: Gpt2ModelConfig, W: WeightMap, ids: number[], mask: number[]): Vec[] {
  const pos = positions(mask), D = cfg.hiddenSize, H = cfg.numHeads, eps = cfg.layerNormEps;
  const ln = (x: Vec, n: string) => lnorm(x, W.get(`${n}.weight`)!.data, W.get(`${n}.bias`)!.data, eps);
  const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  let h = ids.map((id, t) => addv(row(W, "wte.weight", id), row(W, "wpe.weight", pos[t])));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `h.${l}`;
    const qkv = h.map((x) => lin(W, `${p}.attn.c_attn`, ln(x, `${p}.ln_1`), true, true));
    const q = qkv.map((u) => heads(u.slice(0, D), H));
    const k = qkv.map((u) => heads(u.slice(D, 2 * D), H));
    const v = qkv.map((u) => heads(u.slice(2 * D), H));
    const att = attend(q, k, v, mask, H, H);
    h = h.map((x, t) => addv(x, lin(W, `${p}.attn.c_proj`, att[t], true, true)));
    h = h.map((x) => {
      const f = lin(W, `${p}.mlp.c_fc`, ln(x, `${p}.ln_2`), true, true).map(gelu);
      return addv(x, lin(W, `${p}.mlp.c_proj`, f, true, true));
    });
  }
  const head = cfg.tieWordEmbeddings ? "wte" : "lm_head";
  return h.map((x) => lin(W, head, ln(x, "ln_f")));
}

/** Gemma's RMSNorm: x / rms(x) · (1 + w). */
const gnorm = (x: Vec, W: WeightMap, name: string, eps: number) =>
  rms(x, Array.from(W.get(`${name}.weight`)!.data, (w) => 1 + w), eps); // in float64, not Float32Array.map

/**
 * Gemma 2/3 from transformers' modeling_gemma2/3: embeddings × √hidden, four (1 + w) norms per layer,
 * q/k norms (Gemma 3), scores × query_pre_attn_scalar^-½ soft-capped, GeGLU (tanh GELU), a window on
 * sliding layers, Gemma 3's local rope base on them, soft-capped logits.
 */
function refGemma(cfg: GemmaModelConfig, W: WeightMap, ids: number[], mask: number[]): Vec[] {
  const pos = positions(mask), eps = cfg.rmsNormEps;
  const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  let h = ids.map((id) => row(W, "model.embed_tokens.weight", id).map((x) => x * Math.sqrt(cfg.hiddenSize)));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`, window = layerWindow(cfg, l);
    const local = cfg.modelType === "gemma3_text" && window !== null;
    const inv = ropeInverseFrequencies({
      headDim: cfg.headDim,
      ropeTheta: local ? cfg.ropeLocalTheta : cfg.ropeTheta,
      ropeScaling: local ? null : cfg.ropeScaling,
    });
    const a = h.map((x) => gnorm(x, W, `${p}.input_layernorm`, eps));
    const qk = (u: Vec, name: string) => cfg.qkNorm ? gnorm(u, W, `${p}.self_attn.${name}`, eps) : u;
    const q = a.map((x, t) =>
      heads(lin(W, `${p}.self_attn.q_proj`, x), cfg.numHeads).map((u) => rope(qk(u, "q_norm"), pos[t], inv))
    );
    const k = a.map((x, t) =>
      heads(lin(W, `${p}.self_attn.k_proj`, x), cfg.numKvHeads).map((u) => rope(qk(u, "k_norm"), pos[t], inv))
    );
    const v = a.map((x) => heads(lin(W, `${p}.self_attn.v_proj`, x), cfg.numKvHeads));
    const att = attend(q, k, v, mask, cfg.numHeads, cfg.numKvHeads, {
      window,
      scale: 1 / Math.sqrt(cfg.queryPreAttnScalar),
      softcap: cfg.attnLogitSoftcap,
    });
    h = h.map((x, t) =>
      addv(x, gnorm(lin(W, `${p}.self_attn.o_proj`, att[t]), W, `${p}.post_attention_layernorm`, eps))
    );
    h = h.map((x) => {
      const m = gnorm(x, W, `${p}.pre_feedforward_layernorm`, eps);
      const gate = lin(W, `${p}.mlp.gate_proj`, m), up = lin(W, `${p}.mlp.up_proj`, m);
      const f = lin(W, `${p}.mlp.down_proj`, gate.map((g, i) => gelu(g) * up[i]));
      return addv(x, gnorm(f, W, `${p}.post_feedforward_layernorm`, eps));
    });
  }
  const head = cfg.tieWordEmbeddings ? "model.embed_tokens" : "lm_head";
  const cap = cfg.finalLogitSoftcap;
  return h.map((x) =>
    lin(W, head, gnorm(x, W, "model.norm", eps)).map((z) => cap === null ? z : cap * Math.tanh(z / cap))
  );
}

/**
 * Phi-3 from transformers' modeling_phi3: fused qkv split [H·hd | kv·hd | kv·hd], rotary on the first
 * rotaryDim dims (longrope: short factors, cos/sin × attention factor), fused gate_up chunked
 * [gate | up], up · silu(gate).
 */
function refPhi3(cfg: Phi3ModelConfig, W: WeightMap, ids: number[], mask: number[]): Vec[] {
  const pos = positions(mask), eps = cfg.rmsNormEps, hd = cfg.headDim, ff = cfg.intermediateSize;
  const inv = ropeInverseFrequencies({ ...cfg, rotaryDim: cfg.rotaryDim });
  const s = cfg.ropeScaling;
  let scale = 1;
  if (s) {
    const factor = cfg.maxPositions / (s.original_max_position_embeddings as number);
    scale = typeof s.attention_factor === "number"
      ? s.attention_factor
      : factor <= 1
      ? 1
      : Math.sqrt(1 + Math.log(factor) / Math.log(s.original_max_position_embeddings as number));
  }
  let h = ids.map((id) => row(W, "model.embed_tokens.weight", id));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const qkv = h.map((x) =>
      lin(W, `${p}.self_attn.qkv_proj`, rms(x, W.get(`${p}.input_layernorm.weight`)!.data, eps))
    );
    const qn = cfg.numHeads * hd, kn = cfg.numKvHeads * hd;
    const q = qkv.map((u, t) => heads(u.slice(0, qn), cfg.numHeads).map((x) => rope(x, pos[t], inv, scale)));
    const k = qkv.map((u, t) =>
      heads(u.slice(qn, qn + kn), cfg.numKvHeads).map((x) => rope(x, pos[t], inv, scale))
    );
    const v = qkv.map((u) => heads(u.slice(qn + kn), cfg.numKvHeads));
    const att = attend(q, k, v, mask, cfg.numHeads, cfg.numKvHeads, { window: layerWindow(cfg, l) });
    h = h.map((x, t) => addv(x, lin(W, `${p}.self_attn.o_proj`, att[t])));
    h = h.map((x) => {
      const gu = lin(
        W,
        `${p}.mlp.gate_up_proj`,
        rms(x, W.get(`${p}.post_attention_layernorm.weight`)!.data, eps),
      );
      const gate = gu.slice(0, ff), up = gu.slice(ff);
      return addv(
        x,
        lin(W, `${p}.mlp.down_proj`, up.map((u, i) => u * (gate[i] / (1 + Math.exp(-gate[i]))))),
      );
    });
  }
  const head = cfg.tieWordEmbeddings ? "model.embed_tokens" : "lm_head";
  return h.map((x) => lin(W, head, rms(x, W.get("model.norm.weight")!.data, eps)));
}

function reference(cfg: ModelConfig, W: WeightMap, ids: number[], mask: number[]): Vec[] {
  switch (cfg.family) {
    case "llama":
      return refLlama(cfg, W, ids, mask);
    case "gemma":
      return refGemma(cfg, W, ids, mask);
    case "phi3":
      return refPhi3(cfg, W, ids, mask);
    case "gpt2":
      return refGpt2(cfg, W, ids, mask);
  }
}

const CASES: [string, ModelConfig][] = [
  [
    "llama (GQA 4/2, untied)",
    tinyConfig("llama", { hiddenSize: 16, numHeads: 4, numKvHeads: 2, vocabSize: 40 }),
  ],
  [
    "llama (GQA 4/1, llama3 rope scaling)",
    tinyConfig("llama", {
      hiddenSize: 16,
      numHeads: 4,
      numKvHeads: 1,
      vocabSize: 40,
      ropeTheta: 500000,
      ropeScaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8,
      },
    }),
  ],
  [
    "qwen2 (q/k/v bias, tied)",
    tinyConfig("llama", {
      modelType: "qwen2",
      hiddenSize: 16,
      numHeads: 4,
      vocabSize: 40,
      tieWordEmbeddings: true,
    }),
  ],
  ["gpt2 (tied)", tinyConfig("gpt2", { hiddenSize: 16, numHeads: 2, vocabSize: 40 })],
  [
    "mistral (sliding window 3 on every layer)",
    tinyConfig("llama", {
      modelType: "mistral",
      hiddenSize: 16,
      numHeads: 4,
      vocabSize: 40,
      slidingWindow: 3,
    }),
  ],
  [
    "qwen3 (q/k norms, tied, window on the second layer)",
    tinyConfig("llama", {
      modelType: "qwen3",
      hiddenSize: 16,
      numHeads: 4,
      headDim: 8, // head_dim × heads ≠ hidden, as Qwen3 has
      vocabSize: 40,
      tieWordEmbeddings: true,
      slidingWindow: 2,
      slidingLayers: [false, true],
    }),
  ],
  [
    "gemma2 (soft caps, sliding/full layers, query_pre_attn_scalar)",
    tinyConfig("gemma", {
      hiddenSize: 16,
      numHeads: 4,
      vocabSize: 40,
      headDim: 8,
      queryPreAttnScalar: 6,
      attnLogitSoftcap: 0.5,
      finalLogitSoftcap: 1.5,
      slidingWindow: 2,
      slidingLayers: [true, false],
    }),
  ],
  [
    "gemma3_text (q/k norms, local rope base, linear scaling on global layers)",
    tinyConfig("gemma", {
      modelType: "gemma3_text",
      hiddenSize: 16,
      numHeads: 4,
      vocabSize: 40,
      ropeTheta: 1e6,
      ropeLocalTheta: 100,
      ropeScaling: { rope_type: "linear", factor: 8 },
      slidingWindow: 3,
      slidingLayers: [true, false],
      tieWordEmbeddings: false,
    }),
  ],
  [
    "phi3 (fused projections, partial rotary, longrope, window)",
    tinyConfig("phi3", {
      hiddenSize: 32,
      numHeads: 4,
      numKvHeads: 2,
      vocabSize: 40,
      rotaryDim: 6,
      maxPositions: 64,
      ropeScaling: {
        type: "longrope",
        short_factor: [1, 1.5, 2],
        long_factor: [2, 3, 4],
        original_max_position_embeddings: 16,
      },
      slidingWindow: 4,
    }),
  ],
  [
    "phi3 (tied, full rotary, no scaling)",
    tinyConfig("phi3", { hiddenSize: 16, vocabSize: 40, tieWordEmbeddings: true }),
  ],
];

for (const [name, cfg] of CASES) {
  for (const dtype of ["float64", "float32"] as const) {
    Deno.test(`decoder reference: ${name} equals a plain-loop implementation (${dtype}, padded batch)`, async () => {
      const W = initWeights(cfg, { seed: 3, std: 0.3, biasStd: 0.3, normStd: 0.2 });
      const T = 6;
      // row 0 full, row 1 left-padded, row 2 right-padded
      const masks = [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]];
      const ids = tokens(3 * T, 5, cfg.vocabSize);
      const r = await decoderRunner(cfg, W, { dtype });
      const got = floats((await r.logits(ids, masks.flat(), 3)).logits);
      await r.release();
      const V = cfg.vocabSize;
      for (let b = 0; b < 3; b++) {
        const want = reference(cfg, W, ids.slice(b * T, b * T + T), masks[b]);
        for (let t = 0; t < T; t++) {
          if (!masks[b][t]) continue; // padding queries attend nothing real: any finite value will do
          const off = (b * T + t) * V;
          assertClose(
            got.subarray(off, off + V),
            want[t],
            dtype === "float64" ? 1e-10 : 1e-4,
            `logits[${b},${t}]`,
          );
        }
      }
      assert.ok(got.every(Number.isFinite), "padding rows stay finite");
    });
  }
}
