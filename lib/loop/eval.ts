/**
 * Evaluation of an aligned policy against its reference, the paper's last step: K responses per prompt
 * sampled from each model with the same seeds, every response scored by the same scorer (a reward model, a
 * reward function or an LLM judge), and
 *
 * - the mean reward of each model's samples (± its standard error over samples);
 * - the win rate of the policy over the reference: sample j of a prompt against sample j of the same prompt
 *   (the same seed), wins, ties and losses counted apart;
 * - KL(π‖μ) on the policy's samples: the mean of log π(y|x) − log μ(y|x) over them, both log-probs summed
 *   over the exact generated tokens (the stop token included) by the scoring graph training uses. It is
 *   the KL of the distribution sampled only at temperature 1 without top-k/top-p (the result says so
 *   otherwise);
 * - the mean response length in tokens, and how many responses `--max-new-tokens` cut.
 *
 * {@link writeEval} puts `eval.json`, both models' scored samples (the reward format `deno task train`
 * reads) and `charts/eval.svg` in a folder.
 * @module
 */
import { join } from "node:path";
import type { Message } from "../data/types.ts";
import { loadModelFolder } from "../model/model_folder.ts";
import type { Device } from "../runtime/tensor.ts";
import { barChart } from "../train/bar_chart.ts";
import { loadReferenceModel } from "../train/reference.ts";
import { scoreExamples } from "../train/scoring.ts";
import { writeJsonAtomic, writeTextAtomic } from "../files.ts";
import { openGenerator, openScorer } from "../model/open.ts";
import { type PromptRow, readPrompts } from "./prompts.ts";
import { promptJobs, type SampledResponse, sampleRows } from "./sample_rows.ts";
import { resolveSettings, type SampleSettings, type SampleSettingsInput } from "./sample_settings.ts";
import type { Scorer } from "./scorers/types.ts";

/** What {@link evaluateAgainstReference} needs. */
export type EvalOptions = {
  /** The aligned model: a run folder, an exported `policy/` or a Hugging Face folder. */
  policy: string;
  /** The model it is compared with (the SFT model); the same tokenizer. */
  reference: string;
  /** Prompts: any data file, folder or glob `deno task sample` reads. */
  prompts: string;
  /**
   * How to sample; what is not set is temperature 1, no top-k/top-p, no repetition penalty, K = 4, seed 0
   * (not the models' generation_config.json: both models sample the same way).
   */
  sample?: SampleSettingsInput;
  /** Score these responses. */
  scorer: Scorer;
  /** Sequences per generation call (default 32). */
  batch?: number;
  /** Prompts per log-prob batch (default 8). */
  scoreBatch?: number;
  device?: Device;
  /** Which CUDA device (default 0; a rank under a launcher passes its local rank's, rankCudaDevice). */
  deviceId?: number;
  /** Only the first n prompts. */
  limit?: number;
  /**
   * Only the prompts whose index (after `limit`) is `index` modulo `count`: a rank's share under a launcher
   * (lib/loop/eval_shards.ts merges the shares into the one-process result).
   */
  shard?: { index: number; count: number };
  log?: (line: string) => void;
  /** After each batch of a phase (`policy`, `reference`, `score`, `kl`): done of total. */
  onProgress?: (p: { phase: string; done: number; total: number }) => void;
  signal?: AbortSignal;
};

/** One model's side of an evaluation. */
export type EvalSide = {
  model: string;
  samples: number;
  mean_reward: number;
  /** Standard error of the mean reward, over samples. */
  reward_stderr: number;
  mean_tokens: number;
  /** Responses `max_new_tokens` cut (no stop token), as a fraction. */
  cut_by_length: number;
};

/** What an evaluation found (`eval.json`). */
export type EvalReport = {
  prompts: number;
  k: number;
  settings: SampleSettings;
  scorer: { kind: string; name: string };
  policy: EvalSide;
  reference: EvalSide;
  /** Sample j of each prompt, policy against reference: fractions of the pairs. */
  win_rate: { win: number; tie: number; loss: number; pairs: number; win_ties_half: number };
  /** KL(π‖μ) in nats per response, on the policy's samples, with its standard error. */
  kl: { mean: number; stderr: number; note?: string };
};

/** A scored response (`ids`, the generated tokens, are kept in memory only, not written). */
export type EvalResponse = SampledResponse & {
  reward: number;
  /** log π and log μ of the response (policy's samples only). */
  logp_policy?: number;
  logp_reference?: number;
};

/** One prompt's scored samples of one model. */
export type EvalRow = { id: unknown; prompt: string | Message[]; responses: EvalResponse[] };

