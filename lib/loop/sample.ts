/**
 * Sampling K responses per prompt from a model: the first step of the paper's loop (sample, score, train on
 * the scored responses), for a user's own model and prompts.
 *
 * The output is JSON Lines, one row per prompt in prompt order, close to the toolkit's reward format
 * (`deno task score` only adds each response's `reward`):
 *
 * ```json
 * {"id": 0, "prompt": "…", "responses": [{"content": "…", "tokens": 12, "finish_reason": "stop"}, …],
 *  "sampler": {"model": "zephyr-7b-sft", "temperature": 1, "top_p": 1, "top_k": 0, "seed": 0}}
 * ```
 *
 * What makes it fit long jobs:
 * - Reproducible: sample j of prompt i draws from its own generator, seeded from (seed, the prompt's id, j)
 *   ({@link sampleSeed}), so a row does not depend on the batch size, on sharding or on resumption.
 * - Resumable: rows are appended and synced batch by batch; the same command again continues after the last
 *   complete line (a partial last line is cut away) and writes nothing twice. The settings are kept beside
 *   the file (`<out>.meta.json`), and a command with other settings is refused rather than mixing samples.
 * - Shardable: `--shard i/n` takes the prompts whose index is i modulo n (SLURM arrays, Kubernetes indexed
 *   Jobs, GNU parallel); {@link mergeSamples} interleaves the shards back into prompt order and checks that
 *   every prompt is there exactly once, giving the file one unsharded run writes.
 *
 * A caveat on "byte for byte": a batch pads its prompts to its longest one, and the sums of the attention
 * run over the padded length, so the logits of one row can differ in their last bits with what shares its
 * batch. A draw is then different only if it lands within about 1e-7 of a token's boundary in the cumulative
 * distribution: in practice never, but not a guarantee (GPUs add their own kernel choices per shape).
 * Tokens are drawn in ONNX Runtime (lib/model/graph_sampler.ts, float32 sums) unless a repetition penalty
 * is set (then in JavaScript, float64): the same uniforms, so a file sampled one way is the other's but for
 * draws within float32 rounding of a boundary (over random 49k-token rows, 1 to 3 draws in 1,000).
 * @module
 */
import { basename, dirname, resolve } from "node:path";
import { createHash } from "node:crypto";
import { readLines } from "../data/jsonl.ts";
import { resolveDataFiles } from "../data/sources.ts";
import { tokenizePrompt, truncate } from "../data/tokenize.ts";
import type { Message } from "../data/types.ts";
import { generate } from "../model/generate.ts";
import { GraphSampler } from "../model/graph_sampler.ts";
import { type DeviceRequest, resolveDevice } from "../runtime/device.ts";
import type { Device } from "../runtime/session.ts";
import { isFile, tempPathFor, withPath, writeJsonAtomic } from "../files.ts";
import { lockFile } from "../lock.ts";
import {
  type Decoder,
  type DecoderInfo,
  inspectDecoder,
  modelFingerprint,
  openDecoder,
} from "./decoder_session.ts";
import { type PromptId, promptKey, type PromptRow, readPrompts } from "./prompts.ts";

// ---------------------------------------------------------------------------------------------------------
// Settings, seeds, shards
// ---------------------------------------------------------------------------------------------------------

/** How responses are sampled: everything that changes what is written. */
export type SampleSettings = {
  /** Responses per prompt. */
  k: number;
  seed: number;
  /** 0: greedy (the K responses are then the same). */
  temperature: number;
  /** Nucleus mass, (0, 1]; 1: off. */
  topP: number;
  /** 0: off. */
  topK: number;
  /** transformers' repetition penalty; 1: off. */
  repetitionPenalty: number;
  maxNewTokens: number;
  /** Longer prompts keep their last tokens (as training cuts them); null: no limit but the model's. */
  maxPromptLength: number | null;
};

