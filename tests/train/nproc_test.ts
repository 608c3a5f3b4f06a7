/**
 * `deno task train --nproc N`: the arguments each rank gets, the commands started (mpirun on the CPU,
 * torchrun's variables on CUDA), what is refused, and one real `--nproc 2` run on the CPU where mpirun is
 * installed.
 */
import assert from "node:assert/strict";
import { freePortPair, nprocCommands, rankArgs, TRAIN_RUN_FLAGS } from "../../lib/train/nproc.ts";
import { findMpirun } from "../../lib/runtime/comm/mpi.ts";
import { parseTrainOptions } from "../../lib/train/options.ts";
import { tinySetup } from "./_fixtures.ts";

const MPIRUN = findMpirun();
if (!MPIRUN) console.log("nproc_test: mpirun is not installed: the real --nproc 2 run is skipped");
const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("--nproc: parsed as a whole number ≥ 1, absent by default", () => {
  const base = ["--model", "m", "--data", "d.jsonl"];
  const two = parseTrainOptions([...base, "--nproc", "2"]);
  assert.ok(!("help" in two));
  assert.equal(two.nproc, 2);
  const none = parseTrainOptions(base);
  assert.ok(!("help" in none));
  assert.equal(none.nproc, undefined);
  assert.throws(() => parseTrainOptions([...base, "--nproc", "0"]), /--nproc/);
});

Deno.test("--nproc: each rank's arguments drop --nproc and --device, then add the device and --nproc 1", () => {
  assert.deepEqual(
    rankArgs(
      ["--model", "m", "--nproc", "4", "--device", "auto", "--zero", "1", "--nproc=3", "--device=cpu"],
      "cpu",
    ),
    ["--model", "m", "--zero", "1", "--device", "cpu", "--nproc", "1"],
  );
});

Deno.test("--nproc on the CPU: mpirun -np N --oversubscribe, Open MPI's root consent only as root", () => {
  const o = { nproc: 2, device: "cpu" as const, argv: ["--model", "m", "--nproc", "2"], deno: "/bin/deno" };
  const [p] = nprocCommands({ ...o, mpirun: "/usr/bin/mpirun", main: "/x/train/main.ts", root: false });
  assert.equal(p.command, "/usr/bin/mpirun");
  assert.deepEqual(p.args, [
    ...["-np", "2", "--oversubscribe", "--bind-to", "none", "/bin/deno", "run", ...TRAIN_RUN_FLAGS],
    ...["/x/train/main.ts", "--model", "m", "--device", "cpu", "--nproc", "1"],
  ]);
  assert.deepEqual(p.env, {});
  const [r] = nprocCommands({ ...o, mpirun: "mpirun", root: true, env: { OMPI_ALLOW_RUN_AS_ROOT: "1" } });
  assert.deepEqual(r.env, {
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1",
    OMPI_MCA_btl_vader_single_copy_mechanism: "none",
  });
  assert.throws(() => nprocCommands(o), /mpirun is not on PATH: install Open MPI/);
  assert.throws(() => nprocCommands({ ...o, nproc: 1, mpirun: "mpirun" }), /N ≥ 2, got 1/);
});

Deno.test("--nproc on CUDA: N processes with torchrun's variables, MASTER_ADDR 127.0.0.1 and the port given", () => {
  const ps = nprocCommands({
    nproc: 3,
    device: "cuda",
    argv: ["--full"],
    deno: "deno",
    main: "m.ts",
    port: 4100,
  });
  assert.equal(ps.length, 3);
  for (const [r, p] of ps.entries()) {
    assert.equal(p.command, "deno");
    assert.equal(p.rank, r);
    assert.deepEqual(p.args, [
      "run",
      ...TRAIN_RUN_FLAGS,
      "m.ts",
      "--full",
      "--device",
      "cuda",
      "--nproc",
      "1",
    ]);
    assert.deepEqual(p.env, {
      RANK: String(r),
      WORLD_SIZE: "3",
      LOCAL_RANK: String(r),
      LOCAL_WORLD_SIZE: "3",
      MASTER_ADDR: "127.0.0.1",
      MASTER_PORT: "4100",
    });
  }
  const port = freePortPair();
  assert.ok(port > 0 && port < 65535);
});

Deno.test("--nproc under a launcher is refused, naming the rank", async () => {
  const o = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "train/main.ts",
      "--model",
      "m",
      "--data",
      "d.jsonl",
      "--nproc",
      "2",
      "--device",
      "cpu",
    ],
    cwd: ROOT,
    env: { RANK: "1", WORLD_SIZE: "2", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(o.stderr);
  assert.equal(o.code, 1, err);
  assert.match(err, /--nproc 2 starts the ranks itself, and this process is already rank 1\/2 of torchrun/);
});

Deno.test({
  name: "deno task train --nproc 2 on the CPU: two ranks under mpirun, rank 0 alone reports",
  ignore: !MPIRUN,
  fn: async () => {
    const s = await tinySetup();
    try {
      const o = await new Deno.Command(Deno.execPath(), {
        args: [
          ...["task", "train", "--model", s.model, "--data", `${s.dir}/reward.jsonl`, "--loss", "nca"],
          ...["--max-length", "48", "--max-prompt-length", "24", "--lora-r", "4", "--device", "cpu"],
          ...["--batch-size", "2", "--max-steps", "2", "--eval-fraction", "0.17", "--quiet"],
          ...["--nproc", "2", "--zero", "1", "--out", `${s.dir}/run`],
        ],
        cwd: ROOT,
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
      assert.equal(o.code, 0, out);
      assert.equal(out.match(/^done: 2 steps\. Run folder/gm)?.length, 1, `rank 0 alone reports:\n${out}`);
      assert.match(out, /per rank of 2 \(ZeRO-1: AdamW's moments sharded\)/);
      const config = JSON.parse(await Deno.readTextFile(`${s.dir}/run/config.json`));
      assert.equal(config.worldSize, 2);
      assert.equal(config.nproc, 1);
    } finally {
      await Deno.remove(s.dir, { recursive: true });
    }
  },
});
