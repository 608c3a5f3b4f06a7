/**
 * `sampleToFile` / `mergeSamples` on a tiny random Llama: seeded output, independence from the batch size,
 * resumption, sharding and merging, stop ids, and the three kinds of model folder giving the same samples.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { mergeSamples, metaPath, type SampleOptions, sampleToFile } from "../../lib/loop/sample.ts";
import { promptJobs, sampleRows } from "../../lib/loop/sample_rows.ts";
import { resolveSettings, sampleSeed } from "../../lib/loop/sample_settings.ts";
import { readPrompts } from "../../lib/loop/prompts.ts";
import { exportForServing } from "../../lib/model/export.ts";
import { loadModelFolder, readModelWeights, saveModelFolder } from "../../lib/model/model_folder.ts";
import { modelName, openGenerator } from "../../lib/model/open.ts";
import { tokenizePrompt } from "../../lib/data/tokenize.ts";
import { generate } from "../../lib/model/generate.ts";
import { loopSetup, promptText, withSetup, writePrompts } from "./_fixtures.ts";

const quiet = () => {};

/** Samples into `dir/name` with small settings (overridable); returns the file's text. */
async function run(
  s: { dir: string; model: string; prompts: string },
  name: string,
  over: Partial<SampleOptions> = {},
): Promise<string> {
  const out = join(s.dir, name);
  await sampleToFile({
    model: s.model,
    prompts: s.prompts,
    out,
    k: 3,
    maxNewTokens: 10,
    batch: 4,
    device: "cpu",
    threads: 1,
    log: quiet,
    ...over,
  });
  return await Deno.readTextFile(out);
}

const rowsOf = (text: string) => text.trimEnd().split("\n").map((l) => JSON.parse(l));

Deno.test("sample: one row per prompt in order, K responses, the sampler's settings", async () => {
  await withSetup(async (s) => {
    const rows = rowsOf(await run(s, "a.jsonl"));
    assert.equal(rows.length, 11);
    rows.forEach((r, i) => {
      assert.equal(r.id, i);
      assert.equal(typeof r.prompt, "string");
      assert.equal(r.responses.length, 3);
      for (const resp of r.responses) {
        assert.equal(typeof resp.content, "string");
        assert.ok(resp.tokens >= 1 && resp.tokens <= 10);
        assert.ok(resp.finish_reason === "stop" || resp.finish_reason === "length");
        if (resp.finish_reason === "length") assert.equal(resp.tokens, 10);
      }
      assert.deepEqual(r.sampler, { model: "model", temperature: 1, top_p: 1, top_k: 0, seed: 0 });
    });
    const contents = rows.flatMap((r) => r.responses.map((x: { content: string }) => x.content));
    assert.ok(new Set(contents).size > 20, "the samples vary");
  });
});

Deno.test("sample: a seed reproduces the file; another seed changes it", async () => {
  await withSetup(async (s) => {
    const a = await run(s, "a.jsonl");
    const b = await run(s, "b.jsonl");
    assert.equal(a, b);
    const c = await run(s, "c.jsonl", { seed: 1 });
    assert.notEqual(c, a);
    assert.equal(rowsOf(c)[0].sampler.seed, 1);
  });
});

Deno.test("sample: the batch size does not change the output", async () => {
  await withSetup(async (s) => {
    const ref = await run(s, "b4.jsonl", { batch: 4 });
    for (const batch of [1, 5, 64]) {
      assert.equal(await run(s, `b${batch}.jsonl`, { batch }), ref, `batch ${batch}`);
    }
  });
});

Deno.test("sample: each sample's seed comes from (seed, prompt id, j)", () => {
  const seeds = new Set<number>();
  for (const id of [0, 1, "0", "a"]) for (let j = 0; j < 4; j++) seeds.add(sampleSeed(0, id, j));
  assert.equal(seeds.size, 16, 'id 0 and id "0" differ too');
  assert.equal(sampleSeed(7, "x", 2), sampleSeed(7, "x", 2));
  assert.notEqual(sampleSeed(7, "x", 2), sampleSeed(8, "x", 2));
});

Deno.test("sample: a model is named by its folder, a Hugging Face cache snapshot by its repository", () => {
  assert.equal(modelName("/data/models/zephyr-7b-sft"), "zephyr-7b-sft");
  assert.equal(
    modelName("/root/.cache/huggingface/hub/models--HuggingFaceH4--mistral-7b-sft-beta/snapshots/3bac5"),
    "HuggingFaceH4/mistral-7b-sft-beta",
  );
});

