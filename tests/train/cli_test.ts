import assert from "node:assert/strict";

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../train/main.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("train CLI: --help lists the options and exits 0", async () => {
  const r = await cli(["--help"]);
  assert.equal(r.code, 0);
  for (
    const flag of [
      "--model",
      "--data",
      "--loss",
      "--beta",
      "--alpha",
      "--k",
      "--lora-r",
      "--full",
      "--device",
      "--resume",
    ]
  ) {
    assert.ok(r.out.includes(flag), flag);
  }
});

Deno.test("train CLI: a bad value exits 2 naming the flag", async () => {
  const r = await cli(["--model", "m", "--data", "d.jsonl", "--beta", "-1"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /--beta must be > 0, got -1/);
});

Deno.test("train CLI: a missing data file exits 1 and names it", async () => {
  const dir = await Deno.makeTempDir();
  const r = await cli([
    "--model",
    dir,
    "--data",
    `${dir}/missing.jsonl`,
    "--out",
    `${dir}/run`,
    "--device",
    "cpu",
  ]);
  assert.equal(r.code, 1);
  assert.match(r.err, /^error: .*(config\.json|missing\.jsonl)/m);
  await Deno.remove(dir, { recursive: true });
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.test(`train CLI: ${signal} saves a checkpoint and exits`, async () => {
    const { tinySetup } = await import("./_fixtures.ts");
    const s = await tinySetup();
    const args = [
      "run",
      "-A",
      new URL("../../train/main.ts", import.meta.url).pathname,
      "--model",
      s.model,
      "--data",
      `${s.dir}/reward.jsonl`,
      "--out",
      `${s.dir}/run`,
      "--device",
      "cpu",
      "--epochs",
      "400",
      "--batch-size",
      "4",
      "--steps-per-run",
      "1",
      "--lora-r",
      "2",
      "--max-length",
      "48",
      "--max-prompt-length",
      "24",
      "--eval-fraction",
      "0",
    ];
    const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).spawn();
    const dec = new TextDecoder();
    let out = "";
    const reader = child.stdout.getReader();
    // wait until training has started, then interrupt
    while (!/step\s+\d+\/\d+/.test(out)) {
      const r = await reader.read();
      if (r.done) break;
      out += dec.decode(r.value);
    }
    child.kill(signal);
    const rest = (async () => {
      for (;;) {
        const r = await reader.read();
        if (r.done) return;
        out += dec.decode(r.value);
      }
    })();
    const err = dec.decode(await new Response(child.stderr).arrayBuffer());
    const status = await child.status;
    await rest;
    assert.equal(status.code, 130, `exit code (stderr: ${err})`);
    assert.match(err, /interrupted: saving a checkpoint/);
    assert.match(out, /stopped at step \d+ of \d+; checkpoint saved\. Continue with --resume/);
    const latest = (await Deno.readTextFile(`${s.dir}/run/checkpoints/latest`)).trim();
    assert.match(latest, /^checkpoint-\d+$/);
    await Deno.remove(s.dir, { recursive: true });
  });
}

Deno.test("train CLI: --max-length alone lowers the default prompt length; progress has an ETA from the first line", async () => {
  const { tinySetup } = await import("./_fixtures.ts");
  const s = await tinySetup();
  const r = await cli([
    "--model",
    s.model,
    "--data",
    `${s.dir}/reward.jsonl`,
    "--out",
    `${s.dir}/run`,
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--steps-per-run",
    "3",
    "--lora-r",
    "2",
    "--max-length",
    "40", // below the default --max-prompt-length 512
  ]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^note: --max-prompt-length is 39, not its default 512/m);
  const progress = r.out.split("\n").filter((l) => /^step\s+\d+\/\d+/.test(l));
  assert.ok(progress.length >= 2, r.out);
  // the first line (after the first chunk) already has a measured ETA; the last says how long it took
  assert.match(progress[0], /^step\s+\d+\/\d+ .*\| eta (\d+ms|\d\.\ds|\d+s|\d+m \d\ds) \|/);
  assert.doesNotMatch(progress[0], /eta 0s/);
  assert.match(progress[progress.length - 1], /\| took (\d+ms|\d\.\ds|\d+s|\d+m \d\ds) \|/);
  assert.doesNotMatch(progress[progress.length - 1], /took 0s/);
  await Deno.remove(s.dir, { recursive: true });
});
