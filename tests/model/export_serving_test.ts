/**
 * The serving export, per architecture (a tiny Llama with grouped-query attention, a tiny GPT-2):
 * (a) the exported KV-cache model on a full sequence equals a plain graph from buildDecoder;
 * (b) prefill + one-token steps equal full recomputation;
 * (c) transformers.js loads the folder offline and computes the same logits;
 * (d) transformers.js' greedy `generate` and ours pick the same tokens;
 * plus weights as external data, and the folder as a Hugging Face model folder.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { GraphBuilder } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { type HostTensor, i64, ModelSession } from "../../lib/runtime/session.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { buildDecoder } from "../../lib/model/decoder.ts";
import { exportForServing, type ExportResult } from "../../lib/model/export.ts";
import { generate, SERVING_NAMES } from "../../lib/model/generate.ts";
import { initWeights } from "../../lib/model/init.ts";
import { generationConfigJson, loadModelFolder, readModelWeights } from "../../lib/model/model_folder.ts";
import { frozenWeights, type WeightMap } from "../../lib/model/weights.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../lib/model/float_codec.ts";
import { TINY_CHAT_TEMPLATE, writeTinyTokenizer } from "../fixtures/tokenizer.ts";

const VOCAB = 128; // the tiny tokenizer's vocabulary
const EOS = 1, PAD = 0;

/** A left-padded batch: row 0 full, row 1 padded by 3. */
const IDS = [
  [5, 17, 42, 9, 77, 3, 101, 64, 12, 33],
  [0, 0, 0, 88, 7, 51, 23, 99, 120, 6],
];
const MASK = [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]];
const B = IDS.length, T = IDS[0].length;