/**
 * An evaluation: the report, and each model's scored samples. `promptsRead`: the prompts read (after
 * `limit`) before a `shard` took its share.
 */
export type Evaluation = {
  report: EvalReport;
  policyRows: EvalRow[];
  referenceRows: EvalRow[];
  promptsRead?: number;
};

/** Samples, scores and compares; see the module documentation. */
export async function evaluateAgainstReference(o: EvalOptions): Promise<Evaluation> {
  const log = o.log ?? ((l: string) => console.error(l));
  const read = await readPrompts(o.prompts, { limit: o.limit });
  const shard = o.shard ?? { index: 0, count: 1 };
  const prompts = read.prompts.filter((_, i) => i % shard.count === shard.index);
  // eval's own defaults, never generation_config.json's (KL(π‖μ) needs π unfiltered); a key present but
  // undefined is unset too
  const given = o.sample ?? {};
  const input: SampleSettingsInput = {
    ...given,
    temperature: given.temperature ?? 1,
    topP: given.topP ?? 1,
    topK: given.topK ?? 0,
    repetitionPenalty: given.repetitionPenalty ?? 1,
  };
  const pol = await sampleSide(o.policy, prompts, input, "policy", o, log);
  const ref = await sampleSide(o.reference, prompts, input, "reference", o, log);
  const s = pol.settings;
  const k = s.k;

  // every response scored by the one scorer, in prompt order
  const rewards = async (side: SideSamples, phase: string) => {
    const items = side.rows.flatMap((responses, i) =>
      responses.map((r, j) => ({
        prompt: prompts[i].messages,
        response: r.content,
        row: { id: prompts[i].id, prompt: prompts[i].given } as Record<string, unknown>,
        at: `${prompts[i].file}:${prompts[i].line} ${phase} sample ${j}`,
      }))
    );
    const out: number[] = [];
    const step = Math.max(1, (o.scoreBatch ?? 8) * k);
    for (let at = 0; at < items.length; at += step) {
      out.push(...await o.scorer.score(items.slice(at, at + step)));
      o.onProgress?.({ phase: "score", done: Math.min(at + step, items.length), total: items.length });
    }
    return out;
  };
  const polRewards = await rewards(pol, "policy");
  const refRewards = await rewards(ref, "reference");

  // log π and log μ of the policy's exact tokens
  const { policyLogps, referenceLogps } = await klLogps(o, pol, ref, log);

  const rowsOf = (side: SideSamples, r: number[], withLogps: boolean): EvalRow[] =>
    side.rows.map((responses, i) => ({
      id: prompts[i].id,
      prompt: prompts[i].given,
      responses: responses.map((resp, j) => ({
        ...resp,
        reward: r[i * k + j],
        ...(withLogps
          ? { logp_policy: policyLogps[i * k + j], logp_reference: referenceLogps[i * k + j] }
          : {}),
      })),
    }));
  const policyRows = rowsOf(pol, polRewards, true);
  const referenceRows = rowsOf(ref, refRewards, false);
  const report = evalReport({
    settings: s,
    scorer: { kind: o.scorer.kind, name: o.scorer.name },
    models: { policy: pol.name, reference: ref.name },
    policyRows,
    referenceRows,
  });
  return { report, policyRows, referenceRows, promptsRead: read.prompts.length };
}

/** What {@link evalReport} computes a report from: both models' scored rows, in prompt order. */
export type EvalParts = {
  settings: SampleSettings;
  scorer: { kind: string; name: string };
  /** The models' names (as the report shows them). */
  models: { policy: string; reference: string };
  policyRows: EvalRow[];
  referenceRows: EvalRow[];
};

/**
 * The report of scored rows (the policy's with both log-probs of each response): one process's rows, or
 * the rows of every rank's share put back in prompt order, which give the same report.
 */
