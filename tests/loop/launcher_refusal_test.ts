/** score and eval under a launcher with several ranks: refused with a message naming the rank and the way out. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { launcherRefusal } from "../../lib/loop/score.ts";

Deno.test("launcherRefusal: several ranks of torchrun, mpirun or srun are refused; one rank or none runs", () => {
  assert.equal(launcherRefusal("score", {}), null);
  assert.equal(launcherRefusal("eval", { RANK: "0", WORLD_SIZE: "1" }), null);
  assert.match(
    launcherRefusal("score", { RANK: "1", WORLD_SIZE: "2" })!,
    /^rank 1\/2: deno task score does not split its work across ranks, and 2 ranks \(torchrun\).*sample splits/,
  );
  assert.match(
    launcherRefusal("eval", { OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "4" })!,
    /^rank 0\/4: deno task eval .*\(mpirun\)/,
  );
  assert.match(
    launcherRefusal("eval", { SLURM_PROCID: "3", SLURM_STEP_NUM_TASKS: "8" })!,
    /^rank 3\/8: .*\(slurm\)/,
  );
  assert.match(launcherRefusal("score", { RANK: "0" })!, /RANK and WORLD_SIZE go together/);
});

Deno.test("deno task score under 2 torchrun ranks exits 1 before reading anything, naming the rank", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const o = await new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "-A", new URL("../../score/main.ts", import.meta.url).pathname],
        ...["--data", join(dir, "in.jsonl"), "--out", join(dir, "out.jsonl")],
        ...["--reward-fn", new URL("./_length_reward.ts", import.meta.url).pathname],
      ],
      env: { RANK: "1", WORLD_SIZE: "2", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(o.stderr);
    assert.equal(o.code, 1, err);
    assert.match(err, /error: rank 1\/2: deno task score does not split its work/);
    assert.equal((await Array.fromAsync(Deno.readDir(dir))).length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