/** transformers.js' position ids: cumsum(mask) − 1, 1 on padding. */
function positionsOf(mask: number[][]): number[][] {
  return mask.map((row) => {
    let n = 0;
    return row.map((m) => (m ? n++ : 1));
  });
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string) {
  assert.equal(a.length, b.length, `${what}: lengths differ`);
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    if (!(err <= tol)) assert.fail(`${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

function emptyCache(cfg: ModelConfig, batch: number): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (let i = 0; i < cfg.numLayers; i++) {
    for (const name of [SERVING_NAMES.pastKey(i), SERVING_NAMES.pastValue(i)]) {
      out[name] = {
        dtype: "float32",
        dims: [batch, cfg.numKvHeads, 0, cfg.headDim],
        data: new Float32Array(0),
      };
    }
  }
  return out;
}

/** Logits `[B, T, V]` of a plain decoder graph (no cache; positions derived from the mask). */
async function plainLogits(cfg: ModelConfig, weights: WeightMap, ids: number[][], mask: number[][]) {
  const g = new GraphBuilder("plain");
  const inputIds = g.input("input_ids", "int64", ["b", "t"]);
  const attentionMask = g.input("attention_mask", "int64", ["b", "t"]);
  const { logits } = buildDecoder(g, cfg, { inputIds, attentionMask }, { weights: frozenWeights(weights) });
  g.output(op.cast(logits, "float32"), "logits");
  const s = await ModelSession.create(serializeModel(g.build()), { intraOpThreads: 1 });
  const out = await s.run({
    input_ids: i64(ids.flat(), [ids.length, ids[0].length]),
    attention_mask: i64(mask.flat(), [mask.length, mask[0].length]),
  });
  await s.release();
  return out.logits.data as Float32Array;
}

/** One run of the exported model. */
function servingFeeds(
  ids: number[][],
  mask: number[][],
  positions: number[][],
  past: Record<string, HostTensor>,
  keep = 0,
): Record<string, HostTensor> {
  const b = ids.length, t = ids[0].length;
  const feeds: Record<string, HostTensor> = {
    input_ids: i64(ids.flat(), [b, t]),
    attention_mask: i64(mask.flat(), [b, mask[0].length]),
    position_ids: i64(positions.flat(), [b, t]),
    num_logits_to_keep: i64([keep], []),
  };
  for (const [name, v] of Object.entries(past)) {
    feeds[name.replace(/^present\./, "past_key_values.")] = v;
  }
  return feeds;
}

/** Logits of row `r`, position `t` from a `[B, T, V]` array. */
const at = (logits: Float32Array, tLen: number, r: number, t: number) =>
  logits.subarray((r * tLen + t) * VOCAB, (r * tLen + t + 1) * VOCAB);

type Fixture = {
  cfg: ModelConfig;
  weights: WeightMap;
  exp: ExportResult;
  session: ModelSession;
  dir: string;
};

async function setup(
  cfg: ModelConfig,
  o: { dtype?: "float32" | "bfloat16"; maxShardSize?: number } = {},
): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: `export_${cfg.modelType}_` });
  const tokDir = join(dir, "tok");
  await writeTinyTokenizer(tokDir, { chatTemplate: true });
  const weights = initWeights(cfg, { seed: 7, std: 0.35, biasStd: 0.1, normStd: 0.1 });
  const exp = await exportForServing(join(dir, "model"), {
    cfg,
    weights,
    tokenizerDir: tokDir,
    generation: { eosTokenId: EOS, padTokenId: PAD, bosTokenId: null },
    dtype: o.dtype,
    maxShardSize: o.maxShardSize,
  });
  const session = await ModelSession.create(exp.onnxPath, { intraOpThreads: 1 });
  return { cfg, weights, exp, session, dir };
}

async function checkArchitecture(t: Deno.TestContext, cfg: ModelConfig) {
  const f = await setup(cfg);
  const { session, weights } = f;
  const full = (await session.run(servingFeeds(IDS, MASK, positionsOf(MASK), emptyCache(cfg, B)))).logits;
  const fullLogits = full.data as Float32Array;

  await t.step("(a) exported model on a full sequence = plain decoder graph", async () => {
    assert.deepEqual(full.dims, [B, T, VOCAB]);
    const plain = await plainLogits(cfg, weights, IDS, MASK);
    // padded positions attend to nothing real: compare real positions only
    for (let r = 0; r < B; r++) {
      for (let p = 0; p < T; p++) {
        if (MASK[r][p]) assertClose(at(fullLogits, T, r, p), at(plain, T, r, p), 1e-4, `row ${r} pos ${p}`);
      }
    }
    const last = await session.run(servingFeeds(IDS, MASK, positionsOf(MASK), emptyCache(cfg, B), 1));
    assert.deepEqual(last.logits.dims, [B, 1, VOCAB]);
    for (let r = 0; r < B; r++) {
      assertClose(at(last.logits.data as Float32Array, 1, r, 0), at(fullLogits, T, r, T - 1), 1e-5, "keep 1");
    }
  });

  await t.step("(b) prefill + one token at a time = full recomputation", async () => {
    const P = 6;
    const pos = positionsOf(MASK);
    let out = await session.run(
      servingFeeds(
        IDS.map((r) => r.slice(0, P)),
        MASK.map((r) => r.slice(0, P)),
        pos.map((r) => r.slice(0, P)),
        emptyCache(cfg, B),
      ),
    );
    for (let r = 0; r < B; r++) {
      for (let p = 0; p < P; p++) {
        if (MASK[r][p]) {
          assertClose(at(out.logits.data as Float32Array, P, r, p), at(fullLogits, T, r, p), 1e-4, "prefill");
        }
      }
    }
    for (let p = P; p < T; p++) {
      const presents = Object.fromEntries(Object.entries(out).filter(([n]) => n.startsWith("present.")));
      assert.deepEqual(presents[SERVING_NAMES.presentKey(0)].dims, [B, cfg.numKvHeads, p, cfg.headDim]);
      out = await session.run(
        servingFeeds(
          IDS.map((r) => [r[p]]),
          MASK.map((r) => r.slice(0, p + 1)),
          pos.map((r) => [r[p]]),
          presents,
        ),
      );
      for (let r = 0; r < B; r++) {
        assertClose(
          at(out.logits.data as Float32Array, 1, r, 0),
          at(fullLogits, T, r, p),
          1e-4,
          `step ${p} row ${r}`,
        );
      }
    }
  });

  const { AutoModelForCausalLM, Tensor, env } = await import("@huggingface/transformers");
  env.allowRemoteModels = false;
  const model = await AutoModelForCausalLM.from_pretrained(f.exp.folder, {
    dtype: "fp32",
    local_files_only: true,
  });
  const ids = new Tensor("int64", BigInt64Array.from(IDS.flat(), BigInt), [B, T]);
  const mask = new Tensor("int64", BigInt64Array.from(MASK.flat(), BigInt), [B, T]);

  await t.step("(c) transformers.js loads the folder offline; same logits", async () => {
    const out = await model({ input_ids: ids, attention_mask: mask });
    assert.deepEqual(out.logits.dims, [B, T, VOCAB]);
    const theirs = out.logits.data as Float32Array;
    for (let r = 0; r < B; r++) {
      for (let p = 0; p < T; p++) {
        if (MASK[r][p]) {
          assertClose(at(theirs, T, r, p), at(fullLogits, T, r, p), 1e-4, `tfjs row ${r} pos ${p}`);
        }
      }
    }
  });

  await t.step("(d) greedy generation: transformers.js = ours, token for token", async () => {
    const N = 12;
    const seqs = await model.generate({
      input_ids: ids,
      attention_mask: mask,
      max_new_tokens: N,
      do_sample: false,
    });
    const theirs = (seqs as InstanceType<typeof Tensor>).tolist() as bigint[][];
    const prompts = IDS.map((row, r) => row.filter((_, p) => MASK[r][p]));
    const ours = await generate(session, prompts, { maxNewTokens: N, temperature: 0, eosTokenIds: [EOS] });
    for (let r = 0; r < B; r++) {
      const tf = theirs[r].slice(T).map(Number);
      const eosAt = tf.indexOf(EOS);
      const expected = eosAt >= 0 ? tf.slice(0, eosAt + 1) : tf;
      assert.deepEqual(ours.rows[r].tokens, expected, `row ${r}`);
      assert.equal(ours.rows[r].stopReason, eosAt >= 0 ? "eos" : "length");
    }
    // a varied continuation, not one token repeated: the comparison means something
    assert.ok(
      new Set(ours.rows.flatMap((r) => r.tokens)).size > 3,
      JSON.stringify(ours.rows.map((r) => r.tokens)),
    );
  });

  await t.step("the folder is a Hugging Face model folder", async () => {
    const back = await loadModelFolder(f.exp.folder);
    assert.equal(back.config.modelType, cfg.modelType);
    assert.equal(back.config.numKvHeads, cfg.numKvHeads);
    assert.equal(back.config.eosTokenId, EOS);
    const stored = await readModelWeights(back);
    for (const [name, w] of weights) assert.deepEqual(stored.get(name)?.data, w.data, name);
    const gen = JSON.parse(await Deno.readTextFile(join(f.exp.folder, "generation_config.json")));
    assert.equal(gen.eos_token_id, EOS);
    assert.equal(gen.pad_token_id, PAD);
    assert.equal(gen.bos_token_id, undefined);
    for (const file of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) {
      assert.ok(f.exp.files.includes(file), file);
    }
    // the decoder reads its weights from model.safetensors itself, through a hard link: no second copy
    assert.deepEqual(f.exp.dataFiles, ["onnx/model.onnx_data"]);
    const [a, b] = [join(f.exp.folder, "model.safetensors"), join(f.exp.folder, "onnx/model.onnx_data")];
    assert.equal((await Deno.stat(a)).ino, (await Deno.stat(b)).ino);
    const { AutoTokenizer } = await import("@huggingface/transformers");
    const tok = await AutoTokenizer.from_pretrained(f.exp.folder, { local_files_only: true });
    assert.deepEqual(tok.encode("hello world"), [48, 50]);
  });

  await model.dispose();
  await session.release();
  await Deno.remove(f.dir, { recursive: true });
}

Deno.test("serving export: llama with grouped-query attention", async (t) => {
  const cfg = tinyConfig("llama", { vocabSize: VOCAB, numHeads: 4, numKvHeads: 2 });
  assert.ok(cfg.numKvHeads < cfg.numHeads);
  await checkArchitecture(t, cfg);
});

Deno.test("serving export: gpt2", async (t) => {
  await checkArchitecture(t, tinyConfig("gpt2", { vocabSize: VOCAB }));
});

Deno.test("serving export: sharded bf16 weights, read by ORT and transformers.js from the safetensors files", async () => {
  const cfg = tinyConfig("llama", { vocabSize: VOCAB, modelType: "qwen2" });
  const ext = await setup(cfg, { dtype: "bfloat16", maxShardSize: 20_000 });
  const shards = ext.exp.files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
  assert.ok(shards.length > 1, `sharded: ${shards}`);
  assert.deepEqual(ext.exp.dataFiles, shards.map((_, k) => `onnx/model.onnx_data${k ? `_${k}` : ""}`));
  for (const [k, shard] of shards.entries()) {
    const [a, b] = [join(ext.exp.folder, shard), join(ext.exp.folder, ext.exp.dataFiles[k])];
    assert.equal((await Deno.stat(a)).ino, (await Deno.stat(b)).ino, `${b} links ${a}`);
  }
  const onnxSize = (await Deno.stat(ext.exp.onnxPath)).size;
  assert.ok(onnxSize < 100_000, `model.onnx keeps only the graph (${onnxSize} bytes)`);
  const config = JSON.parse(await Deno.readTextFile(join(ext.exp.folder, "config.json")));
  assert.equal(config.torch_dtype, "bfloat16");
  assert.deepEqual(config["transformers.js_config"], {
    dtype: "fp32",
    use_external_data_format: { "model.onnx": shards.length },
  });

  // the bf16 weights, cast in the graph, compute what fp32 weights rounded to bf16 compute
  const rounded: WeightMap = new Map(
    [...ext.weights].map(([k, t]) => [k, { shape: t.shape, data: t.data.map((x) => bf16Round(x)) }]),
  );
  const feeds = servingFeeds(IDS, MASK, positionsOf(MASK), emptyCache(cfg, B));
  const a = (await ext.session.run(feeds)).logits.data as Float32Array;
  const plain = await plainLogits(cfg, rounded, IDS, MASK);
  for (let r = 0; r < B; r++) {
    for (let p = 0; p < T; p++) {
      if (MASK[r][p]) assertClose(at(a, T, r, p), at(plain, T, r, p), 1e-5, `bf16 row ${r} pos ${p}`);
    }
  }

  const { AutoModelForCausalLM, Tensor, env } = await import("@huggingface/transformers");
  env.allowRemoteModels = false;
  const model = await AutoModelForCausalLM.from_pretrained(ext.exp.folder, {
    dtype: "fp32",
    local_files_only: true,
  });
  const out = await model({
    input_ids: new Tensor("int64", BigInt64Array.from(IDS.flat(), BigInt), [B, T]),
    attention_mask: new Tensor("int64", BigInt64Array.from(MASK.flat(), BigInt), [B, T]),
  });
  for (let r = 0; r < B; r++) {
    for (let p = 0; p < T; p++) {
      if (MASK[r][p]) {
        assertClose(at(out.logits.data as Float32Array, T, r, p), at(a, T, r, p), 1e-5, "external");
      }
    }
  }
  await model.dispose();
  await ext.session.release();
  await Deno.remove(ext.dir, { recursive: true });
});

/** x rounded to bfloat16 (nearest even), as a float32 value. */
function bf16Round(x: number): number {
  return bf16BitsToF32(f32ToBf16Bits(x));
}

for (
  const [name, cfg] of [
    [
      "qwen3 (q/k norms)",
      tinyConfig("llama", { vocabSize: VOCAB, modelType: "qwen3", tieWordEmbeddings: true }),
    ],
    [
      "gemma2 (soft caps, sliding layers)",
      tinyConfig("gemma", {
        vocabSize: VOCAB,
        tieWordEmbeddings: false, // tied, √hidden-scaled random embeddings make a model that repeats its input
        attnLogitSoftcap: 3,
        finalLogitSoftcap: 4,
        slidingWindow: 4,
        slidingLayers: [true, false],
      }),
    ],
    [
      "gemma3_text (local rope, q/k norms)",
      tinyConfig("gemma", {
        vocabSize: VOCAB,
        tieWordEmbeddings: false,
        modelType: "gemma3_text",
        ropeLocalTheta: 100,
        slidingWindow: 4,
        slidingLayers: [true, false],
      }),
    ],
    ["phi3 (fused projections, partial rotary)", tinyConfig("phi3", { vocabSize: VOCAB, rotaryDim: 4 })],
  ] as [string, ModelConfig][]
) {
  Deno.test(`serving export: ${name}`, async (t) => {
    await checkArchitecture(t, cfg);
  });
}

Deno.test("generation_config.json: the source's carried, every stop id kept (Llama 3, Qwen2.5)", () => {
  // the real vocabularies: ids past vocab_size are refused (no weights are made here)
  const llama3 = tinyConfig("llama", { vocabSize: 128256, bosTokenId: 128000, eosTokenId: 128001 });
  const llama3Gen = {
    bos_token_id: 128000,
    do_sample: true,
    eos_token_id: [128001, 128009],
    max_length: 4096,
    temperature: 0.6,
    top_p: 0.9,
    transformers_version: "4.40.0.dev0",
  };
  assert.deepEqual(generationConfigJson(llama3, llama3Gen), llama3Gen);
  const qwen = tinyConfig("llama", { vocabSize: 151936, bosTokenId: 151643, eosTokenId: 151645 });
  const qwenGen = {
    bos_token_id: 151643,
    pad_token_id: 151643,
    do_sample: true,
    eos_token_id: [151645, 151643],
    repetition_penalty: 1.05,
    temperature: 0.7,
    top_p: 0.8,
    top_k: 20,
    transformers_version: "4.37.0",
  };
  assert.deepEqual(generationConfigJson(qwen, qwenGen), qwenGen);
  // no source: the config's ids; a chat template's end of turn joins the list
  assert.deepEqual(generationConfigJson(llama3, null, [128009, 128001]), {
    _from_model_config: true,
    bos_token_id: 128000,
    eos_token_id: [128001, 128009],
  });
});

Deno.test("serving export: the source's generation_config.json and chat_template.jinja are carried", async () => {
  const dir = await Deno.makeTempDir({ prefix: "export_carry_" });
  try {
    const cfg = tinyConfig("llama", { vocabSize: VOCAB, bosTokenId: null, eosTokenId: EOS });
    const weights = initWeights(cfg, { seed: 1 });
    const src = join(dir, "src");
    await writeTinyTokenizer(src);
    await Deno.writeTextFile(join(src, "chat_template.jinja"), TINY_CHAT_TEMPLATE);
    await Deno.writeTextFile(
      join(src, "generation_config.json"),
      JSON.stringify({ eos_token_id: [EOS, 5], temperature: 0.6, top_k: 20, transformers_version: "4.46.0" }),
    );
    const out = join(dir, "out");
    await exportForServing(out, { cfg, weights, tokenizerDir: src, generation: { topK: 7 } });
    assert.equal(await Deno.readTextFile(join(out, "chat_template.jinja")), TINY_CHAT_TEMPLATE);
    const gen = JSON.parse(await Deno.readTextFile(join(out, "generation_config.json")));
    assert.deepEqual(gen, {
      eos_token_id: [EOS, 5],
      temperature: 0.6,
      top_k: 7,
      transformers_version: "4.46.0",
    });

    // exported again from a source without a template file: the earlier chat_template.jinja goes
    const plain = join(dir, "plain");
    await writeTinyTokenizer(plain);
    await exportForServing(out, { cfg, weights, tokenizerDir: plain });
    await assert.rejects(Deno.stat(join(out, "chat_template.jinja")), Deno.errors.NotFound);
    const again = JSON.parse(await Deno.readTextFile(join(out, "generation_config.json")));
    assert.deepEqual(again, { _from_model_config: true, eos_token_id: EOS });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
