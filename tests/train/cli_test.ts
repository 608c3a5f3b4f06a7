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
