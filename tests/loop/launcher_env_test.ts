/**
 * A launcher's variables half set (RANK without WORLD_SIZE): sample, score and eval exit 1 before writing
 * anything, naming them (their split under a launcher: tests/loop/{sample,score,eval}_launch_test.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loopRank } from "../../lib/loop/rank_shards.ts";

Deno.test("loopRank: a launcher's rank of several with its GPU and message prefix; none outside a launcher", () => {
  assert.deepEqual(loopRank({}), { ranked: null, who: "" });
  assert.deepEqual(loopRank({ RANK: "0", WORLD_SIZE: "1" }), { ranked: null, who: "" });
  assert.deepEqual(loopRank({ RANK: "3", WORLD_SIZE: "4", LOCAL_RANK: "1", LOCAL_WORLD_SIZE: "2" }), {
    ranked: { rank: 3, size: 4, launcher: "torchrun", deviceId: 1 },
    who: "rank 3/4: ",
  });
  // one device left visible to each process (SLURM's --gpus-per-task 1): device 0
  const slurm = loopRank({
    SLURM_PROCID: "2",
    SLURM_NTASKS: "4",
    SLURM_LOCALID: "2",
    CUDA_VISIBLE_DEVICES: "2",
  });
  assert.deepEqual([slurm.ranked?.launcher, slurm.ranked?.deviceId, slurm.who], ["slurm", 0, "rank 2/4: "]);
  assert.throws(() => loopRank({ RANK: "1" }), /RANK and WORLD_SIZE go together/);
});

for (const task of ["score", "eval"] as const) {
  Deno.test(`deno task ${task} with a launcher's variables half set exits 1 before writing anything, naming them`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const o = await new Deno.Command(Deno.execPath(), {
        args: [
          ...["run", "-A", new URL(`../../${task}/main.ts`, import.meta.url).pathname],
          ...(task === "score" ? ["--data", join(dir, "in.jsonl"), "--out", join(dir, "out.jsonl")] : [
            "--model",
            dir,
            "--reference",
            dir,
            "--prompts",
            join(dir, "p.jsonl"),
            "--out",
            join(dir, "o"),
          ]),
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
}
