/**
 * eval under a launcher with several ranks: refused with a message naming the rank and the way out (score
 * splits its rows across ranks: tests/loop/score_launch_test.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { launcherRefusal } from "../../lib/loop/rank_shards.ts";

Deno.test("launcherRefusal: several ranks of torchrun, mpirun or srun are refused; one rank or none runs", () => {
  assert.equal(launcherRefusal("eval", {}), null);
  assert.equal(launcherRefusal("eval", { RANK: "0", WORLD_SIZE: "1" }), null);
  assert.match(
    launcherRefusal("eval", { RANK: "1", WORLD_SIZE: "2" })!,
    /^rank 1\/2: deno task eval does not split its work across ranks, and 2 ranks \(torchrun\).*sample and deno task score split/,
  );
  assert.match(
    launcherRefusal("eval", { OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "4" })!,
    /^rank 0\/4: deno task eval .*\(mpirun\)/,
  );
  assert.match(
    launcherRefusal("eval", { SLURM_PROCID: "3", SLURM_STEP_NUM_TASKS: "8" })!,
    /^rank 3\/8: .*\(slurm\)/,
  );
  assert.match(launcherRefusal("eval", { RANK: "0" })!, /RANK and WORLD_SIZE go together/);
});

Deno.test("deno task score with a launcher's variables half set exits 1 before writing anything, naming them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const o = await new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "-A", new URL("../../score/main.ts", import.meta.url).pathname],
        ...["--data", join(dir, "in.jsonl"), "--out", join(dir, "out.jsonl")],
        ...["--reward-fn", new URL("./_length_reward.ts", import.meta.url).pathname],
      ],
      env: { RANK: "1", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(o.stderr);
    assert.equal(o.code, 1, err);
    assert.match(err, /error: .*RANK and WORLD_SIZE go together/);
    assert.equal((await Array.fromAsync(Deno.readDir(dir))).length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
