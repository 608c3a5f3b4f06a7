/**
 * `deno task score` under a launcher (torchrun, mpirun, srun): rank r of n scores the rows whose index is r
 * modulo n into its own shard file (rank_shards.ts' naming), and rank 0, once every shard is whole, writes
 * the one file (and sidecar) one process would, rows in the input's order. No communicator: scoring starts
 * subprocesses (reward functions), which MPI does not allow after MPI_Init.
 * @module
 */
import { resolve } from "node:path";
import { readLines } from "../data/jsonl.ts";
import { readJsonObject, writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { lockFile } from "../lock.ts";
import { type RankShard, rankShardPath, type ShardWaitOptions, waitForRankFiles } from "./rank_shards.ts";
import {
  configDifference,
  resumeState,
  scoreFile,
  type ScoreFileOptions,
  type ScoreFileResult,
  type ScoreMeta,
  scoreMetaPath,
} from "./score.ts";

/** Whether `file` is score shard `shard` written whole: its sidecar says complete and the file is that long. */
async function scoreShardState(file: string, shard: RankShard): Promise<{ complete: boolean; size: number }> {
  const size = await Deno.stat(file).then((st) => st.size, () => -1);
  const meta = await readJsonObject(scoreMetaPath(file)).catch(() => null) as ScoreMeta | null;
  if (!meta || size < 0) return { complete: false, size };
  if (meta.shard?.index !== shard.index || meta.shard?.count !== shard.count) {
    const is = meta.shard ? `shard ${meta.shard.index}/${meta.shard.count}` : "no shard";
    throw new Error(`${file} is ${is} by its sidecar, not ${shard.index}/${shard.count}`);
  }
  return { complete: meta.complete === true && size === meta.progress?.bytes, size };
}

/** What {@link mergeScoreShards} wrote. */
export type ScoreMergeResult = { out: string; rows: number; shards: number; files: string[] };

/**
 * Interleaves the complete shards of `count` ranks (`<out>.shard-r-of-count`, each with its sidecar) into
 * `out`, in input order, atomically, and writes the sidecar one process would: the same file and meta as one
 * unsharded run. Refuses shards that are unfinished or of another input or scorer, and an `out` that is
 * not this configuration's.
 */
export async function mergeScoreShards(out: string, count: number): Promise<ScoreMergeResult> {
  await using _lock = await lockFile(resolve(out));
  const files = Array.from({ length: count }, (_, i) => rankShardPath(out, { index: i, count }));
  const metas: ScoreMeta[] = [];
  for (const [i, file] of files.entries()) {
    const state = await scoreShardState(file, { index: i, count });
    if (!state.complete) throw new Error(`${file} (rank ${i}/${count}) is not complete: rerun that rank`);
    metas.push(await readJsonObject(scoreMetaPath(file)) as ScoreMeta);
  }
  const first = metas[0];
  const same = (m: ScoreMeta) => ({
    input: m.input,
    scorer: m.scorer,
    rowsRead: m.progress.rowsRead,
    inputHash: m.progress.inputHash,
  });
  for (const [i, m] of metas.entries()) {
    const diff = configDifference(same(first), same(m));
    if (diff) throw new Error(`${files[i]} was not scored like ${files[0]} (${diff}): rerun every rank`);
    if (m.progress.skippedRows?.length !== m.progress.skipped.length) {
      throw new Error(`${scoreMetaPath(files[i])}: its skipped rows have no input indices`);
    }
  }
  // a row skipped by its shard is absent from its file: the one-process file leaves it out in the same place
  const skipped = metas.flatMap((m) =>
    m.progress.skipped.map((at, j) => ({ at, row: m.progress.skippedRows![j] }))
  )
    .sort((a, b) => a.row - b.row);
  const skippedRows = new Set(skipped.map((s) => s.row));
  const sum = (f: (m: ScoreMeta) => number) => metas.reduce((a, m) => a + f(m), 0);
  const meta: ScoreMeta = {
    version: 1,
    input: first.input,
    scorer: first.scorer,
    progress: {
      rowsRead: first.progress.rowsRead,
      rowsWritten: sum((m) => m.progress.rowsWritten),
      sequences: sum((m) => m.progress.sequences),
      bytes: sum((m) => m.progress.bytes),
      inputHash: first.progress.inputHash,
      skipped: skipped.map((s) => s.at),
    },
    complete: true,
  };
  // an existing out of another configuration, or not this command's, is refused as a one-process run would
  await resumeState(out, { version: 1, input: first.input, scorer: first.scorer });
  const readers = files.map((f) => readLines(f));
  const encoder = new TextEncoder();
  try {
    await writeFileAtomic(out, async (f) => {
      let text = "", bytes = 0;
      const flush = async () => {
        const b = encoder.encode(text);
        for (let off = 0; off < b.length;) off += await f.write(b.subarray(off));
        bytes += b.length;
        text = "";
      };
      for (let row = 0; row < meta.progress.rowsRead; row++) {
        if (skippedRows.has(row)) continue;
        const next = await readers[row % count].next();
        if (next.done) {
          throw new Error(`${files[row % count]} ends before input row ${row}: rerun every rank`);
        }
        text += next.value[0] + "\n";
        if (text.length > 1 << 20) await flush();
      }
      await flush();
      for (const [i, r] of readers.entries()) {
        const rest = await r.next();
        if (!rest.done) throw new Error(`${files[i]} has rows past its share of the input: rerun every rank`);
      }
      if (bytes !== meta.progress.bytes) {
        throw new Error(`the merged ${out} has ${bytes} bytes, its shards ${meta.progress.bytes}`);
      }
    });
  } finally {
    for (const r of readers) await r.return(undefined);
  }
  await writeJsonAtomic(scoreMetaPath(out), meta);
  return { out, rows: meta.progress.rowsWritten, shards: count, files };
}

/** What {@link scoreAsRank} did: this rank's shard (`out`), and on rank 0 the merge (absent when stopped). */
export type RankScoreResult = ScoreFileResult & { out: string; merged?: ScoreMergeResult };

/**
 * `score` as rank `rank` of `size` under a launcher (torchrun, mpirun, srun): this rank scores the rows
 * whose index is `rank` modulo `size` into `<out>.shard-rank-of-size` (resumable as `out` is), and rank 0
 * then waits for every shard (bounded: a rank that stops growing its file is named) and merges them into
 * `out` ({@link mergeScoreShards}). No communicator is opened: reward functions run in subprocesses, which
 * Open MPI forbids after MPI_Init.
 */
export async function scoreAsRank(
  o: Omit<ScoreFileOptions, "shard">,
  world: { rank: number; size: number },
  wait: Omit<ShardWaitOptions, "signal"> = {},
): Promise<RankScoreResult> {
  const shard = { index: world.rank, count: world.size };
  const out = rankShardPath(o.out, shard);
  const r = await scoreFile({ ...o, shard, out });
  if (world.rank !== 0 || !r.complete) return { ...r, out };
  const done = await waitForRankFiles(o.out, world.size, scoreShardState, { ...wait, signal: o.signal });
  if (!done) return { ...r, out, complete: false };
  return { ...r, out, merged: await mergeScoreShards(o.out, world.size) };
}
