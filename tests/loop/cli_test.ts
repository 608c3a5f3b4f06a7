/**
 * `deno task sample` as a process: --help, bad input (exit 2 for a wrong flag, 1 for a wrong file, each
 * named), a run killed mid-way and rerun to the uninterrupted file, and --merge of a sharded run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseSampleArgs } from "../../sample/main.ts";
import { loopSetup, sampleCli, writePrompts, writeRows } from "./_fixtures.ts";

async function withSetup(fn: (s: { dir: string; model: string }) => Promise<void>) {
  const s = await loopSetup();
  try {
    await fn(s);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
}

Deno.test("sample CLI: --help lists the options and exits 0", async () => {
  const r = await sampleCli(["--help"]);
  assert.equal(r.code, 0);
  for (
    const flag of ["--model", "--prompts", "--out", "--k", "--temperature", "--top-p", "--top-k", "--seed"]
  ) {
    assert.ok(r.out.includes(flag), flag);
  }
  for (const flag of ["--max-new-tokens", "--batch", "--shard", "--device", "--merge"]) {
    assert.ok(r.out.includes(flag));
  }
});

Deno.test("sample CLI: flags are parsed and checked before any work", () => {
  const p = parseSampleArgs([
    "--model",
    "m",
    "--prompts",
    "p.jsonl",
    "--out",
    "o.jsonl",
    "--shard",
    "1/4",
    "--k",
    "2",
  ]);
  assert.ok("sample" in p);
  assert.deepEqual(p.sample.shard, { index: 1, count: 4 });
  assert.equal(p.sample.k, 2);
  assert.equal(p.device, "auto");
  assert.deepEqual(parseSampleArgs(["--merge", "all.jsonl", "a.jsonl", "b.jsonl"]), {
    merge: "all.jsonl",
    inputs: ["a.jsonl", "b.jsonl"],
  });
  const base = ["--model", "m", "--prompts", "p", "--out", "o"];
  for (
    const [args, msg] of [
      [["--k", "0"], /--k must be a whole number ≥ 1, got 0/],
      [["--k", "two"], /--k must be a whole number ≥ 1, got "two"/],
      [["--shard", "4/4"], /--shard must be i\/n .* got "4\/4"/],
      [["--shard", "1of4"], /--shard must be i\/n/],
      [["--top-p", "0"], /--top-p must be in \(0, 1\]/],
      [["--temperature=-1"], /--temperature must be ≥ 0/],
      [["--batch", "0"], /--batch must be a whole number ≥ 1/],
      [["--device", "tpu"], /--device must be one of cpu, cuda, auto/],
      [["--bogus"], /unknown option --bogus/],
    ] as const
  ) {
    assert.throws(() => parseSampleArgs([...base, ...args]), msg, args.join(" "));
  }
  assert.throws(() => parseSampleArgs(["--model", "m", "--out", "o"]), /--prompts is required/);
  assert.throws(() => parseSampleArgs(["--merge", "all.jsonl"]), /needs the shard files/);
});

Deno.test("sample CLI: bad input exits non-zero naming what and where", async () => {
  await withSetup(async (s) => {
    const prompts = await writePrompts(s.dir, 2);
    const base = ["--model", s.model, "--out", join(s.dir, "o.jsonl"), "--device", "cpu"];
    let r = await sampleCli([...base, "--prompts", join(s.dir, "missing.jsonl")]);
    assert.equal(r.code, 1);
    assert.match(r.err, /^error: --prompts .*missing\.jsonl: no such file or folder/m);
    r = await sampleCli([...base, "--prompts", prompts, "--k", "0"]);
    assert.equal(r.code, 2);
    assert.match(r.err, /^error: --k must be a whole number ≥ 1, got 0/m);
    r = await sampleCli([...base, "--prompts", prompts, "--shard", "2/2"]);
    assert.equal(r.code, 2);
    assert.match(r.err, /^error: --shard must be i\/n/m);
    const bad = await writeRows(s.dir, "bad.jsonl", [{ prompt: "a" }, { prompt: { text: "b" } }]);
    r = await sampleCli([...base, "--prompts", bad]);
    assert.equal(r.code, 1);
    assert.match(r.err, /bad\.jsonl:2: field "prompt": expected a string or a list of messages/);
    r = await sampleCli([
      "--model",
      join(s.dir, "nowhere"),
      "--prompts",
      prompts,
      "--out",
      join(s.dir, "x.jsonl"),
    ]);
    assert.equal(r.code, 1);
    assert.match(r.err, /--model .*nowhere: no such folder; expected a Hugging Face model folder/);
  });
});

Deno.test("sample CLI: a killed run, rerun, ends as the uninterrupted one; --merge joins shards", async () => {
  await withSetup(async (s) => {
    const prompts = await writePrompts(s.dir, 40);
    const args = (out: string, ...more: string[]) => [
      "--model",
      s.model,
      "--prompts",
      prompts,
      "--out",
      join(s.dir, out),
      "--k",
      "2",
      "--max-new-tokens",
      "24",
      "--device",
      "cpu",
      "--threads",
      "1",
      ...more,
    ];
    let r = await sampleCli(args("full.jsonl", "--batch", "8"));
    assert.equal(r.code, 0, r.err);
    const full = await Deno.readTextFile(join(s.dir, "full.jsonl"));
    assert.equal(full.trimEnd().split("\n").length, 40);

    // killed (SIGKILL: no chance to clean up) once a few rows are out
    const killed = join(s.dir, "killed.jsonl");
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../sample/main.ts", import.meta.url).pathname,
        ...args("killed.jsonl", "--batch", "2"),
      ],
      stdout: "null",
      stderr: "null",
      // its temporary graph folder, which a killed process cannot remove, goes with the test's folder
      env: { TMPDIR: s.dir },
    }).spawn();
    let lines = 0;
    for (let t = 0; t < 3000 && lines < 3; t++) {
      await new Promise((res) => setTimeout(res, 20));
      lines = (await Deno.readTextFile(killed).catch(() => "")).split("\n").length - 1;
    }
    child.kill("SIGKILL");
    await child.status;
    const before = await Deno.readTextFile(killed);
    const had = before.split("\n").length - 1;
    assert.ok(had >= 3 && had < 40, `killed after ${had} rows`);
    r = await sampleCli(args("killed.jsonl", "--batch", "5"));
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, new RegExp(`resuming .* after ${had} of 40 prompts`));
    assert.equal(await Deno.readTextFile(killed), full);

    // shards through the CLI, merged by a glob
    for (let i = 0; i < 2; i++) {
      r = await sampleCli(args(`shard.${i}.jsonl`, "--shard", `${i}/2`));
      assert.equal(r.code, 0, r.err);
    }
    r = await sampleCli(["--merge", join(s.dir, "merged.jsonl"), join(s.dir, "shard.*.jsonl")]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /merged 2 shards, 40 prompts/);
    assert.equal(await Deno.readTextFile(join(s.dir, "merged.jsonl")), full);
    r = await sampleCli(["--merge", join(s.dir, "m2.jsonl"), join(s.dir, "shard.0.jsonl")]);
    assert.equal(r.code, 1);
    assert.match(r.err, /^error: shard 1\/2 missing/m);
  });
});
