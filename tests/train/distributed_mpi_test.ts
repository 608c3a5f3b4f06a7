/**
 * Training on 2 ranks under Open MPI (`mpirun -np 2 --oversubscribe deno task train …`) on a tiny model: the
 * same weights as one process with the same global batch, rank 0 alone writes and reports; kill -9 of one
 * rank ends the job within 30 s, naming it. Skipped, with one line, where mpirun is not installed.
 */
import assert from "node:assert/strict";
import { loadLatestCheckpoint } from "../../lib/train/checkpoint.ts";
import { tinySetup } from "./_fixtures.ts";
import { findMpirun, MPI_AS_ROOT_ENV } from "../../lib/runtime/comm/mpi.ts";

const MPIRUN = findMpirun();
if (!MPIRUN) {
  console.log("distributed_mpi_test: mpirun is not installed: the 2-rank training tests are skipped");
}

const ROOT = new URL("../../", import.meta.url).pathname;
const MPI_ENV = { ...MPI_AS_ROOT_ENV, NO_COLOR: "1" };

function trainArgs(s: { dir: string; model: string }, extra: string[]): string[] {
  return [
    ...[
      "--model",
      s.model,
      "--data",
      `${s.dir}/reward.jsonl`,
      "--loss",
      "nca",
      "--beta",
      "0.1",
      "--lr",
      "0.01",
    ],
    ...["--max-length", "48", "--max-prompt-length", "24", "--lora-r", "4", "--lora-alpha", "8"],
    ...["--device", "cpu", "--seed", "3", "--eval-fraction", "0.17", "--quiet", ...extra],
  ];
}

function command(cmd: string, args: string[], env: Record<string, string> = {}): Deno.Command {
  return new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  });
}

/** A sleep that needs no timer (timers of this test were seen to fire late under load). */
function sleep(ms: number) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const text = (o: Deno.CommandOutput) =>
  new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);

Deno.test({
  name: "mpirun -np 2 deno task train: the weights of one process with the same global batch; rank 0 reports",
  ignore: !MPIRUN,
  fn: async () => {
    const s = await tinySetup();
    const common = ["--epochs", "1", "--grad-accum", "2", "--lora-dropout", "0.1", "--steps-per-run", "3"];
    const one = await command(Deno.execPath(), [
      "task",
      "train",
      ...trainArgs(s, [...common, "--batch-size", "4", "--out", `${s.dir}/one`]),
    ]).output();
    assert.equal(one.code, 0, text(one));
    const two = await command(MPIRUN!, [
      ...["-np", "2", "--oversubscribe", "--bind-to", "none", Deno.execPath(), "task", "train"],
      ...trainArgs(s, [...common, "--batch-size", "2", "--zero", "1", "--out", `${s.dir}/two`]),
    ], MPI_ENV).output();
    const out = text(two);
    assert.equal(two.code, 0, out);
    assert.equal(out.match(/^done: \d+ steps\. Run folder/gm)?.length, 1, `rank 0 alone reports:\n${out}`);
    const a = (await loadLatestCheckpoint(`${s.dir}/one/checkpoints`))!;
    const b = (await loadLatestCheckpoint(`${s.dir}/two/checkpoints`))!;
    assert.equal(b.step, a.step);
    let diff = 0, scale = 0;
    for (const [k, v] of Object.entries(a.tensors)) {
      for (let i = 0; i < v.length; i++) {
        diff = Math.max(diff, Math.abs(b.tensors[k][i] - v[i]));
        scale = Math.max(scale, Math.abs(v[i]));
      }
    }
    assert.ok(diff / scale < 1e-6, `relative difference ${diff / scale}`);
    assert.ok((await Deno.stat(`${s.dir}/two/policy/config.json`)).isFile);
    await Deno.remove(s.dir, { recursive: true });
  },
});

Deno.test({
  name: "mpirun -np 2 train: kill -9 of rank 1 ends the job within 30 s, non-zero, naming rank 1",
  ignore: !MPIRUN,
  fn: async () => {
    const s = await tinySetup();
    const child = command(MPIRUN!, [
      ...["-np", "2", "--oversubscribe", "--bind-to", "none", Deno.execPath(), "run", "-A", "train/main.ts"],
      ...trainArgs(s, [
        "--epochs",
        "2000",
        "--batch-size",
        "2",
        "--steps-per-run",
        "1",
        "--out",
        `${s.dir}/run`,
      ]),
    ], MPI_ENV).spawn();
    // the output as it comes: a rank left behind may hold the pipes open after mpirun ended
    let all = "";
    const drain = async (r: ReadableStream<Uint8Array>) => {
      const decoder = new TextDecoder();
      for await (const chunk of r) all += decoder.decode(chunk, { stream: true });
    };
    const drained = Promise.all([drain(child.stdout), drain(child.stderr)]).catch(() => {});
    const giveUp = setTimeout(() => child.kill("SIGKILL"), 90_000);
    // this run's processes (by the run folder in their command line), rank 1's marked
    const ranks = async () => {
      const found = await new Deno.Command("sh", {
        args: [
          "-c",
          `for p in $(pgrep -f -- '--out ${s.dir}/run'); do grep -q train/main.ts /proc/$p/cmdline 2>/dev/null && ` +
          `{ grep -qz '^OMPI_COMM_WORLD_RANK=1$' /proc/$p/environ 2>/dev/null && echo "rank1 $p" || echo "other $p"; }; ` +
          `done`,
        ],
        stdout: "piped",
        stderr: "null",
      }).output();
      const out = new TextDecoder().decode(found.stdout);
      return {
        rank1: Number(out.match(/rank1 (\d+)/)?.[1]) || undefined,
        all: [...out.matchAll(/(?:rank1|other) (\d+)/g)].map((m) => Number(m[1])),
      };
    };
    try {
      let pid: number | undefined;
      for (let i = 0; i < 600 && pid === undefined; i++) {
        sleep(100);
        pid = (await ranks()).rank1;
      }
      assert.ok(pid, `rank 1 not found:\n${all}`);
      sleep(2000); // past MPI_Init
      const killedAt = Date.now();
      Deno.kill(pid!, "SIGKILL");
      const status = await child.status;
      const took = Date.now() - killedAt;
      sleep(1000);
      await Promise.race([drained, new Promise((r) => setTimeout(r, 3000))]);
      assert.notEqual(status.code, 0, all);
      assert.ok(took < 30_000, `took ${took} ms`);
      assert.match(
        all,
        /rank 1 .*exited on signal 9|rank \d\/2: .*did not complete|Process name: \[\[\d+,\d+\],1\]/,
        all,
      );
    } finally {
      clearTimeout(giveUp);
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await child.status;
      // a rank mpirun left behind (it ends its job at once): ended here, by its pid
      for (const p of (await ranks()).all) {
        try {
          Deno.kill(p, "SIGKILL");
        } catch { /* gone */ }
      }
      await drained;
    }
    await Deno.remove(s.dir, { recursive: true });
  },
});