/** What a caller may set; the rest comes from the model's generation_config.json, then the defaults. */
export type SampleSettingsInput = Partial<SampleSettings>;

/** Defaults where neither the caller nor generation_config.json says. */
export const SAMPLE_DEFAULTS = {
  k: 4,
  seed: 0,
  temperature: 1,
  topP: 1,
  topK: 0,
  repetitionPenalty: 1,
  maxNewTokens: 256,
  batch: 32,
} as const;

/** A wrong setting: the CLI shows it with its usage, and exits 2. */
export class SampleOptionError extends Error {
  override name = "SampleOptionError";
}

/** The settings of a run: the caller's, else the model's generation_config.json, else {@link SAMPLE_DEFAULTS}. */
export function resolveSettings(input: SampleSettingsInput, model: Pick<DecoderInfo, "generationDefaults">) {
  const gen = model.generationDefaults;
  const s: SampleSettings = {
    k: input.k ?? SAMPLE_DEFAULTS.k,
    seed: input.seed ?? SAMPLE_DEFAULTS.seed,
    temperature: input.temperature ?? gen.temperature ?? SAMPLE_DEFAULTS.temperature,
    topP: input.topP ?? gen.topP ?? SAMPLE_DEFAULTS.topP,
    topK: input.topK ?? gen.topK ?? SAMPLE_DEFAULTS.topK,
    repetitionPenalty: input.repetitionPenalty ?? gen.repetitionPenalty ?? SAMPLE_DEFAULTS.repetitionPenalty,
    maxNewTokens: input.maxNewTokens ?? SAMPLE_DEFAULTS.maxNewTokens,
    maxPromptLength: input.maxPromptLength ?? null,
  };
  checkSettings(s);
  return s;
}

/** Throws a {@link SampleOptionError} naming the first setting out of range. */
export function checkSettings(s: SampleSettingsInput): void {
  const bad = (flag: string, want: string, v: unknown) => {
    throw new SampleOptionError(`--${flag} must be ${want}, got ${v}`);
  };
  const int = (v: number | undefined | null, min: number) =>
    v === undefined || v === null || (Number.isSafeInteger(v) && v >= min);
  if (!int(s.k, 1)) bad("k", "a whole number ≥ 1", s.k);
  if (!int(s.seed, 0)) bad("seed", "a whole number ≥ 0", s.seed);
  if (s.temperature !== undefined && !(s.temperature >= 0 && Number.isFinite(s.temperature))) {
    bad("temperature", "≥ 0", s.temperature);
  }
  if (s.topP !== undefined && !(s.topP > 0 && s.topP <= 1)) bad("top-p", "in (0, 1]", s.topP);
  if (!int(s.topK, 0)) bad("top-k", "a whole number ≥ 0 (0: off)", s.topK);
  if (
    s.repetitionPenalty !== undefined && !(s.repetitionPenalty > 0 && Number.isFinite(s.repetitionPenalty))
  ) {
    bad("repetition-penalty", "> 0", s.repetitionPenalty);
  }
  if (!int(s.maxNewTokens, 1)) bad("max-new-tokens", "a whole number ≥ 1", s.maxNewTokens);
  if (!int(s.maxPromptLength, 1)) bad("max-prompt-length", "a whole number ≥ 1", s.maxPromptLength);
}

/**
 * The seed of sample `j` of the prompt with id `id` (its index when the row has none): a 32-bit hash of the
 * three, so each sample has its own generator whatever shares its batch, shard or run.
 */