Deno.test("sample: a partial last line is cut and the run continues to the uninterrupted file", async () => {
  await withSetup(async (s) => {
    const full = await run(s, "full.jsonl");
    const out = join(s.dir, "cut.jsonl");
    await Deno.copyFile(metaPath(join(s.dir, "full.jsonl")), metaPath(out));
    // four whole lines and half of the fifth, as a crash mid-write leaves it
    const lines = full.split("\n");
    const partial = lines.slice(0, 4).join("\n") + "\n" + lines[4].slice(0, 25);
    await Deno.writeTextFile(out, partial);
    const notes: string[] = [];
    const r = await sampleToFile({
      model: s.model,
      prompts: s.prompts,
      out,
      k: 3,
      maxNewTokens: 10,
      batch: 7,
      device: "cpu",
      log: (l) => notes.push(l),
    });
    assert.equal(r.resumed, 4);
    assert.equal(await Deno.readTextFile(out), full);
    assert.ok(notes.some((n) => /cut a partial last line/.test(n)), notes.join("\n"));
    assert.ok(notes.some((n) => /resuming .* after 4 of 11/.test(n)), notes.join("\n"));
    // once more: nothing to do, nothing written
    const again = await sampleToFile({
      model: s.model,
      prompts: s.prompts,
      out,
      k: 3,
      maxNewTokens: 10,
      log: quiet,
    });
    assert.equal(again.done, again.resumed);
    assert.equal(await Deno.readTextFile(out), full);
  });
});

Deno.test("sample: a run stopped by its signal writes whole rows, and resumes to the same file", async () => {
  await withSetup(async (s) => {
    const full = await run(s, "full.jsonl");
    const stop = new AbortController();
    const out = join(s.dir, "stopped.jsonl");
    const first = await sampleToFile({
      model: s.model,
      prompts: s.prompts,
      out,
      k: 3,
      maxNewTokens: 10,
      batch: 4,
      device: "cpu",
      signal: stop.signal,
      log: quiet,
      onProgress: (p) => p.done >= 2 && stop.abort(),
    });
    assert.ok(first.interrupted);
    const written = await Deno.readTextFile(out);
    assert.ok(written.endsWith("\n") && full.startsWith(written) && written.length < full.length);
    await run(s, "stopped.jsonl", { batch: 3 });
    assert.equal(await Deno.readTextFile(out), full);
  });
});

