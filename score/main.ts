/**
 * `deno task score`: score sampled responses with a reward model, a reward function or an LLM judge, into
 * the reward format `deno task train` reads. This file parses flags, makes the scorer and calls
 * lib/loop/score.ts; `--help` lists every option.
 * @module
 */
import {
  gather,
  helpText,
  type OptionSpec,
  parseArgv,
  parsedOrExitCode,
  stopOnSignals,
} from "../lib/cli/mod.ts";
import { scoreFile, scoreProgressPrinter } from "../lib/loop/score.ts";
import { type RankScoreResult, scoreAsRank } from "../lib/loop/score_shards.ts";
import { loopRank } from "../lib/loop/rank_shards.ts";
import type { Scorer } from "../lib/loop/scorers/types.ts";
import type { RewardModelScorer } from "../lib/loop/scorers/reward_model.ts";
import {
  makeScorer,
  SCORER_NOTES,
  SCORER_SPECS,
  type ScorerFlags,
  type ScorerSpec,
  scorerSpecFrom,
  UsageError,
} from "../lib/loop/scorers/from_flags.ts";

export { UsageError };

/** What `deno task score` reads besides the scorer. */
type ScoreFlags = {
  data?: string;
  out?: string;
  batch?: number;
  limit?: number;
  skipErrors?: boolean;
  quiet?: boolean;
};

const SCORE = "Scoring";

/** Every option of `deno task score`: its own, then the scorers'. */
export const SCORE_SPECS: readonly OptionSpec<ScoreFlags & ScorerFlags>[] = [
  {
    key: "data",
    flag: "data",
    kind: "string",
    group: SCORE,
    arg: "file",
    help: "responses to score: deno task sample's output, or reward / preference data (JSONL, plain or " +
      "gzip, or Parquet); required",
  },
  {
    key: "out",
    flag: "out",
    kind: "string",
    group: SCORE,
    arg: "file",
    help: 'the scored JSONL: each row with "reward" on each response and "scorer"; a rerun continues an ' +
      "interrupted one (<out>.meta.json records where; another configuration is refused); required",
  },
  {
    key: "batch",
    flag: "batch",
    kind: "int",
    group: SCORE,
    min: 1,
    arg: "n",
    default: 8,
    help: "rows scored and written together; a reward model's sequences per forward pass",
  },
  {
    key: "limit",
    flag: "limit",
    kind: "int",
    group: SCORE,
    min: 1,
    arg: "n",
    defaultText: "all",
    help: "score only the first n rows",
  },
  {
    key: "skipErrors",
    flag: "skip-errors",
    kind: "boolean",
    group: SCORE,
    help: "leave out (and count) rows that are malformed or fail to score, instead of stopping",
  },
  { key: "quiet", flag: "quiet", kind: "boolean", group: SCORE, help: "no progress line" },
  ...SCORER_SPECS,
];

export const SCORE_USAGE = helpText(SCORE_SPECS, {
  usage: "deno task score --data <file> --out <file> (--reward-model <folder> | --reward-fn <file> | " +
    "--judge-url <url>)",
  intro: "Score every response of sampled data; write the reward format deno task train reads.",
  outro: SCORER_NOTES,
});

/** The parsed command line. */
export type ScoreArgs = {
  data: string;
  out: string;
  batch: number;
  limit?: number;
  skipErrors: boolean;
  quiet: boolean;
  scorer: ScorerSpec;
};

/**
 * Parses the arguments; null when help was asked for. `env` reads JUDGE_API_KEY; `readText` reads
 * `--rubric` (the file's text). Throws {@link UsageError} listing every problem.
 */
export function parseScoreArgs(
  args: string[],
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  readText: (path: string) => string = (p) => Deno.readTextFileSync(p),
): ScoreArgs | null {
  const { values: v, help, errors } = parseArgv(SCORE_SPECS, args);
  if (help) return null;
  if (!v.data) errors.push("--data is required (the responses to score)");
  if (!v.out) errors.push("--out is required (the scored JSONL to write)");
  const { data, out, batch, limit, skipErrors, quiet, ...scorerFlags } = v;
  const scorer = gather(errors, () => scorerSpecFrom(scorerFlags, env, readText));
  if (errors.length) throw new UsageError(errors);
  return {
    data: data!,
    out: out!,
    batch: batch ?? 8,
    limit,
    skipErrors: skipErrors ?? false,
    quiet: quiet ?? false,
    scorer: scorer!,
  };
}

async function main(argv: string[]): Promise<number> {
  const args = parsedOrExitCode(() => parseScoreArgs(argv), SCORE_USAGE, "score");
  if (typeof args === "number") return args;
  // under torchrun, mpirun or srun: this rank's share of the rows, merged by rank 0 (docs/distributed.md)
  let place;
  try {
    place = loopRank();
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  const { ranked, who } = place;
  const log = (line: string) => console.error(line);
  // a reward function runs in a process of its own, which is killed at once; other scorers finish their batch
  const when = args.scorer.kind === "reward-fn" ? "now" : "after the current batch";
  using stop = stopOnSignals(`\ninterrupted: stopping ${when} (again to quit now; a rerun continues)`, log);
  let scorer: Scorer | undefined;
  // rank 0 alone shows progress
  const progress = args.quiet || (ranked && ranked.rank > 0) ? undefined : scoreProgressPrinter();
  try {
    // the signal also stops a reward function in the middle of a call (one stuck in a loop included)
    // a rank of several scores with a reward model on its local rank's GPU
    const spec = ranked && args.scorer.kind === "reward-model"
      ? { ...args.scorer, deviceId: ranked.deviceId }
      : args.scorer;
    scorer = await makeScorer(spec, { ...args, signal: stop.signal }, log);
    const options = {
      data: args.data,
      out: args.out,
      scorer,
      batch: args.batch,
      limit: args.limit,
      skipErrors: args.skipErrors,
      signal: stop.signal,
      onProgress: progress?.update,
      log,
    };
    const r: RankScoreResult = ranked
      ? await scoreAsRank(options, ranked)
      : { ...await scoreFile(options), out: args.out };
    progress?.done();
    const cut = scorer.kind === "reward-model" ? (scorer as RewardModelScorer) : undefined;
    const notes = [
      r.skipped.length ? `${r.skipped.length} rows skipped (listed in ${r.out}.meta.json)` : "",
      cut?.truncated ? `${cut.truncated} sequences cut to their last ${cut.maxLength} tokens` : "",
    ].filter(Boolean);
    const state = r.complete ? "done" : "stopped";
    const earlier = r.resumedFrom ? `, after ${r.resumedFrom} earlier` : "";
    const took = `${r.seconds.toFixed(1)} s`, tail = notes.length ? `; ${notes.join("; ")}` : "";
    log(
      `${who}${state}: ${r.rowsWritten} rows in ${r.out} (${r.rowsThisRun} scored now${earlier}, ${took})${tail}`,
    );
    if (r.merged) {
      log(`merged the ${r.merged.shards} ranks' shards, ${r.merged.rows} rows, into ${r.merged.out}`);
    } else if (ranked && r.complete) log(`${who}rank 0 merges the shards into ${args.out}`);
    if (!r.complete) log(`${who}rerun the same command to continue`);
    return r.complete ? 0 : 130;
  } catch (e) {
    progress?.done();
    const message = (e as Error).message;
    console.error(`error: ${message.startsWith(who) ? "" : who}${message}`);
    return stop.signal.aborted ? 130 : 1;
  } finally {
    await scorer?.release();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