export function evalReport(e: EvalParts): EvalReport {
  const s = e.settings, k = s.k;
  const rewardsOf = (rows: EvalRow[]) => rows.flatMap((r) => r.responses.map((x) => x.reward));
  const polRewards = rewardsOf(e.policyRows), refRewards = rewardsOf(e.referenceRows);
  const n = polRewards.length;
  if (refRewards.length !== n || e.referenceRows.length !== e.policyRows.length) {
    throw new RangeError(
      `the policy has ${e.policyRows.length} prompts and ${n} samples, the reference ` +
        `${e.referenceRows.length} and ${refRewards.length}`,
    );
  }
  let win = 0, tie = 0, loss = 0;
  for (let q = 0; q < n; q++) {
    if (polRewards[q] > refRewards[q]) win++;
    else if (polRewards[q] < refRewards[q]) loss++;
    else tie++;
  }
  const diffs = e.policyRows.flatMap((r) => r.responses.map((x) => x.logp_policy! - x.logp_reference!));
  const filtered = s.temperature !== 1 || s.topP < 1 || s.topK > 0 || s.repetitionPenalty !== 1;
  return {
    prompts: e.policyRows.length,
    k,
    settings: s,
    scorer: e.scorer,
    policy: sideStats(e.models.policy, e.policyRows, polRewards),
    reference: sideStats(e.models.reference, e.referenceRows, refRewards),
    win_rate: { win: win / n, tie: tie / n, loss: loss / n, pairs: n, win_ties_half: (win + tie / 2) / n },
    kl: {
      mean: mean(diffs),
      stderr: stderr(diffs),
      ...(filtered
        ? {
          note: "sampled with temperature ≠ 1, top-k, top-p or a repetition penalty: the samples are not " +
            "π's, so this is not KL(π‖μ) exactly",
        }
        : {}),
    },
  };
}

/**
 * One model's samples: its name and Hugging Face folder (a run's `policy/`), the settings, each prompt's
 * token ids and its K responses.
 */
type SideSamples = {
  name: string;
  dir: string;
  settings: SampleSettings;
  promptIds: number[][];
  rows: SampledResponse[][];
};

async function sampleSide(
  model: string,
  prompts: PromptRow[],
  input: SampleSettingsInput,
  phase: string,
  o: EvalOptions,
  log: (l: string) => void,
): Promise<SideSamples> {
  await using generator = await openGenerator(model, {
    device: o.device,
    deviceId: o.deviceId,
    log,
    withTokenizer: true,
  });
  const settings = resolveSettings(input, generator);
  const jobs = promptJobs(generator, prompts, settings);
  const rows: SampledResponse[][] = [];
  let sequences = 0;
  for await (
    const b of sampleRows(generator, jobs, settings, { batch: o.batch, ids: true, signal: o.signal })
  ) {
    rows.push(...b.rows.map((r) => r.responses));
    sequences += b.sequences;
    o.onProgress?.({ phase, done: sequences, total: jobs.length * settings.k });
  }
  if (rows.length < prompts.length) throw new Error(`evaluation stopped while sampling from ${model}`);
  return { name: generator.name, dir: generator.dir, settings, promptIds: jobs.map((j) => j.ids), rows };
}

/** Summed log-probs of the policy's samples under the policy and under the reference (scoring graphs). */
async function klLogps(
  o: EvalOptions,
  pol: SideSamples,
  ref: SideSamples,
  log: (l: string) => void,
): Promise<{ policyLogps: number[]; referenceLogps: number[] }> {
  const policyFolder = await loadModelFolder(pol.dir);
  const referenceFolder = await loadReferenceModel(ref.dir, policyFolder, log);
  const examples = pol.rows.map((responses, i) => ({
    promptIds: pol.promptIds[i],
    responseIds: responses.map((r) => r.ids!),
  }));
  const padId = policyFolder.config.padTokenId ?? 0;
  const score = async (folder: typeof policyFolder, phase: string) => {
    await using scorer = await openScorer(folder, { device: o.device ?? "cpu", deviceId: o.deviceId });
    const { logps } = await scoreExamples(scorer, examples, {
      padId,
      batchSize: o.scoreBatch ?? 8,
      onBatch: (done) => o.onProgress?.({ phase, done, total: examples.length }),
    });
    return logps.flatMap((row) => Array.from(row));
  };
  return { policyLogps: await score(policyFolder, "kl"), referenceLogps: await score(referenceFolder, "kl") };
}

function sideStats(model: string, rows: EvalRow[], rewards: number[]): EvalSide {
  const all = rows.flatMap((r) => r.responses);
  return {
    model,
    samples: all.length,
    mean_reward: mean(rewards),
    reward_stderr: stderr(rewards),
    mean_tokens: mean(all.map((r) => r.tokens)),
    cut_by_length: all.filter((r) => r.finish_reason === "length").length / Math.max(1, all.length),
  };
}

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** Standard error of the mean: the sample standard deviation over √n (0 for fewer than two values). */
function stderr(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  const v = xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1);
  return Math.sqrt(v / xs.length);
}