export function sampleSeed(seed: number, id: PromptId, j: number): number {
  const text = `${seed}\u001f${JSON.stringify(id)}\u001f${j}`;
  // FNV-1a over the UTF-16 code units, then murmur3's finalizer to spread the bits
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A share of the prompts: those whose index is `index` modulo `count`. */
export type Shard = { index: number; count: number };

/** Parses `--shard i/n` (0-based i). */
export function parseShard(s: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(s);
  const index = Number(m?.[1]), count = Number(m?.[2]);
  if (!m || !Number.isSafeInteger(count) || count < 1 || index >= count) {
    throw new SampleOptionError(
      `--shard must be i/n with n ≥ 1 and 0 ≤ i < n (0-based: --shard 0/4 … 3/4), got "${s}"`,
    );
  }
  return { index, count };
}

/** How many of `total` prompts shard `shard` has. */
export function shardSize(total: number, shard: Shard): number {
  return Math.max(0, Math.ceil((total - shard.index) / shard.count));
}

// ---------------------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------------------

/** One sampled response. */
export type SampledResponse = {
  /** The text, the stop token left out. */
  content: string;
  /** Tokens generated, the stop token included. */
  tokens: number;
  /** `stop`: a stop id ended it; `length`: `maxNewTokens` did. */
  finish_reason: "stop" | "length";
  /** The generated token ids, the stop token included (only with `SampleRowsOptions.ids`; not written). */
  ids?: number[];
};

/** One output row: a prompt and its K responses. */
export type SampleRow = {
  id: PromptId;
  /** The prompt as the data gave it (a string, or messages). */
  prompt: string | Message[];
  responses: SampledResponse[];
  sampler: { model: string; temperature: number; top_p: number; top_k: number; seed: number };
};

/** A prompt ready to sample: its row and token ids. */
export type PromptJob = { row: PromptRow; ids: number[] };

/**
 * Prompt token ids as training renders them (the chat template, BOS first; `maxPromptLength` keeps the
 * end), checked against the model's context: a prompt that leaves no room for `maxNewTokens` is an error
 * naming its file and line.
 */
export function promptJobs(
  decoder: Pick<DecoderInfo, "tokenizer" | "contextLength">,
  rows: readonly PromptRow[],
  s: Pick<SampleSettings, "maxNewTokens" | "maxPromptLength">,
): PromptJob[] {
  return rows.map((row) => {
    let ids = tokenizePrompt(decoder.tokenizer, row.messages);
    if (s.maxPromptLength !== null) ids = truncate(ids, [], { maxPromptLength: s.maxPromptLength }).promptIds;
    if (ids.length + s.maxNewTokens > decoder.contextLength) {
      const where = row.unit === "line" ? `${row.file}:${row.line}` : `${row.file}: row ${row.line}`;
      throw new Error(
        `${where}: the prompt is ${ids.length} tokens; with --max-new-tokens ${s.maxNewTokens} it passes the ` +
          `model's context of ${decoder.contextLength} tokens: set --max-prompt-length (the prompt keeps its ` +
          `end, as in training) or lower --max-new-tokens`,
      );
    }
    return { row, ids };
  });
}

/** What {@link sampleRows} reports after each batch. */
export type BatchReport = {
  /** Rows completed by this batch, in prompt order (possibly none: a prompt's samples span batches). */
  rows: SampleRow[];
  /** Tokens this batch generated. */
  tokens: number;
  /** Sequences in the batch. */
  sequences: number;
};

/** Options for {@link sampleRows}. */
export type SampleRowsOptions = {
  /** Sequences per session run (default 32); prompts of different lengths share a batch, left padded. */
  batch?: number;
  /** Ends sampling at the next step; the rows finished before are still reported. */
  signal?: AbortSignal;
  /** The `sampler.model` of each row (default: the decoder's name). */
  modelName?: string;
  /** Keep each response's token ids (`ids`), for scoring the exact tokens (evaluation's KL). */
  ids?: boolean;
};

/**
 * Samples `s.k` responses for each prompt, `batch` sequences per call of `generate`, and yields the rows
 * completed by each batch in prompt order. Sample j of a prompt uses {@link sampleSeed}, so the rows do not
 * depend on `batch`. Stops early (rows completed so far reported) when `signal` aborts.
 */
export async function* sampleRows(
  decoder: Pick<Decoder, "session" | "codec" | "eosIds" | "padId" | "name">,
  jobs: readonly PromptJob[],
  s: SampleSettings,
  o: SampleRowsOptions = {},
): AsyncGenerator<BatchReport> {
  const batch = o.batch ?? SAMPLE_DEFAULTS.batch;
  if (!(Number.isSafeInteger(batch) && batch >= 1)) {
    throw new SampleOptionError(`--batch must be a whole number ≥ 1, got ${batch}`);
  }
  const sampler = {
    model: o.modelName ?? decoder.name,
    temperature: s.temperature,
    top_p: s.topP,
    top_k: s.topK,
    seed: s.seed,
  };
  const eos = new Set(decoder.eosIds);
  const results: (SampledResponse | undefined)[][] = jobs.map(() => new Array(s.k));
  let next = 0; // the first prompt not yet reported
  const total = jobs.length * s.k;
  // tokens are chosen in ONNX Runtime (only ids come back), unless a repetition penalty needs the logits
  const graphSampler = s.repetitionPenalty === 1 ? await GraphSampler.beside(decoder.session) : undefined;
  try {
    for (let at = 0; at < total; at += batch) {
      if (o.signal?.aborted) return;
      const part = Array.from({ length: Math.min(batch, total - at) }, (_, n) => {
        const q = at + n;
        return { p: Math.floor(q / s.k), j: q % s.k };
      });
      const { rows } = await generate(decoder.session, part.map(({ p }) => jobs[p].ids), {
        maxNewTokens: s.maxNewTokens,
        eosTokenIds: decoder.eosIds,
        temperature: s.temperature,
        topP: s.topP,
        topK: s.topK,
        repetitionPenalty: s.repetitionPenalty,
        seeds: part.map(({ p, j }) => sampleSeed(s.seed, jobs[p].row.id, j)),
        padTokenId: decoder.padId,
        signal: o.signal,
        sampler: graphSampler,
      });
      let tokens = 0;
      rows.forEach((r, n) => {
        tokens += r.tokens.length;
        if (r.finishReason === "abort") return;
        const stopped = r.finishReason === "eos" && eos.has(r.tokens.at(-1)!);
        const body = stopped ? r.tokens.slice(0, -1) : r.tokens;
        const { p, j } = part[n];
        results[p][j] = {
          content: decoder.codec.decode(body),
          tokens: r.tokens.length,
          finish_reason: stopped ? "stop" : "length",
          ...(o.ids ? { ids: r.tokens } : {}),
        };
      });
      const done: SampleRow[] = [];
      while (next < jobs.length && results[next].filter(Boolean).length === s.k) {
        const { row } = jobs[next];
        done.push({ id: row.id, prompt: row.given, responses: results[next] as SampledResponse[], sampler });
        results[next] = []; // reported: not kept
        next++;
      }
      yield { rows: done, tokens, sequences: part.length };
    }
  } finally {
    await graphSampler?.release();
  }
}

// ---------------------------------------------------------------------------------------------------------
// The sidecar: what a sample file is of
// ---------------------------------------------------------------------------------------------------------

/** `<out>.meta.json`: the settings a sample file was written with. */
export type SampleMeta = {
  kind: "nca-align.samples";
  version: 1;
  model: string;
  model_path: string;
  model_fingerprint: string;
  prompts: { source: string; format: string; count: number; digest: string };
  k: number;
  seed: number;
  temperature: number;
  top_p: number;
  top_k: number;
  repetition_penalty: number;
  max_new_tokens: number;
  max_prompt_length: number | null;
  stop_ids: number[];
  shard: Shard;
};

/** The sidecar of a sample file. */
export function metaPath(out: string): string {
  return `${out}.meta.json`;
}

/** Fields that do not change what is written (where the model and the prompts were found). */
const INFORMATIONAL = new Set(["model_path", "prompts.source"]);

/** The fields in which two metas differ, as `name: a → b`, leaving out `ignore` and the informational. */
export function metaDifferences(a: SampleMeta, b: SampleMeta, ignore: string[] = []): string[] {
  const flat = (m: SampleMeta) => {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(m)) {
      if (v && typeof v === "object" && !Array.isArray(v)) {
        for (const [k2, v2] of Object.entries(v)) out[`${k}.${k2}`] = v2;
      } else out[k] = v;
    }
    return out;
  };
  const fa = flat(a), fb = flat(b);
  const skip = (k: string) => INFORMATIONAL.has(k) || ignore.some((i) => k === i || k.startsWith(`${i}.`));
  const names = [...new Set([...Object.keys(fa), ...Object.keys(fb)])].filter((k) => !skip(k));
  const show = (v: unknown) => JSON.stringify(v) ?? "none";
  return names.filter((k) => show(fa[k]) !== show(fb[k])).map((k) => `${k}: ${show(fa[k])} → ${show(fb[k])}`);
}

