/**
 * Frozen weights read by ONNX Runtime from the model folder's safetensors files (ONNX external data):
 * fp32, fp16 and bf16, single and sharded, through a Hugging Face cache's symbolic links; the graph file
 * holds no weight bytes; weight files are hard-linked into the graph folder (copied, with a notice, where
 * that fails), and a session's temporary folder goes when the session does.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { GraphBuilder } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { deserializeModel } from "../../lib/graph/serialize.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { buildDecoder } from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, saveModelFolder } from "../../lib/model/model_folder.ts";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  type OutputDtype,
} from "../../lib/model/float_codec.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { type WeightMap, type WeightSource } from "../../lib/model/weights.ts";
import { GraphFolder } from "../../lib/runtime/graph_folder.ts";
import { i64, ModelSession } from "../../lib/runtime/session.ts";
import { decoderRunner, floats, tokens } from "./_decoder_helpers.ts";

const cfg = tinyConfig("llama", { modelType: "qwen2", numHeads: 4, numKvHeads: 2, vocabSize: 64 });
const W = initWeights(cfg, { seed: 11, std: 0.3, biasStd: 0.1, normStd: 0.1 });

/** `W` as a model folder would store it in `dtype`, back as fp32. */
function rounded(weights: WeightMap, dtype: OutputDtype): WeightMap {
  const round = dtype === "bfloat16"
    ? (x: number) => bf16BitsToF32(f32ToBf16Bits(x))
    : dtype === "float16"
    ? (x: number) => f16BitsToF32(f32ToF16Bits(x))
    : (x: number) => x;
  return new Map([...weights].map(([k, t]) => [k, { shape: t.shape, data: t.data.map(round) }]));
}

async function logitsOf(c: ModelConfig, weights: WeightMap, source?: WeightSource) {
  const r = await decoderRunner(c, weights, { weights: source });
  const ids = tokens(12, 3, c.vocabSize), mask = [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1];
  const out = floats((await r.logits(ids, mask, 2)).logits);
  await r.release();
  return out;
}

for (const dtype of ["float32", "float16", "bfloat16"] as const) {
  for (const sharded of [false, true]) {
    Deno.test(`stored weights: ${dtype}${sharded ? ", sharded" : ""} files read in place compute the model`, async () => {
      const dir = await Deno.makeTempDir();
      await saveModelFolder(dir, cfg, W, { dtype, maxShardSize: sharded ? 4000 : undefined });
      const folder = await loadModelFolder(dir);
      if (sharded) assert.ok(new Set([...folder.stored.values()].map((t) => t.file)).size > 1, "sharded");
      const want = await logitsOf(cfg, rounded(W, dtype));
      const got = await logitsOf(cfg, W, storedWeights(folder.stored));
      for (let i = 0; i < want.length; i++) {
        assert.ok(
          Math.abs(got[i] - want[i]) <= 1e-5 * Math.max(1, Math.abs(want[i])),
          `[${i}] ${got[i]} vs ${want[i]}`,
        );
      }
      await Deno.remove(dir, { recursive: true });
    });
  }
}

Deno.test("stored weights: a Hugging Face cache folder (files linked into blobs/) loads and runs", async () => {
  const root = await Deno.makeTempDir();
  const plain = join(root, "plain");
  await saveModelFolder(plain, cfg, W, { dtype: "bfloat16" });
  // snapshots/<rev>/model.safetensors → ../../blobs/<hash>, as huggingface_hub lays out its cache
  const snap = join(root, "snapshots", "abc123"), blobs = join(root, "blobs");
  await Deno.mkdir(snap, { recursive: true });
  await Deno.mkdir(blobs);
  await Deno.rename(join(plain, "model.safetensors"), join(blobs, "f00d"));
  await Deno.symlink("../../blobs/f00d", join(snap, "model.safetensors"));
  await Deno.copyFile(join(plain, "config.json"), join(snap, "config.json"));
  const folder = await loadModelFolder(snap);
  const got = await logitsOf(cfg, W, storedWeights(folder.stored));
  const want = await logitsOf(cfg, rounded(W, "bfloat16"));
  assert.deepEqual(got, want);
  await Deno.remove(root, { recursive: true });
});

