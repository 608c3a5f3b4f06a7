/**
 * `deno task eval` under a launcher (torchrun, mpirun, srun) with several ranks: rank r of n evaluates the
 * prompts whose index is r modulo n and writes its scored rows to `<out>/eval.json.shard-r-of-n`; rank 0
 * waits for every rank's file, puts the rows back in prompt order and writes the folder one process writes
 * (`eval.json`, both models' samples, the chart). Each response's seed comes from its prompt's id
 * (sample_settings.ts' `sampleSeed`), so a row is the same whichever rank samples it.
 *
 * The ranks open no communicator (evaluation spawns processes, which Open MPI forbids after MPI_Init): the
 * files are the only signal. An evaluation writes its file only at the end, so every rank also keeps a
 * heartbeat beside it (`….progress`, rewritten as its work advances): rank 0's wait fails only when a missing
 * rank has shown no progress for the wait's bound. A shard older than rank 0's start is an earlier run's and
 * is not taken.
 * @module
 */
import { join } from "node:path";
import { writeJsonAtomic } from "../files.ts";
import {
  type EvalOptions,
  evalReport,
  type EvalRow,
  evaluateAgainstReference,
  type Evaluation,
} from "./eval.ts";
import type { SampleSettings } from "./sample_settings.ts";
import { type RankShard, rankShardPath, type ShardWaitOptions, waitForRankFiles } from "./rank_shards.ts";

/** What a rank's shard file holds: its rows without token ids, and what the report needs besides them. */
export type EvalShard = {
  format: "nca-eval-shard";
  shard: RankShard;
  /** Prompts of the whole evaluation (after `--limit`), over every rank. */
  prompts: number;
  settings: SampleSettings;
  scorer: { kind: string; name: string };
  models: { policy: string; reference: string };
  policyRows: EvalRow[];
  referenceRows: EvalRow[];
};

/** Rank `shard.index`'s file in the output folder `out`: `<out>/eval.json.shard-r-of-n`. */
export function evalShardPath(out: string, shard: RankShard): string {
  return rankShardPath(join(out, "eval.json"), shard);
}

/** A rank's heartbeat beside its shard file: rewritten as its evaluation advances. */
export function evalHeartbeatPath(out: string, shard: RankShard): string {
  return `${evalShardPath(out, shard)}.progress`;
}

/** Prompts of shard `index` of `count` out of `total`: those whose index is `index` modulo `count`. */
function shareSize(total: number, s: RankShard): number {
  return Math.max(0, Math.ceil((total - s.index) / s.count));
}

/** Options of {@link evaluateAsRank}. */
export type RankEvalOptions = Omit<EvalOptions, "shard"> & {
  /** The output folder every rank shares (its shard files; rank 0 writes the evaluation there). */
  out: string;
  /** Ms between heartbeats at most (default 2000). */
  heartbeatMs?: number;
};

/** What {@link evaluateAsRank} did: on rank 0 the merged evaluation (absent when interrupted). */
export type RankEvalResult = { shardFile: string; rows: number; merged?: Evaluation; interrupted: boolean };

/**
 * `eval` as rank `world.rank` of `world.size`: this rank evaluates its share into {@link evalShardPath}; rank 0
 * then waits for the other ranks' files and returns the merged evaluation (for `writeEval`), the one one
 * process computes from the same prompts.
 */
