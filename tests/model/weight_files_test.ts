import assert from "node:assert/strict";
import {
  loadWeights,
  parseShardSize,
  planShards,
  readShardIndex,
  saveWeights,
  shardFileName,
  shardIndexJson,
} from "../../lib/model/weight_files.ts";
import { type Float32Tensor, readSafetensorsHeader, writeSafetensors } from "../../lib/model/safetensors.ts";
import { f32FromBits } from "../../lib/model/float_codec.ts";

function tensor(shape: number[], start: number): Float32Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: "float32", shape, data: new Float32Array(n).map((_, i) => start + i * 0.25) };
}

/** 5 tensors: 16 + 16 + 40 + 8 + 8 fp32 bytes, in insertion (state-dict) order. */
function sample(): Map<string, Float32Tensor> {
  return new Map([
    ["model.embed_tokens.weight", tensor([2, 2], 0)],
    ["model.layers.0.self_attn.q_proj.weight", tensor([2, 2], 10)],
    ["model.layers.0.mlp.up_proj.weight", tensor([2, 5], 20)],
    ["model.norm.weight", tensor([2], 30)],
    ["lm_head.weight", tensor([1, 2], 40)],
  ]);
}

function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

Deno.test("parseShardSize follows transformers' units", () => {
  assert.equal(parseShardSize("5GB"), 5_000_000_000);
  assert.equal(parseShardSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseShardSize("500MB"), 500_000_000);
  assert.equal(parseShardSize("1.5kb"), 1500);
  assert.equal(parseShardSize(1234), 1234);
  assert.equal(parseShardSize("64"), 64);
  assert.throws(() => parseShardSize("five gigs"), /cannot parse max shard size "five gigs"/);
  assert.throws(() => parseShardSize(0), /must be positive/);
});

Deno.test("planShards: HF split algorithm, names, oversize tensors and the index metadata", () => {
  assert.equal(shardFileName(0, 2), "model-00001-of-00002.safetensors");
  assert.equal(shardFileName(11, 12), "model-00012-of-00012.safetensors");

  const tensors = [
    { name: "a", numel: 4 }, // 16 B
    { name: "b", numel: 4 }, // 16 B -> 32 fits in 32
    { name: "c", numel: 10 }, // 40 B > 32: own shard, placed before the one being filled
    { name: "d", numel: 2 }, // 8 B: 32 + 8 > 32 -> new shard
    { name: "e", numel: 2 },
  ];
  const plan = planShards(tensors, { maxShardSize: 32 });
  assert.deepEqual(plan.shards, [
    { file: "model-00001-of-00003.safetensors", names: ["c"], bytes: 40 },
    { file: "model-00002-of-00003.safetensors", names: ["a", "b"], bytes: 32 },
    { file: "model-00003-of-00003.safetensors", names: ["d", "e"], bytes: 16 },
  ]);
  assert.deepEqual(plan.index, {
    metadata: { total_parameters: 22, total_size: 88 },
    weight_map: {
      c: "model-00001-of-00003.safetensors",
      a: "model-00002-of-00003.safetensors",
      b: "model-00002-of-00003.safetensors",
      d: "model-00003-of-00003.safetensors",
      e: "model-00003-of-00003.safetensors",
    },
  });

  // Half-precision output halves every size: everything fits in one file, and then there is no index.
  const single = planShards(tensors, { maxShardSize: 44, dtype: "bfloat16" });
  assert.deepEqual(single, {
    shards: [{ file: "model.safetensors", names: ["a", "b", "c", "d", "e"], bytes: 44 }],
    index: null,
  });
});

Deno.test("shardIndexJson matches json.dumps(indent=2, sort_keys=True) + newline", () => {
  const text = shardIndexJson({
    metadata: { total_size: 88, total_parameters: 22 },
    weight_map: {
      "b.weight": "model-00002-of-00002.safetensors",
      "a.weight": "model-00001-of-00002.safetensors",
    },
  });
  const expected = [
    "{",
    '  "metadata": {',
    '    "total_parameters": 22,',
    '    "total_size": 88',
    "  },",
    '  "weight_map": {',
    '    "a.weight": "model-00001-of-00002.safetensors",',
    '    "b.weight": "model-00002-of-00002.safetensors"',
    "  }",
    "}",
    "",
  ].join("\n");
  assert.equal(text, expected);
  assert.equal(
    shardIndexJson({ metadata: {}, weight_map: { "é": "x" } }),
    '{\n  "metadata": {},\n  "weight_map": {\n    "\\u00e9": "x"\n  }\n}\n',
  );
});