Deno.test("sample: other settings for the same file are refused, naming what differs", async () => {
  await withSetup(async (s) => {
    await run(s, "a.jsonl");
    for (
      const [over, what] of [
        [{ k: 2 }, /k: 3 → 2/],
        [{ seed: 5 }, /seed: 0 → 5/],
        [{ temperature: 0.5 }, /temperature: 1 → 0.5/],
        [{ shard: { index: 0, count: 2 } }, /shard\.count: 1 → 2/],
      ] as const
    ) {
      await assert.rejects(run(s, "a.jsonl", over), (e: Error) => {
        assert.match(e.message, /a\.jsonl was sampled with other settings/);
        assert.match(e.message, what);
        return true;
      });
    }
    // another model (other weights, same shapes)
    const other = join(s.dir, "other");
    const m = await loadModelFolder(s.model);
    const w = await readModelWeights(m);
    for (const t of w.values()) t.data.forEach((v, i) => (t.data[i] = v * 1.5));
    await exportForServing(other, { cfg: m.config, weights: w, tokenizerDir: s.model });
    await assert.rejects(run(s, "a.jsonl", { model: other }), /model: "model" → "other"/);
    // the same folder retrained in place (same name, same shapes): its fingerprint tells
    await saveModelFolder(s.model, m.config, w);
    await assert.rejects(run(s, "a.jsonl"), /model_fingerprint: "sha256:/);
    // a file this command did not write
    await Deno.writeTextFile(join(s.dir, "foreign.jsonl"), '{"x": 1}\n');
    await assert.rejects(
      run(s, "foreign.jsonl"),
      /foreign\.jsonl exists and has no foreign\.jsonl\.meta\.json/,
    );
  });
});

Deno.test("sample: shards merged are the unsharded file, byte for byte", async () => {
  await withSetup(async (s) => {
    const full = await run(s, "full.jsonl");
    const n = 3;
    for (let i = 0; i < n; i++) {
      await run(s, `part.${i}.jsonl`, { shard: { index: i, count: n }, batch: 2 + i });
    }
    assert.equal(
      rowsOf(await Deno.readTextFile(join(s.dir, "part.1.jsonl"))).map((r) => r.id).join(),
      "1,4,7,10",
    );
    // by name, in any order
    const merged = join(s.dir, "merged.jsonl");
    const r = await mergeSamples(merged, [2, 0, 1].map((i) => join(s.dir, `part.${i}.jsonl`)));
    assert.deepEqual([r.rows, r.shards], [11, 3]);
    assert.equal(await Deno.readTextFile(merged), full);
    const [mergedMeta, fullMeta] = await Promise.all(
      [merged, join(s.dir, "full.jsonl")].map(async (f) => JSON.parse(await Deno.readTextFile(metaPath(f)))),
    );
    assert.deepEqual(mergedMeta, fullMeta);
    // by glob: the sidecars and the output itself are left out
    const globbed = join(s.dir, "part.merged.jsonl");
    await mergeSamples(globbed, [join(s.dir, "part.*")]);
    assert.equal(await Deno.readTextFile(globbed), full);
  });
});

Deno.test("merge: refuses a missing, repeated, unfinished or altered shard", async () => {
  await withSetup(async (s) => {
    const n = 3;
    const part = (i: number) => join(s.dir, `part.${i}.jsonl`);
    for (let i = 0; i < n; i++) await run(s, `part.${i}.jsonl`, { shard: { index: i, count: n } });
    const out = join(s.dir, "merged.jsonl");
    await assert.rejects(mergeSamples(out, [part(0), part(2)]), /shard 1\/3 missing/);
    await assert.rejects(
      mergeSamples(out, [part(0), part(1), part(1), part(2)]),
      /shard 1\/3 is given twice/,
    );
    await assert.rejects(mergeSamples(out, [part(0), part(1), out]), /no such file/);

    const text = await Deno.readTextFile(part(1));
    const lines = text.trimEnd().split("\n");
    await Deno.writeTextFile(part(1), lines.slice(0, -1).join("\n") + "\n"); // a prompt missing
    await assert.rejects(
      mergeSamples(out, [part(0), part(1), part(2)]),
      /has 3 of its 4 prompts: unfinished/,
    );
    await Deno.writeTextFile(part(1), [...lines, lines[0]].join("\n") + "\n"); // a prompt twice
    await assert.rejects(mergeSamples(out, [part(0), part(1), part(2)]), /5 rows for 4 prompts/);
    await Deno.writeTextFile(part(1), [lines[0], lines[0], ...lines.slice(2)].join("\n") + "\n"); // one replaced
    await assert.rejects(
      mergeSamples(out, [part(0), part(1), part(2)]),
      /not the prompts the shards were sampled/,
    );
    await Deno.writeTextFile(part(1), text);

    await run(s, "other.jsonl", { shard: { index: 1, count: n }, seed: 9 });
    await assert.rejects(mergeSamples(out, [part(0), join(s.dir, "other.jsonl"), part(2)]), /seed: 0 → 9/);
    await Deno.remove(metaPath(part(2)));
    await assert.rejects(
      mergeSamples(out, [part(0), part(1), part(2)]),
      /part\.2\.jsonl: no part\.2\.jsonl\.meta\.json/,
    );
    assert.equal(await Deno.stat(out).then(() => true, () => false), false, "nothing written");
  });
});

Deno.test("sample: a plain HF folder, its exported folder and a run folder give the same samples", async () => {
  await withSetup(async (s) => {
    const hf = rowsOf(await run(s, "hf.jsonl"));
    const m = await loadModelFolder(s.model);
    const weights = await readModelWeights(m);
    const exported = join(s.dir, "exported");
    await exportForServing(exported, { cfg: m.config, weights, tokenizerDir: s.model });
    await Deno.mkdir(join(s.dir, "run"));
    await exportForServing(join(s.dir, "run", "policy"), { cfg: m.config, weights, tokenizerDir: s.model });
    const fromExport = rowsOf(await run(s, "exported.jsonl", { model: exported }));
    const fromRun = rowsOf(await run(s, "run.jsonl", { model: join(s.dir, "run") }));
    assert.deepEqual(fromExport.map((r) => r.responses), hf.map((r) => r.responses));
    assert.deepEqual(fromRun.map((r) => r.responses), hf.map((r) => r.responses));
    assert.equal(fromRun[0].sampler.model, "run", "a run is named by its folder");
    // the temporary graph folder of the plain folder is gone
    const left = [...Deno.readDirSync(s.model)].filter((e) => e.name.startsWith(".nca-graphs"));
    assert.deepEqual(left, []);
  });
});

Deno.test("sample: generation_config.json's stop ids end rows; its sampling defaults are used", async () => {
  await withSetup(async (s) => {
    // the greedy continuation of the first prompt, without stop ids of its own
    const d = await openGenerator(s.model, { device: "cpu", threads: 1, log: quiet, withTokenizer: true });
    const ids = tokenizePrompt(d.tokenizer, [{ role: "user", content: promptText(0) }]);
    const { rows } = await generate(d.session, [ids], { maxNewTokens: 10, temperature: 0 });
    await d.close();
    const greedy = rows[0].tokens;
    const at = greedy.findIndex((t, i) => i >= 2 && !greedy.slice(0, i).includes(t) && !d.eosIds.includes(t));
    assert.ok(at > 0, `a token to stop at in ${greedy}`);
    await Deno.writeTextFile(
      join(s.model, "generation_config.json"),
      JSON.stringify({ eos_token_id: [1, greedy[at]], temperature: 0 }),
    );
    const one = await writePrompts(s.dir, 1, "one.jsonl");
    const [row] = rowsOf(await run(s, "stopped.jsonl", { prompts: one, k: 2 }));
    assert.equal(row.sampler.temperature, 0, "temperature from generation_config.json");
    const want = { content: d.codec.decode(greedy.slice(0, at)), tokens: at + 1, finish_reason: "stop" };
    assert.deepEqual(row.responses, [want, want]);
    const meta = JSON.parse(await Deno.readTextFile(metaPath(join(s.dir, "stopped.jsonl"))));
    assert.ok(meta.stop_ids.includes(greedy[at]));
  });
});

Deno.test("sample: tokens are drawn in ONNX Runtime, the host sampler's for the same seeds", async () => {
  await withSetup(async (s) => {
    await using d = await openGenerator(s.model, {
      device: "cpu",
      threads: 1,
      log: quiet,
      withTokenizer: true,
    });
    {
      const { prompts } = await readPrompts(s.prompts);
      const settings = resolveSettings({ k: 2, maxNewTokens: 8, topP: 0.9, topK: 50 }, d);
      const jobs = promptJobs(d, prompts.slice(0, 4), settings);
      const got: number[][] = [];
      for await (const b of sampleRows(d, jobs, settings, { batch: 8, ids: true })) {
        for (const row of b.rows) got.push(...row.responses.map((r) => r.ids!));
      }
      // the host sampler (no graph sampler given) with each sample's seed
      const { rows } = await generate(d.session, jobs.flatMap((j) => [j.ids, j.ids]), {
        maxNewTokens: 8,
        temperature: settings.temperature,
        topP: 0.9,
        topK: 50,
        eosTokenIds: d.eosIds,
        padTokenId: d.padId,
        seeds: jobs.flatMap((j) => [0, 1].map((k) => sampleSeed(settings.seed, j.row.id, k))),
      });
      assert.deepEqual(got, rows.map((r) => r.tokens));
    }
  });
});

Deno.test("sample: a graph folder left by a killed run is removed by the next; live ones are kept", async () => {
  const s = await loopSetup();
  const parent = join(s.dir, "graphs");
  await Deno.mkdir(parent);
  // a process id no process has (above Linux's pid_max), and this process's own
  const dead = join(parent, ".nca-graphs-4194305-dead"), mine = join(parent, `.nca-graphs-${Deno.pid}-live`);
  for (const d of [dead, mine]) await Deno.mkdir(d);
  await Deno.writeTextFile(join(dead, "model.onnx"), "left by a SIGKILL");
  const generator = await openGenerator(s.model, { graphParents: [parent], log: () => {} });
  await generator.close();
  const left = [...Deno.readDirSync(parent)].map((e) => e.name).sort();
  // without /proc (Deno asks --allow-all for it) and without `ps`, no process can be looked up: all is kept
  const canTell =
    await new Deno.Command("ps", { args: ["-p", String(Deno.pid)], stdout: "null", stderr: "null" })
      .output().then((r) => r.code === 0, () => false) ||
    await Deno.stat("/proc/self").then(() => true, () => false);
  const expected = canTell
    ? [`.nca-graphs-${Deno.pid}-live`]
    : [".nca-graphs-4194305-dead", `.nca-graphs-${Deno.pid}-live`];
  assert.deepEqual(left, expected.sort());
  await Deno.remove(s.dir, { recursive: true });
});