/** The report as a table for the terminal. */
export function formatEvalTable(r: EvalReport): string {
  const f = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : "—");
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const rows = [
    ["", "policy", "reference"],
    [
      "mean reward",
      `${f(r.policy.mean_reward)} ± ${f(r.policy.reward_stderr)}`,
      `${f(r.reference.mean_reward)} ± ${f(r.reference.reward_stderr)}`,
    ],
    ["mean length (tokens)", f(r.policy.mean_tokens, 1), f(r.reference.mean_tokens, 1)],
    ["cut by --max-new-tokens", pct(r.policy.cut_by_length), pct(r.reference.cut_by_length)],
  ];
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((row) => row[c].length)));
  const lines = rows.map((row) => row.map((cell, c) => cell.padEnd(widths[c])).join("   ").trimEnd());
  const w = r.win_rate;
  lines.push(
    "",
    `win rate, policy over reference (${w.pairs} pairs): ${pct(w.win)} wins, ${pct(w.tie)} ties, ` +
      `${pct(w.loss)} losses (${pct(w.win_ties_half)} counting a tie as half)`,
    `KL(π‖μ) on the policy's samples: ${f(r.kl.mean, 4)} ± ${f(r.kl.stderr, 4)} nats`,
  );
  if (r.kl.note) lines.push(`  (${r.kl.note})`);
  lines.push(`${r.prompts} prompts × K = ${r.k}; scored by ${r.scorer.kind} ${r.scorer.name}`);
  return lines.join("\n");
}

/** The report as an SVG bar chart: mean rewards with their standard errors, and the win rate split. */
export function evalChart(r: EvalReport): string {
  return barChart({
    title: `${r.policy.model} against ${r.reference.model} (${r.prompts} prompts × ${r.k})`,
    yLabel: "reward / fraction of pairs",
    groups: [
      {
        caption: "mean reward",
        bars: [
          { label: "policy", value: r.policy.mean_reward, err: r.policy.reward_stderr, color: "#1f77b4" },
          {
            label: "reference",
            value: r.reference.mean_reward,
            err: r.reference.reward_stderr,
            color: "#7f7f7f",
          },
        ],
      },
      {
        caption: "policy vs reference",
        bars: [
          { label: "win", value: r.win_rate.win, color: "#2ca02c" },
          { label: "tie", value: r.win_rate.tie, color: "#bcbd22" },
          { label: "loss", value: r.win_rate.loss, color: "#d62728" },
        ],
      },
    ],
  });
}

/**
 * `deno task eval`'s progress and log lines on stderr. On a terminal the progress is one line redrawn in
 * place (`\r…ESC[K`), cleared before a log line; anywhere else (a log file, a pipe) plain lines without
 * control characters: the first of each phase, its end, and at most one per `everyMs` between.
 */
export function evalProgressWriter(o: {
  tty: boolean;
  write: (text: string) => void;
  /** Milliseconds between plain lines (default 10 s). */
  everyMs?: number;
  now?: () => number;
}): {
  progress(p: { phase: string; done: number; total: number }): void;
  log(line: string): void;
  /** Ends the live line: cleared, or kept (`keep`, before an error) on a line of its own. */
  end(keep?: boolean): void;
} {
  const now = o.now ?? (() => performance.now());
  const every = o.everyMs ?? 10_000;
  let live = false, shown = "", phase = "", lastPlain = -Infinity;
  return {
    progress(p) {
      const line = `eval: ${p.phase} ${p.done}/${p.total}`;
      if (line === shown) return;
      shown = line;
      if (o.tty) {
        o.write(`\r${line}\x1b[K`);
        live = true;
        return;
      }
      const t = now();
      if (p.phase !== phase || p.done >= p.total || t - lastPlain >= every) {
        o.write(line + "\n");
        lastPlain = t;
      }
      phase = p.phase;
    },
    log(line) {
      if (live) shown = ""; // cleared: the next progress draws it again
      o.write(`${live ? "\r\x1b[K" : ""}${line}\n`);
      live = false;
    },
    end(keep = false) {
      if (live) o.write(keep ? "\n" : "\r\x1b[K");
      live = false;
    },
  };
}

/** Writes `eval.json`, `samples_policy.jsonl`, `samples_reference.jsonl` and `charts/eval.svg` in `dir`. */
export async function writeEval(dir: string, e: Evaluation): Promise<void> {
  await Deno.mkdir(join(dir, "charts"), { recursive: true });
  await writeJsonAtomic(join(dir, "eval.json"), e.report);
  const scorer = e.report.scorer;
  const jsonl = (rows: EvalRow[]) =>
    rows.map((r) =>
      JSON.stringify({ ...r, responses: r.responses.map(({ ids: _ids, ...resp }) => resp), scorer })
    ).join("\n") + "\n";
  await writeTextAtomic(join(dir, "samples_policy.jsonl"), jsonl(e.policyRows));
  await writeTextAtomic(join(dir, "samples_reference.jsonl"), jsonl(e.referenceRows));
  await writeTextAtomic(join(dir, "charts", "eval.svg"), evalChart(e.report));
}
