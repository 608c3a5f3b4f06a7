import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createRunFolder,
  findLatestRun,
  runPaths,
  sanitizeRunName,
  timestamp,
  writeJsonAtomic,
} from "../../lib/train/run_folder.ts";

const when = new Date(2024, 5, 1, 15, 30, 7); // local time 2024-06-01 15:30:07

Deno.test("timestamp is YYYYmmdd-HHMMSS in local time", () => {
  assert.equal(timestamp(when), "20240601-153007");
  assert.equal(timestamp(new Date(2025, 11, 31, 9, 5, 0)), "20251231-090500");
});

Deno.test("run names are made safe for folder names", () => {
  assert.equal(sanitizeRunName("nca"), "nca");
  assert.equal(sanitizeRunName("my run/β=0.01"), "my-run-0.01");
  assert.equal(sanitizeRunName("../../etc"), "etc");
  assert.equal(sanitizeRunName("///"), "run");
});

Deno.test("createRunFolder makes a unique stamped folder, with suffixes in the same second", async () => {
  const base = await Deno.makeTempDir();
  try {
    const a = await createRunFolder(join(base, "runs"), "nca", when);
    const b = await createRunFolder(join(base, "runs"), "nca", when);
    const c = await createRunFolder(join(base, "runs"), "nca", when);
    assert.equal(a.dir, join(base, "runs", "nca-20240601-153007"));
    assert.equal(b.dir, join(base, "runs", "nca-20240601-153007-2"));
    assert.equal(c.dir, join(base, "runs", "nca-20240601-153007-3"));
    assert.ok((await Deno.stat(a.dir)).isDirectory);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("runPaths names every file of a run inside its folder", () => {
  const p = runPaths("runs/x");
  assert.deepEqual(p, {
    dir: "runs/x",
    config: join("runs/x", "config.json"),
    metrics: join("runs/x", "metrics.jsonl"),
    summary: join("runs/x", "summary.json"),
    reference: join("runs/x", "reference.json"),
    charts: join("runs/x", "charts"),
    checkpoints: join("runs/x", "checkpoints"),
    policy: join("runs/x", "policy"),
  });
});

Deno.test("writeJsonAtomic writes pretty JSON and leaves no temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "summary.json");
    await writeJsonAtomic(path, { a: 1, b: [1, 2], c: NaN });
    assert.equal(
      await Deno.readTextFile(path),
      '{\n  "a": 1,\n  "b": [\n    1,\n    2\n  ],\n  "c": null\n}\n',
    );
    await writeJsonAtomic(path, { a: 2 });
    assert.deepEqual(JSON.parse(await Deno.readTextFile(path)), { a: 2 });
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), ["summary.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("findLatestRun picks the newest run with summary.json or policy/, by name stamp", async () => {
  const base = await Deno.makeTempDir();
  try {
    assert.equal(await findLatestRun(join(base, "missing")), undefined);
    assert.equal(await findLatestRun(base), undefined);
    const old = await createRunFolder(base, "dpo", new Date(2024, 0, 1, 0, 0, 0));
    const mid = await createRunFolder(base, "nca", new Date(2024, 0, 2, 0, 0, 0));
    const mid2 = await createRunFolder(base, "nca", new Date(2024, 0, 2, 0, 0, 0));
    const unfinished = await createRunFolder(base, "nca", new Date(2024, 0, 3, 0, 0, 0));
    await Deno.writeTextFile(old.summary, "{}");
    await Deno.mkdir(mid.policy);
    assert.equal(await findLatestRun(base), mid.dir);
    await Deno.writeTextFile(mid2.summary, "{}");
    assert.equal(await findLatestRun(base), mid2.dir); // -2 is newer than the unsuffixed one
    assert.equal(await findLatestRun(base, "dpo"), old.dir);
    assert.equal(await findLatestRun(base, "ipo"), undefined);
    await Deno.writeTextFile(join(base, "stray-file"), "");
    await Deno.writeTextFile(unfinished.metrics, "");
    assert.equal(await findLatestRun(base), mid2.dir); // metrics alone is not a finished run
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