async function readMeta(path: string): Promise<SampleMeta | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const v = JSON.parse(text);
    if (v?.kind !== "nca-align.samples") throw new Error('no "kind": "nca-align.samples"');
    return v as SampleMeta;
  } catch (e) {
    throw new Error(`${path}: not a sample file's settings (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Writing, resuming
// ---------------------------------------------------------------------------------------------------------

/** The complete lines of a file: how many, where they end, and the last one. */
type LinesOf = { lines: number; end: number; size: number; last: string | null };

/** Counts the complete lines of `path` (a stream: files of any size) and keeps the last one. */
async function completeLines(path: string): Promise<LinesOf> {
  using f = await Deno.open(path);
  const size = (await f.stat()).size;
  const buf = new Uint8Array(1 << 20);
  let lines = 0, pos = 0, end = 0, prevEnd = 0;
  for (;;) {
    const n = await f.read(buf);
    if (n === null) break;
    const chunk = buf.subarray(0, n);
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) {
      lines++;
      prevEnd = end;
      end = pos + i + 1;
    }
    pos += n;
  }
  let last: string | null = null;
  if (lines > 0) {
    const bytes = new Uint8Array(end - 1 - prevEnd);
    await f.seek(prevEnd, Deno.SeekMode.Start);
    let got = 0;
    while (got < bytes.length) got += (await f.read(bytes.subarray(got))) ?? bytes.length;
    last = new TextDecoder().decode(bytes);
  }
  return { lines, end, size, last };
}

/** Options for {@link sampleToFile}. */
export type SampleOptions = SampleSettingsInput & {
  /** A model folder, an exported folder or a run folder (see decoder_session.ts). */
  model: string;
  /** A data file, folder or glob (see prompts.ts). */
  prompts: string;
  /** The JSONL to write (appended to, when it holds an earlier run of the same command). */
  out: string;
  /** Sequences per session run (default 32). */
  batch?: number;
  shard?: Shard;
  device?: DeviceRequest;
  threads?: number;
  /** Ends after the current step: the finished rows are written, the run can be resumed. */
  signal?: AbortSignal;
  /** Notices. Default: stderr. */
  log?: (line: string) => void;
  /** After each written batch. */
  onProgress?: (p: SampleProgress) => void;
};

/** Where a run stands. */
export type SampleProgress = {
  /** Prompts of this shard in the file (earlier runs' included). */
  done: number;
  total: number;
  /** Prompts found in the file at the start. */
  resumed: number;
  /** Tokens generated by this run. */
  tokens: number;
  /** Seconds this run has sampled (the model's loading not counted). */
  seconds: number;
};

/** What {@link sampleToFile} did. */
export type SampleResult = SampleProgress & {
  out: string;
  meta: SampleMeta;
  /** The run was stopped by its signal before the end. */
  interrupted: boolean;
  device: Device | null;
};

/**
 * Samples `k` responses for every prompt (of the shard) into `out`, resuming an earlier run of the same
 * settings: see the module documentation.
 *
 * @example
 * ```ts
 * await sampleToFile({ model: "models/zephyr-7b-sft", prompts: "prompts.jsonl", out: "samples.jsonl", k: 4 });
 * ```
 */
export async function sampleToFile(o: SampleOptions): Promise<SampleResult> {
  const log = o.log ?? ((line: string) => console.error(line));
  checkSettings(o);
  if (o.batch !== undefined && !(Number.isSafeInteger(o.batch) && o.batch >= 1)) {
    throw new SampleOptionError(`--batch must be a whole number ≥ 1, got ${o.batch}`);
  }
  const shard = o.shard ?? { index: 0, count: 1 };
  const out = resolve(o.out);
  await Deno.mkdir(dirname(out), { recursive: true }); // `samples/part.3.jsonl` from a job array
  // one writer per file: a second run on it is refused at once, naming the first
  await using _lock = await lockFile(out, { log });
  const set = await readPrompts(o.prompts).catch((e) => {
    throw new Error(`--prompts ${(e as Error).message}`, { cause: e });
  });
  const info = await inspectDecoder(o.model, { log });
  const s = resolveSettings(o, info);
  if (s.temperature === 0 && s.k > 1) {
    log(`note: temperature 0 is greedy: the ${s.k} responses will be the same`);
  }
  const meta: SampleMeta = {
    kind: "nca-align.samples",
    version: 1,
    model: info.name,
    model_path: info.dir,
    model_fingerprint: await modelFingerprint(info.dir),
    prompts: { source: o.prompts, format: set.format, count: set.prompts.length, digest: set.digest },
    k: s.k,
    seed: s.seed,
    temperature: s.temperature,
    top_p: s.topP,
    top_k: s.topK,
    repetition_penalty: s.repetitionPenalty,
    max_new_tokens: s.maxNewTokens,
    max_prompt_length: s.maxPromptLength,
    stop_ids: info.eosIds,
    shard,
  };
  const mine = set.prompts.filter((_, i) => i % shard.count === shard.index);
  const resumed = await resumePoint(out, meta, mine, log);
  const progress: SampleProgress = { done: resumed, total: mine.length, resumed, tokens: 0, seconds: 0 };
  if (resumed === mine.length) {
    return { ...progress, out, meta, interrupted: false, device: null };
  }

  const todo = promptJobs(info, mine.slice(resumed), s);
  const { device, notice } = await resolveDevice(o.device ?? "cpu");
  if (notice) log(notice.replace("training on", "sampling on"));
  const decoder = await openDecoder(info, { device, threads: o.threads, log });
  let interrupted = false;
  try {
    using file = await Deno.open(out, { append: true, create: true }).catch((e) => {
      throw withPath(e, out);
    });
    const encoder = new TextEncoder();
    const t0 = performance.now();
    for await (const b of sampleRows(decoder, todo, s, { batch: o.batch, signal: o.signal })) {
      if (b.rows.length) {
        const bytes = encoder.encode(b.rows.map((r) => JSON.stringify(r) + "\n").join(""));
        try {
          for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
          await file.sync();
        } catch (e) {
          // a full disk: the rows written before stay whole (a partial last line is cut on resume)
          throw withPath(e, out);
        }
      }
      progress.done += b.rows.length;
      progress.tokens += b.tokens;
      progress.seconds = (performance.now() - t0) / 1000;
      o.onProgress?.({ ...progress });
    }
    interrupted = progress.done < mine.length;
  } finally {
    await decoder.release();
  }
  return { ...progress, out, meta, interrupted, device };
}

/**
 * How many of the shard's prompts `out` already holds, after checking that it was written with `meta`'s
 * settings (else an error naming what differs) and cutting a partial last line. Writes the sidecar for a
 * fresh file.
 */
async function resumePoint(
  out: string,
  meta: SampleMeta,
  prompts: readonly PromptRow[],
  log: (line: string) => void,
): Promise<number> {
  const sidecar = metaPath(out);
  const old = await readMeta(sidecar);
  const lines = (await isFile(out)) ? await completeLines(out) : null;
  if (!lines || lines.size === 0) {
    await writeJsonAtomic(sidecar, meta);
    // a shard without prompts still leaves its (empty) file
    await Deno.writeFile(out, new Uint8Array()).catch((e) => {
      throw withPath(e, out);
    });
    return 0;
  }
  if (!old) {
    throw new Error(
      `${out} exists and has no ${basename(sidecar)} beside it: it was not written by this command, so it ` +
        `cannot be resumed. Remove it or choose another --out`,
    );
  }
  const diff = metaDifferences(old, meta);
  if (diff.length) {
    throw new Error(
      `${out} was sampled with other settings (${diff.join("; ")}). Resuming would mix them: choose ` +
        `another --out, or remove ${out} and ${basename(sidecar)} to start over`,
    );
  }
  if (lines.lines > prompts.length) {
    throw new Error(
      `${out} has ${lines.lines} rows but there are ${prompts.length} prompts: not this run's file`,
    );
  }
  if (lines.last !== null) {
    let id: unknown;
    try {
      id = JSON.parse(lines.last).id;
    } catch {
      throw new Error(`${out}:${lines.lines}: not a JSON row; the file is damaged (remove it to start over)`);
    }
    const want = prompts[lines.lines - 1].id;
    if (JSON.stringify(id) !== JSON.stringify(want)) {
      throw new Error(
        `${out}:${lines.lines}: the row of prompt ${JSON.stringify(id)} stands where prompt ` +
          `${JSON.stringify(want)} belongs: the file does not follow these prompts`,
      );
    }
  }
  if (lines.end < lines.size) {
    log(
      `note: ${out}: cut a partial last line (${lines.size - lines.end} bytes): a run was stopped mid-write`,
    );
    await Deno.truncate(out, lines.end).catch((e) => {
      throw withPath(e, out);
    });
  }
  if (lines.lines > 0 && lines.lines < prompts.length) {
    log(`resuming ${out} after ${lines.lines} of ${prompts.length} prompts`);
  }
  return lines.lines;
}