Deno.test("stored weights: the graph file holds no weight bytes; the weights are hard links, removed after", async () => {
  const dir = await Deno.makeTempDir();
  await saveModelFolder(dir, cfg, W, { dtype: "bfloat16", maxShardSize: 4000 });
  const folder = await loadModelFolder(dir);
  const g = new GraphBuilder("logits");
  const inputIds = g.input("ids", "int64", ["b", "t"]);
  const attentionMask = g.input("mask", "int64", ["b", "t"]);
  const { logits } = buildDecoder(g, cfg, { inputIds, attentionMask }, {
    weights: storedWeights(folder.stored),
  });
  g.output(op.cast(logits, "float32"), "logits");
  const graphs = await GraphFolder.open(join(dir, "graphs"));
  const path = await graphs.write("decoder", g.build());
  const bytes = await Deno.readFile(path);
  const weightBytes = [...folder.stored.values()].reduce((n, t) => n + t.end - t.begin, 0);
  assert.ok(bytes.length < weightBytes, `${bytes.length} bytes of graph for ${weightBytes} of weights`);
  const decoded = deserializeModel(bytes);
  const frozen = decoded.graph.initializers.filter((t) => t.name.startsWith("frozen."));
  assert.equal(frozen.length, folder.stored.size);
  for (const t of frozen) {
    assert.ok(t.external, `${t.name} is external data`);
    assert.equal(t.dtype, "bfloat16");
    const linked = join(graphs.dir, t.external.file);
    const source = folder.stored.get(t.name.slice("frozen.".length))!;
    assert.equal(
      (await Deno.stat(linked)).ino,
      (await Deno.stat(source.file)).ino,
      `${linked} links the shard`,
    );
    assert.equal(t.external.offset, source.begin);
  }
  const s = await ModelSession.create(path);
  const out = await s.run({ ids: i64([5, 6, 7], [1, 3]), mask: i64([1, 1, 1], [1, 3]) });
  assert.deepEqual(out.logits.dims, [1, 3, cfg.vocabSize]);
  await s.release();
  await graphs.remove();
  assert.equal(
    await Deno.stat(graphs.dir).then(() => true, () => false),
    false,
    "a folder made here is removed",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("stored weights: where no hard link can be made, the file is copied and the user told", async () => {
  const dir = await Deno.makeTempDir();
  await saveModelFolder(dir, cfg, W, { dtype: "float16" });
  const folder = await loadModelFolder(dir);
  const lines: string[] = [];
  const graphs = await GraphFolder.open(join(dir, "graphs"), (l) => lines.push(l));
  const realLink = Deno.link;
  // deno-lint-ignore no-explicit-any
  (Deno as any).link = () => Promise.reject(new Error("Invalid cross-device link (os error 18)"));
  let location: string;
  try {
    location = await graphs.locate([...folder.stored.values()][0].file);
  } finally {
    // deno-lint-ignore no-explicit-any
    (Deno as any).link = realLink;
  }
  assert.match(lines.join("\n"), /cannot be hard-linked into .*: copied it \(0\.00 GiB\)/);
  const copy = join(graphs.dir, location);
  const source = [...folder.stored.values()][0].file;
  assert.notEqual((await Deno.stat(copy)).ino, (await Deno.stat(source)).ino);
  assert.deepEqual(await Deno.readFile(copy), await Deno.readFile(source));
  await graphs.remove();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("stored weights: a session on a temporary graph folder removes it when released", async () => {
  const dir = await Deno.makeTempDir();
  await saveModelFolder(dir, cfg, W, { dtype: "bfloat16" });
  const folder = await loadModelFolder(dir);
  const g = new GraphBuilder("stored-weights-temporary");
  const ids = g.input("ids", "int64", ["n"]);
  const table = storedWeights(folder.stored).stored!(g, "model.embed_tokens.weight", "float32");
  g.output(op.cast(op.gather(table, ids), "float32"), "rows");
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  // (other tests make graph folders too: this one is told by its graph file)
  const ours = () =>
    [...Deno.readDirSync(tmp)].filter((e) =>
      e.name.startsWith("nca-graphs-") &&
      [...Deno.readDirSync(join(tmp, e.name))].some((f) => f.name === "stored-weights-temporary.onnx")
    );
  const s = await ModelSession.create(g.build());
  assert.equal(ours().length, 1, "one temporary graph folder");
  const rows = await s.run({ ids: i64([0, 3], [2]) });
  assert.deepEqual(rows.rows.dims, [2, cfg.hiddenSize]);
  await s.release();
  assert.equal(ours().length, 0, "removed at release");
  await Deno.remove(dir, { recursive: true });
});