Deno.test("sharded save writes HF names and index; load reads it back exactly", async () => {
  const dir = await Deno.makeTempDir();
  const src = sample();
  const plan = await saveWeights(dir, src, { maxShardSize: 40 });
  assert.deepEqual(names(dir), [
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
    "model.safetensors.index.json",
  ]);
  assert.deepEqual(plan.shards.map((s) => s.names), [
    ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"],
    ["model.layers.0.mlp.up_proj.weight"],
    ["model.norm.weight", "lm_head.weight"],
  ]);
  const indexText = await Deno.readTextFile(`${dir}/model.safetensors.index.json`);
  assert.equal(indexText, shardIndexJson(plan.index!));
  assert.ok(
    indexText.startsWith('{\n  "metadata": {\n    "total_parameters": 22,\n    "total_size": 88\n  },\n'),
  );
  const index = await readShardIndex(`${dir}/model.safetensors.index.json`);
  assert.equal(index.weight_map["lm_head.weight"], "model-00003-of-00003.safetensors");
  const header = await readSafetensorsHeader(`${dir}/model-00003-of-00003.safetensors`);
  assert.deepEqual(header.metadata, { format: "pt" });
  assert.deepEqual(header.entries.map((e) => e.name), ["lm_head.weight", "model.norm.weight"]); // sorted in-file

  const back = await loadWeights(dir);
  assert.deepEqual([...back.keys()].sort(), [...src.keys()].sort());
  for (const [name, t] of src) {
    assert.deepEqual(back.get(name)!.shape, t.shape, name);
    assert.deepEqual(back.get(name)!.data, t.data, name);
  }
  // Direct paths to the index also work, and the filter applies across shards.
  const some = await loadWeights(`${dir}/model.safetensors.index.json`, {
    filter: (n) => n.startsWith("model."),
  });
  assert.deepEqual([...some.keys()].sort(), [...src.keys()].filter((n) => n.startsWith("model.")).sort());
  await Deno.remove(dir, { recursive: true });
});

Deno.test("each shard is opened exactly once while loading", async () => {
  const dir = await Deno.makeTempDir();
  await saveWeights(dir, sample(), { maxShardSize: 40 });
  const opens = new Map<string, number>();
  const realOpen = Deno.open;
  // deno-lint-ignore no-explicit-any
  (Deno as any).open = (path: string | URL, options?: Deno.OpenOptions) => {
    opens.set(String(path), (opens.get(String(path)) ?? 0) + 1);
    return realOpen(path, options);
  };
  try {
    await loadWeights(dir);
  } finally {
    // deno-lint-ignore no-explicit-any
    (Deno as any).open = realOpen;
  }
  assert.equal(opens.size, 3);
  for (const [path, n] of opens) assert.equal(n, 1, path);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("single-file save, bf16 output, and cleanup of a previous sharded save", async () => {
  const dir = await Deno.makeTempDir();
  await saveWeights(dir, sample(), { maxShardSize: 40 });
  await Deno.writeTextFile(`${dir}/config.json`, "{}");
  const plan = await saveWeights(dir, sample(), { dtype: "bfloat16" });
  assert.equal(plan.index, null);
  assert.deepEqual(names(dir), ["config.json", "model.safetensors"]);
  const back = await loadWeights(dir);
  // 10.25 is exact in bf16; 20.25 (0x41a20000) too; check one value that rounds.
  assert.equal(back.get("model.layers.0.self_attn.q_proj.weight")!.data[1], 10.25);
  assert.equal((await readSafetensorsHeader(`${dir}/model.safetensors`)).entries[0].dtype, "BF16");

  const rounding = new Map([["x", {
    dtype: "float32" as const,
    shape: [1],
    data: new Float32Array([1.00390625 + 1e-7]),
  }]]);
  await saveWeights(dir, rounding, { dtype: "bfloat16" });
  assert.equal((await loadWeights(dir)).get("x")!.data[0], f32FromBits(0x3f810000));

  // Sharding again removes the stale single file, which would otherwise shadow the index.
  await saveWeights(dir, sample(), { maxShardSize: 40 });
  assert.ok(!names(dir).includes("model.safetensors"));
  assert.equal((await loadWeights(dir)).size, 5);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("errors: missing weights, bad index, shard missing a tensor, shard path escaping the folder", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(loadWeights(dir), /no model\.safetensors or model\.safetensors\.index\.json found/);

  await writeSafetensors(`${dir}/model-00001-of-00001.safetensors`, { a: tensor([1], 0) });
  const writeIndex = (weightMap: Record<string, string>) =>
    Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );

  await writeIndex({ a: "model-00001-of-00001.safetensors", b: "model-00001-of-00001.safetensors" });
  await assert.rejects(
    loadWeights(dir),
    /model-00001-of-00001\.safetensors: tensor "b" listed in model\.safetensors\.index\.json is not in this shard/,
  );
  await writeIndex({ a: "model-00002-of-00002.safetensors" });
  await assert.rejects(
    loadWeights(dir),
    /shard model-00002-of-00002\.safetensors \(holding e\.g\. "a"\) not found/,
  );
  await writeIndex({ a: "../secret.safetensors" });
  await assert.rejects(
    loadWeights(dir),
    /weight_map\["a"\] = "\.\.\/secret\.safetensors" is not a plain file name/,
  );
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, `{"metadata": {}}`);
  await assert.rejects(loadWeights(dir), /missing "weight_map" object/);
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, `{"weight_map": `);
  await assert.rejects(loadWeights(dir), /model\.safetensors\.index\.json: not valid JSON/);
  await Deno.remove(dir, { recursive: true });
});