// ---------------------------------------------------------------------------------------------------------
// Merging shards
// ---------------------------------------------------------------------------------------------------------

/** What {@link mergeSamples} wrote. */
export type MergeResult = { out: string; rows: number; shards: number; files: string[] };

/**
 * Merges the files of a sharded run (paths, globs or folders; each with its `.meta.json`) into `out`, in
 * prompt order, and writes its sidecar: the result is the file one unsharded run writes. Refuses shards of
 * other settings, a shard missing or given twice, a shard not finished or with rows too many, and rows
 * whose prompts are not, in order, the ones sampled (each prompt exactly once).
 */
export async function mergeSamples(out: string, inputs: readonly string[]): Promise<MergeResult> {
  const target = resolve(out);
  await using _lock = await lockFile(target);
  const files: string[] = [];
  for (const input of inputs) {
    if (await isFile(input)) {
      if (resolve(input) === target) throw new Error(`--merge: the output ${out} is also one of the inputs`);
      files.push(input);
      continue;
    }
    // a glob or a folder: its sample files, the sidecars and the output itself left out
    const found = (await resolveDataFiles(input)).files;
    for (const f of found) if (!f.endsWith(".meta.json") && resolve(f) !== target) files.push(f);
  }
  if (files.length === 0) throw new Error(`--merge: no sample files in ${inputs.join(" ")}`);
  const shards: { file: string; meta: SampleMeta }[] = [];
  for (const file of files) {
    const meta = await readMeta(metaPath(file));
    if (!meta) {
      throw new Error(
        `${file}: no ${basename(metaPath(file))} beside it (sample writes one per output file)`,
      );
    }
    shards.push({ file, meta });
  }
  const first = shards[0];
  for (const sh of shards.slice(1)) {
    const diff = metaDifferences(first.meta, sh.meta, ["shard"]);
    if (diff.length) {
      throw new Error(`${sh.file} was sampled with other settings than ${first.file}: ${diff.join("; ")}`);
    }
  }
  const n = first.meta.shard.count, total = first.meta.prompts.count;
  const byIndex: ({ file: string; meta: SampleMeta } | undefined)[] = new Array(n);
  for (const sh of shards) {
    const { index, count } = sh.meta.shard;
    if (count !== n) throw new Error(`${sh.file} is shard ${index}/${count}, ${first.file} one of ${n}`);
    if (byIndex[index]) {
      throw new Error(`shard ${index}/${n} is given twice: ${byIndex[index]!.file} and ${sh.file}`);
    }
    byIndex[index] = sh;
  }
  const missing = [...byIndex.keys()].filter((i) => !byIndex[i]);
  if (missing.length) {
    throw new Error(
      `shard${missing.length > 1 ? "s" : ""} ${missing.map((i) => `${i}/${n}`).join(", ")} missing: ` +
        `their prompts (index ${missing[0]}, ${missing[0] + n}, … of ${total}) would not be in ${out}`,
    );
  }
  // each shard whole: no partial line, as many rows as its prompts
  for (const [i, sh] of byIndex.entries()) {
    const lines = (await isFile(sh!.file)) ? await completeLines(sh!.file) : { lines: 0, end: 0, size: 0 };
    const want = shardSize(total, { index: i, count: n });
    if (lines.end < lines.size || lines.lines < want) {
      throw new Error(
        `${sh!.file} (shard ${i}/${n}) has ${lines.lines} of its ${want} prompts: unfinished; rerun its ` +
          `command to complete it`,
      );
    }
    if (lines.lines > want) {
      throw new Error(
        `${sh!.file} (shard ${i}/${n}) has ${lines.lines} rows for ${want} prompts: rows repeated`,
      );
    }
  }

  // interleave, checking every prompt against the digest of the prompts sampled
  const readers = byIndex.map((sh) => readLines(sh!.file)[Symbol.asyncIterator]());
  const hash = createHash("sha256");
  const tmp = tempPathFor(target);
  try {
    {
      using f = await Deno.open(tmp, { write: true, createNew: true });
      const encoder = new TextEncoder();
      let pending: string[] = [], size = 0;
      const flush = async () => {
        const bytes = encoder.encode(pending.join(""));
        try {
          for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
        } catch (e) {
          throw withPath(e, target);
        }
        pending = [];
        size = 0;
      };
      for (let p = 0; p < total; p++) {
        const sh = byIndex[p % n]!;
        const next = await readers[p % n].next();
        if (next.done) throw new Error(`${sh.file} ended early`);
        const [line, lineNo] = next.value;
        let row: SampleRow;
        try {
          row = JSON.parse(line);
        } catch {
          throw new Error(`${sh.file}:${lineNo}: not a JSON row`);
        }
        hash.update(promptKey(row.id, row.prompt));
        pending.push(line + "\n");
        size += line.length;
        if (size > 1 << 20) await flush();
      }
      await flush();
      await f.sync().catch((e) => {
        throw withPath(e, target);
      });
    }
    if (`sha256:${hash.digest("hex")}` !== first.meta.prompts.digest) {
      throw new Error(
        `the merged rows are not the prompts the shards were sampled from, each once and in order ` +
          `(a row edited, repeated or dropped in one of ${files.join(", ")})`,
      );
    }
    await Deno.rename(tmp, target);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  } finally {
    for (const r of readers) await r.return?.(undefined);
  }
  await writeJsonAtomic(metaPath(target), { ...first.meta, shard: { index: 0, count: 1 } });
  return { out: target, rows: total, shards: n, files: byIndex.map((sh) => sh!.file) };
}
