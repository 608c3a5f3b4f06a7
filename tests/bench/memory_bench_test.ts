/**
 * The scale benchmarks' arguments and a tiny run of each on the CPU: bench/memory.ts (the CLI trains,
 * exports and serves a random bf16 folder, one `/v1/logprobs` request), bench/big_throughput.ts and
 * bench/decode.ts; and the
 * PyTorch baseline's argument checks (it runs on the GPU machine only).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { UsageError } from "../../bench/_common.ts";
import { main as big, parseBigArgs, USAGE as BIG_USAGE } from "../../bench/big_throughput.ts";
import { parseMemoryArgs, rewardData } from "../../bench/memory.ts";
import { main as decode, parseDecodeArgs, USAGE as DECODE_USAGE } from "../../bench/decode.ts";
import { randomModelFolder } from "../../bench/_shapes.ts";
import { loadModelFolder } from "../../lib/model/model_folder.ts";
import { collector } from "./_helpers.ts";

Deno.test("bench/memory: flags, and its reward data", () => {
  const a = parseMemoryArgs([
    "--shape",
    "tinyllama-1.1b",
    "--prompts",
    "2",
    "--checkpointing",
    "on",
    "--serve",
  ]);
  assert.equal(a.shape, "tinyllama-1.1b");
  assert.equal(a.prompts, 2);
  assert.equal(a.k, 4);
  assert.equal(a.checkpointing, "on");
  assert.equal(a.serve, true);
  assert.throws(
    () => parseMemoryArgs(["--shape", "gpt-5"]),
    (e) => e instanceof UsageError && /--shape/.test(e.message),
  );
  assert.throws(
    () => parseMemoryArgs(["--shape", "tiny", "--checkpointing", "maybe"]),
    (e) => e instanceof UsageError && /--checkpointing must be on, off or auto/.test(e.message),
  );
  assert.throws(
    () => parseMemoryArgs(["--shape", "tiny", "--k", "1"]),
    (e) => e instanceof UsageError && /--k/.test(e.message),
  );
  const rows = rewardData(3, 4, 5, 7).trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(rows.length, 3);
  assert.equal(rows[0].prompt.split(" ").length, 5);
  assert.equal(rows[0].responses.length, 4);
  assert.equal(rows[0].responses[0].text.split(" ").length, 7);
});

Deno.test("bench/memory: a tiny shape through train, export and serve, with the memory report", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_memory_" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "bench/memory.ts",
        "--shape",
        "tiny",
        "--prompts",
        "1",
        "--k",
        "2",
        "--tokens",
        "6",
        "--prompt-tokens",
        "4",
        "--steps",
        "1",
        "--checkpointing",
        "on",
        "--serve",
        "--models",
        dir,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.ok(out.success, `${stdout}\n${new TextDecoder().decode(out.stderr)}`);
    const rec = JSON.parse(stdout.trim().split("\n").at(-1)!);
    assert.equal(rec.bench, "memory");
    assert.equal(rec.gradient_checkpointing, true);
    for (const phase of ["load", "reference", "train", "export", "serve"]) {
      assert.ok(rec.peak_gib[phase] > 0, `peak of ${phase}: ${JSON.stringify(rec.peak_gib)}`);
    }
    assert.ok(rec.estimate_gib.total > 0);
    assert.ok(Number.isFinite(rec.estimate_vs_training_peak));
    assert.ok(rec.log.some((l: string) => l.startsWith("memory estimate:")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench/big_throughput: flags, --make-only, and a tiny CPU run", async () => {
  const c = collector();
  await big(["--help"], c.print);
  assert.equal(c.lines[0], BIG_USAGE);
  assert.throws(
    () => parseBigArgs(["--shape", "x"]),
    (e) => e instanceof UsageError && /--shape/.test(e.message),
  );
  assert.throws(
    () => parseBigArgs(["--shape", "tiny", "--gradient-checkpointing", "yes"]),
    (e) => e instanceof UsageError && /--gradient-checkpointing/.test(e.message),
  );
  assert.throws(
    () => parseBigArgs(["--shape", "tiny", "--precision", "bf16"]),
    (e) => e instanceof UsageError && /--precision/.test(e.message),
  );
  assert.deepEqual(
    [parseBigArgs(["--shape", "mistral-7b"])].map((a) => [a.device, a.prompts, a.k, a.seq]),
    [["cuda", 4, 4, 1024]],
  );
  const dir = await Deno.makeTempDir({ prefix: "bench_big_" });
  try {
    const made = collector();
    await big(["--shape", "tiny", "--models", dir, "--make-only"], made.print);
    assert.equal(made.lines[0], join(dir, "tiny-bfloat16"));
    const folder = await loadModelFolder(made.lines[0]);
    assert.ok([...folder.stored.values()].every((t) => t.dtype === "BF16"));
    assert.equal(await randomModelFolder(dir, "tiny"), made.lines[0], "made once, then reused");
    const run = collector();
    const rec = await big([
      "--shape",
      "tiny",
      "--models",
      dir,
      "--device",
      "cpu",
      "--prompts",
      "1",
      "--k",
      "2",
      "--seq",
      "16",
      "--steps",
      "1",
      "--warmup",
      "0",
      "--gradient-checkpointing",
      "on",
    ], run.print);
    assert.ok(rec && rec.tokens_per_s > 0 && rec.peak_memory_gib > 0 && Number.isFinite(rec.last_loss));
    assert.equal(rec!.gradient_checkpointing, true);
    assert.equal(JSON.parse(run.lines[0]).bench, "big_throughput");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench/torch_big_baseline.py: its flags are checked before PyTorch is needed", async () => {
  const py = async (...args: string[]) => {
    try {
      return await new Deno.Command("python3", {
        args: ["bench/torch_big_baseline.py", ...args],
        stderr: "piped",
        stdout: "piped",
      })
        .output();
    } catch {
      return undefined; // no python3 here
    }
  };
  const help = await py("--help");
  if (!help) return;
  assert.ok(help.success);
  assert.match(new TextDecoder().decode(help.stdout), /--config CONFIG/);
  const bad = await py("--config", "c.json", "--k", "0");
  assert.equal(bad!.code, 2);
  assert.match(new TextDecoder().decode(bad!.stderr), /--k must be at least 1/);
});

Deno.test("bench/decode: flags, and a tiny run through both backends and samplers, same tokens", async () => {
  const c = collector();
  assert.deepEqual(await decode(["--help"], c.print), []);
  assert.equal(c.lines[0], DECODE_USAGE);
  assert.throws(
    () => parseDecodeArgs(["--shape", "gpt5"]),
    (e) => e instanceof UsageError && /"gpt5"/.test(e.message),
  );
  assert.throws(
    () => parseDecodeArgs(["--batch", "1,0"]),
    (e) => e instanceof UsageError && /--batch/.test(e.message),
  );
  assert.throws(
    () => parseDecodeArgs(["--backend", "web"]),
    (e) => e instanceof UsageError && /"web"/.test(e.message),
  );
  assert.throws(
    () => parseDecodeArgs(["--sampler", "gpu"]),
    (e) => e instanceof UsageError && /"gpu"/.test(e.message),
  );
  assert.throws(
    () => parseDecodeArgs(["--temperature", "-1"]),
    (e) => e instanceof UsageError && /--temperature/.test(e.message),
  );
  const a = parseDecodeArgs([]);
  assert.deepEqual([a.shapes, a.batches, a.tokens, a.backends, a.folds, a.samplers, a.temperature], [
    ["smollm-135m", "qwen2.5-0.5b"],
    [1, 4],
    32,
    ["node", "ffi"],
    ["off", "on"],
    ["host"],
    0,
  ]);
  const dir = await Deno.makeTempDir({ prefix: "bench_decode_" });
  try {
    const run = collector();
    const recs = await decode(
      [
        "--shape",
        "tiny",
        "--batch",
        "1,2",
        "--tokens",
        "4",
        "--prompt",
        "3",
        "--fold",
        "on",
        "--sampler",
        "host,graph",
        "--temperature",
        "1",
        "--models",
        dir,
      ],
      run.print,
    );
    assert.deepEqual(recs.map((r) => `${r.batch} ${r.backend} ${r.sampler}`), [
      "1 node host",
      "1 node graph",
      "1 ffi host",
      "1 ffi graph",
      "2 node host",
      "2 node graph",
      "2 ffi host",
      "2 ffi graph",
    ]);
    for (const r of recs) {
      assert.ok((r.tokens_per_s as number) > 0 && r.steps === 4);
      // seeded rows: every backend and sampler draws the same tokens
      assert.equal(r.same_tokens_as_first_case, true);
      assert.equal(r.fold_weights, true);
      assert.equal(r.temperature, 1);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
