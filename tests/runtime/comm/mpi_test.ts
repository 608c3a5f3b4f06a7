/**
 * Open MPI: the pieces testable in one process, then two ranks under `mpirun -np 2 --oversubscribe`
 * (skipped, with one line, where mpirun is not installed: `.ci/run` installs openmpi-bin).
 */
import assert from "node:assert/strict";
import {
  countChunks,
  findMpiLibrary,
  findMpirun,
  MPI_AS_ROOT_ENV,
  MpiUnavailableError,
  openMpi,
} from "../../../lib/runtime/comm/mod.ts";

const RANK_SCRIPT = new URL("./_mpi_rank.ts", import.meta.url).pathname;

const MPIRUN = findMpirun();
if (!MPIRUN) {
  console.log(
    "mpi_test: mpirun is not installed (apt-get install openmpi-bin): the 2-rank tests are skipped",
  );
}

/** `mpirun -np 2` of the rank script in `mode`, as root in a container if need be. */
function mpirun(args: string[]): Deno.Command {
  return new Deno.Command(MPIRUN!, {
    args: [
      "-np",
      "2",
      "--oversubscribe",
      "--bind-to",
      "none",
      Deno.execPath(),
      "run",
      "-A",
      RANK_SCRIPT,
      ...args,
    ],
    env: { ...MPI_AS_ROOT_ENV, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
}

Deno.test("mpi: countChunks cuts a count past the limit into pieces that cover it once", () => {
  assert.deepEqual(countChunks(10, 3), [[0, 3], [3, 3], [6, 3], [9, 1]]);
  assert.deepEqual(countChunks(6, 3), [[0, 3], [3, 3]]);
  assert.deepEqual(countChunks(0, 3), []);
  const big = countChunks(2 ** 32 + 5, 2 ** 31 - 1);
  assert.deepEqual(big, [[0, 2 ** 31 - 1], [2 ** 31 - 1, 2 ** 31 - 1], [2 ** 32 - 2, 7]]);
  assert.throws(() => countChunks(4, 0), /max must be ≥ 1, got 0/);
});

Deno.test("mpi: a missing libmpi.so.40 is named, with where it was looked for and how to install Open MPI", () => {
  assert.throws(
    () => findMpiLibrary(["/no/such/dir"]),
    (e) =>
      e instanceof MpiUnavailableError &&
      e.message.startsWith("libmpi.so.40 (Open MPI 4 or 5) was not found in /no/such/dir.") &&
      e.message.includes("apt-get install openmpi-bin"),
  );
});

Deno.test("mpi: a process mpirun did not start is refused before MPI starts", async () => {
  if (Deno.env.get("OMPI_COMM_WORLD_SIZE") !== undefined) return; // the test itself runs under mpirun
  await assert.rejects(
    openMpi(),
    (e) =>
      e instanceof MpiUnavailableError &&
      /needs a process started by mpirun.*launch with `mpirun -np N/.test(e.message),
  );
});

type RankResult = {
  rank: number;
  size: number;
  world: Record<string, unknown>;
  threadLevel: number;
  results: Record<string, unknown>;
};

async function runCollectives(extra: string[]): Promise<RankResult[]> {
  const out = await mpirun(["collectives", ...extra]).output();
  const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `mpirun exited ${out.code}:\n${stdout}\n${stderr}`);
  const lines = stdout.split("\n").filter((l) => l.startsWith("RESULT "));
  assert.equal(lines.length, 2, stdout + stderr);
  return lines.map((l) => JSON.parse(l.slice(7)) as RankResult).sort((a, b) => a.rank - b.rank);
}

/** What every collective of _mpi_rank.ts must give on each of 2 ranks. */
function expected(rank: number): Record<string, unknown> {
  const range = <T>(n: number, f: (i: number) => T) => Array.from({ length: n }, (_, i) => f(i));
  return {
    allReduceSumF32: range(10, (i) => Math.fround(1 * (i + 0.5)) + Math.fround(2 * (i + 0.5))),
    allReduceMaxI32: range(7, (i) => Math.max(i, 6 - i) * 3),
    allReduceSumF64: range(5, (i) => 0.1 * (i + 1) + 0.1 * (i + 1) * 2),
    allReduceSumI64: range(4, (i) => String(3n * 2n ** 40n + 2n * BigInt(i))),
    allReduceSumU8: range(6, (i) => (125 + i + 126 + i) % 256),
    reduceScatterSum: range(5, (i) => 2 * (rank * 5 + i) + 100),
    reduceScatterMax: range(3, (i) => {
      const j = rank * 3 + i;
      return Math.max(j % 2 === 0 ? 50 + j : -j, j % 2 === 1 ? 50 + j : -j);
    }),
    allGatherF64: [0, 1, 2, 3, 4, 10, 11, 12, 13, 14],
    allGatherI64: ["0", "-1", "-2", "1000", "999", "998"],
    broadcastFrom1: range(9, (i) => i * 1.5),
    paddedShard: rank === 0
      ? { shard: [1, 3, 5, 7], start: 0, end: 4 }
      : { shard: [9, 11, 13, 0], start: 4, end: 7 },
    paddedBack: [1, 3, 5, 7, 9, 11, 13],
    deviceRefused: `rank ${rank}/2: allReduce: Open MPI works on host arrays here, got cuda:float32[4]: ` +
      "use NCCL (--device cuda) for device memory",
  };
}

Deno.test({
  name: "mpi: two ranks under mpirun get every collective's result, in each type",
  ignore: !MPIRUN,
  fn: async () => {
    const ranks = await runCollectives([]);
    for (const r of ranks) {
      const { calls, ...results } = r.results;
      assert.deepEqual(results, expected(r.rank), `rank ${r.rank}`);
      assert.equal(calls, 13, "one MPI call per collective");
      assert.equal(r.size, 2);
      assert.ok(r.threadLevel >= 2, "at least MPI_THREAD_SERIALIZED");
      assert.deepEqual(r.world, {
        launcher: "mpirun",
        rank: r.rank,
        size: 2,
        localRank: r.rank,
        localSize: 2,
        masterAddr: "127.0.0.1",
        masterPort: 29500,
      });
    }
  },
});

Deno.test({
  name: "mpi: collectives past the count limit are cut into pieces with the same results (limit forced to 3)",
  ignore: !MPIRUN,
  fn: async () => {
    const ranks = await runCollectives(["3"]);
    for (const r of ranks) {
      const { calls, ...results } = r.results;
      assert.deepEqual(results, expected(r.rank), `rank ${r.rank}`);
      // all-reduces of 10, 7, 5, 4, 6 → 4+3+2+2+2; reduce-scatters of 5 and 3 per rank (1 per piece) → 5+3;
      // all-gathers of 5 and 3 → 5+3; broadcast of 9 → 3; barrier 1; padded 4 per rank → 4 + 4; empty → 0
      assert.equal(calls, 13 + 8 + 8 + 3 + 1 + 8, `rank ${r.rank}: ${calls} MPI calls`);
    }
  },
});

Deno.test({
  name:
    "mpi: the watchdog ends a collective a rank never joins: MPI_Abort, non-zero, naming the rank and the collective",
  ignore: !MPIRUN,
  fn: async () => {
    const t0 = Date.now();
    const out = await mpirun(["watchdog"]).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.notEqual(out.code, 0, text);
    assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
    assert.match(
      text,
      /rank 0\/2: aborting the MPI job: allReduce did not complete within 3 s \(mpi, 2 ranks\)/,
    );
  },
});

Deno.test({
  name: "mpi: kill -9 of one rank makes the other exit non-zero within 30 s, naming the dead rank",
  ignore: !MPIRUN,
  fn: async () => {
    const child = mpirun(["hang"]).spawn();
    const decoder = new TextDecoder();
    let stdout = "";
    const pids = new Map<number, number>();
    const reader = child.stdout.getReader();
    const stderrText = new Response(child.stderr).text();
    const giveUp = setTimeout(() => child.kill("SIGKILL"), 60_000);
    try {
      while (pids.size < 2) {
        const { value, done } = await reader.read();
        if (done) break;
        stdout += decoder.decode(value);
        for (const m of stdout.matchAll(/READY (\d) (\d+)/g)) pids.set(Number(m[1]), Number(m[2]));
      }
      if (pids.size < 2) assert.fail(`both ranks should be ready:\n${stdout}\n${await stderrText}`);
      const killedAt = Date.now();
      Deno.kill(pids.get(1)!, "SIGKILL");
      const rest = (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          stdout += decoder.decode(value);
        }
      })();
      const status = await child.status;
      await rest;
      const took = Date.now() - killedAt;
      const text = stdout + (await stderrText);
      assert.notEqual(status.code, 0, text);
      assert.ok(took < 30_000, `took ${took} ms`);
      assert.match(text, /rank 1 .*exited on signal 9|rank 0\/2: .*did not complete/, text);
      // rank 0 is gone too, not left behind
      let alive = true;
      for (let i = 0; i < 100 && alive; i++) {
        try {
          Deno.statSync(`/proc/${pids.get(0)}`);
          await new Promise((r) => setTimeout(r, 100));
        } catch {
          alive = false;
        }
      }
      assert.equal(alive, false, `rank 0 (pid ${pids.get(0)}) still runs`);
    } finally {
      clearTimeout(giveUp);
    }
  },
});