export async function evaluateAsRank(
  o: RankEvalOptions,
  world: { rank: number; size: number },
  wait: Omit<ShardWaitOptions, "signal"> = {},
): Promise<RankEvalResult> {
  const startedAt = Date.now();
  const shard = { index: world.rank, count: world.size };
  const file = evalShardPath(o.out, shard), beat = evalHeartbeatPath(o.out, shard);
  await Deno.remove(file).catch(() => {}); // an earlier run's: never merged in place of this one's
  let beats = 0, lastBeat = -Infinity;
  const heartbeat = async (phase: string) => {
    beats++;
    lastBeat = performance.now();
    await Deno.writeTextFile(beat, JSON.stringify({ beats, phase, at: new Date().toISOString() }) + "\n");
  };
  await heartbeat("start");
  let pending: Promise<void> = Promise.resolve();
  const every = o.heartbeatMs ?? 2000;
  const e = await evaluateAgainstReference({
    ...o,
    shard,
    onProgress: (p) => {
      o.onProgress?.(p);
      if (performance.now() - lastBeat >= every) pending = pending.then(() => heartbeat(p.phase));
    },
  }).catch((err) => {
    if (o.signal?.aborted) return null;
    throw err;
  });
  await pending;
  if (!e) return { shardFile: file, rows: 0, interrupted: true };
  const content: EvalShard = {
    format: "nca-eval-shard",
    shard,
    prompts: e.promptsRead ?? e.policyRows.length,
    settings: e.report.settings,
    scorer: e.report.scorer,
    models: { policy: e.report.policy.model, reference: e.report.reference.model },
    policyRows: e.policyRows.map(withoutIds),
    referenceRows: e.referenceRows.map(withoutIds),
  };
  await writeJsonAtomic(file, content);
  await Deno.remove(beat).catch(() => {});
  const rows = e.policyRows.length;
  if (world.rank !== 0) return { shardFile: file, rows, interrupted: false };
  const done = await waitForEvalShards(o.out, world.size, startedAt, { ...wait, signal: o.signal });
  if (!done) return { shardFile: file, rows, interrupted: true };
  const merged = await mergeEvalShards(o.out, world.size);
  for (let i = 0; i < world.size; i++) {
    await Deno.remove(evalShardPath(o.out, { index: i, count: world.size })).catch(() => {});
  }
  return { shardFile: file, rows, merged, interrupted: false };
}

/** A row as the files hold it: the generated token ids are kept in memory only. */
function withoutIds(r: EvalRow): EvalRow {
  return { ...r, responses: r.responses.map(({ ids: _ids, ...resp }) => resp) };
}

/**
 * Waits until every rank's shard file of `count` is there, written since `since` (ms since the epoch: rank
 * 0's start; an older file is an earlier run's). The wait fails when none of the missing ranks' heartbeats
 * has changed for the bound, naming them. False when the signal ended it.
 */
export function waitForEvalShards(
  out: string,
  count: number,
  since: number,
  o: ShardWaitOptions = {},
): Promise<boolean> {
  return waitForRankFiles(join(out, "eval.json"), count, async (file, shard) => {
    const stat = await Deno.stat(file).catch(() => null);
    if (stat && (stat.mtime?.getTime() ?? 0) >= since) return { complete: true, size: stat.size };
    // not there yet: the heartbeat's time says whether the rank is still at work
    const beat = await Deno.stat(evalHeartbeatPath(out, shard)).catch(() => null);
    return { complete: false, size: beat?.mtime?.getTime() ?? -1 };
  }, o);
}

/**
 * Reads the `count` ranks' shard files of `out` and puts their rows back in prompt order: the evaluation one
 * process makes of the same prompts. Refuses shards of another evaluation (settings, scorer, models, prompt
 * count) and a shard with other rows than its share, naming the file.
 */
export async function mergeEvalShards(out: string, count: number): Promise<Evaluation> {
  const shards: EvalShard[] = [];
  for (let i = 0; i < count; i++) {
    const file = evalShardPath(out, { index: i, count });
    let s: EvalShard;
    try {
      s = JSON.parse(await Deno.readTextFile(file));
    } catch (e) {
      throw new Error(`${file}: ${(e as Error).message}`);
    }
    if (s?.format !== "nca-eval-shard" || s.shard?.index !== i || s.shard?.count !== count) {
      throw new Error(`${file} is not rank ${i}/${count}'s evaluation shard`);
    }
    const first = shards[0] ?? s;
    for (const key of ["prompts", "settings", "scorer", "models"] as const) {
      if (JSON.stringify(s[key]) !== JSON.stringify(first[key])) {
        throw new Error(
          `${file} is another evaluation's: its ${key} ${JSON.stringify(s[key])} differ from rank 0's ` +
            JSON.stringify(first[key]),
        );
      }
    }
    const want = shareSize(s.prompts, s.shard);
    if (s.policyRows.length !== want || s.referenceRows.length !== want) {
      throw new Error(
        `${file} has ${s.policyRows.length} policy and ${s.referenceRows.length} reference rows for the ` +
          `${want} prompts of rank ${i}/${count}`,
      );
    }
    shards.push(s);
  }
  const total = shards[0].prompts;
  const inOrder = (side: "policyRows" | "referenceRows") =>
    Array.from({ length: total }, (_, q) => shards[q % count][side][Math.floor(q / count)]);
  const policyRows = inOrder("policyRows"), referenceRows = inOrder("referenceRows");
  const { settings, scorer, models } = shards[0];
  return {
    report: evalReport({ settings, scorer, models, policyRows, referenceRows }),
    policyRows,
    referenceRows,
    promptsRead: total,
  };
}
