/**
 * What `sample`, `score` and `eval` share under a launcher (torchrun, mpirun, srun) with several ranks: rank r
 * of n writes `<out>.shard-r-of-n`, and rank 0 waits for every rank's file before merging them into `<out>`.
 * The ranks open no communicator (the commands spawn processes, which Open MPI forbids after MPI_Init), so the
 * files are the only signal.
 * @module
 */

import { type Launcher, rankCudaDevice, worldFromEnv } from "../runtime/comm/launch.ts";

/** This process as one of a launcher's ranks, as `sample`, `score` and `eval` take it. */
export type LoopRank = {
  rank: number;
  size: number;
  launcher: Launcher;
  /** The CUDA device its models run on: its local rank's ({@link rankCudaDevice}). */
  deviceId: number;
};

/**
 * The launcher's rank this process is (torchrun, mpirun, srun: lib/runtime/comm/launch.ts), null where it is
 * no rank of several, and `who`, the prefix of every message of such a rank (`rank r/n: `). Throws naming a
 * launcher variable that is wrong. No communicator is opened.
 */
export function loopRank(env: Record<string, string | undefined> = Deno.env.toObject()): {
  ranked: LoopRank | null;
  who: string;
} {
  const w = worldFromEnv(env);
  if (w.size === 1) return { ranked: null, who: "" };
  const deviceId = rankCudaDevice(w, env.CUDA_VISIBLE_DEVICES);
  return {
    ranked: { rank: w.rank, size: w.size, launcher: w.launcher, deviceId },
    who: `rank ${w.rank}/${w.size}: `,
  };
}

/** A rank's share: `index` of `count`. */
export type RankShard = { index: number; count: number };

/** The file rank `index` of `count` writes under a launcher: `<out>.shard-<index>-of-<count>`. */
export function rankShardPath(out: string, shard: RankShard): string {
  return `${out}.shard-${shard.index}-of-${shard.count}`;
}

/** How long rank 0 waits for another rank's shard to grow before giving up (ms): 10 minutes. */
export const SHARD_WAIT_MS = 600_000;

/** Options for {@link waitForRankFiles}. */
export type ShardWaitOptions = {
  /** Ms without any missing shard growing after which the wait fails, naming the ranks (default 10 min). */
  timeoutMs?: number;
  /** Ms between looks at the files (default 500). */
  pollMs?: number;
  /** Ends the wait (the result is then false). */
  signal?: AbortSignal;
};

/**
 * Waits until `state` says every rank's shard file of `count` is complete. `state` gives whether it is and a
 * number that changes as it grows (its size; -1 when absent); the wait fails when none of the missing shards
 * has grown for `timeoutMs`, naming their ranks and files. False when the signal ended it.
 */
export async function waitForRankFiles(
  out: string,
  count: number,
  state: (file: string, shard: RankShard) => Promise<{ complete: boolean; size: number }>,
  o: ShardWaitOptions = {},
): Promise<boolean> {
  const timeoutMs = o.timeoutMs ?? SHARD_WAIT_MS, pollMs = o.pollMs ?? 500;
  const sizes = new Map<number, number>();
  let lastChange = performance.now();
  for (;;) {
    const missing: number[] = [];
    for (let i = 0; i < count; i++) {
      const shard = { index: i, count };
      const { complete, size } = await state(rankShardPath(out, shard), shard);
      if (complete) continue;
      missing.push(i);
      if (sizes.get(i) !== size) {
        sizes.set(i, size);
        lastChange = performance.now();
      }
    }
    if (missing.length === 0) return true;
    if (o.signal?.aborted) return false;
    if (performance.now() - lastChange > timeoutMs) {
      const files = missing.map((i) => rankShardPath(out, { index: i, count }));
      const s = missing.length > 1 ? "s" : "";
      throw new Error(
        `rank 0/${count}: the shard${s} of rank${s} ${
          missing.join(", ")
        } did not complete (no progress for ` +
          `${Math.round(timeoutMs / 1000)} s): ${files.join(", ")}. Did that rank fail? Rerun the same ` +
          `command: the finished rows are kept`,
      );
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
