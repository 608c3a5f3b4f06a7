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
import { type DeviceRequest, resolveDevice } from "../runtime/device.ts";
import type { Device } from "../runtime/tensor.ts";
import { isFile, tempPathFor, withPath, writeJsonAtomic } from "../files.ts";
import { lockFile } from "../lock.ts";
import { modelFingerprint } from "../model/fingerprint.ts";
import { inspectModel, openGenerator } from "../model/open.ts";
import { promptKey, type PromptRow, readPrompts } from "./prompts.ts";
import { rankShardPath, type ShardWaitOptions, waitForRankFiles } from "./rank_shards.ts";
import { promptJobs, type SampleRow, sampleRows } from "./sample_rows.ts";
import {
  checkSettings,
  resolveSettings,
  SampleOptionError,
  type SampleSettingsInput,
  type Shard,
  shardSize,
} from "./sample_settings.ts";

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
  /** `--chat-template-kwargs`; absent when none were given (files written before it have none). */
  chat_template_kwargs?: Record<string, unknown>;
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
  /** A model folder, an exported folder or a run folder (see lib/model/open.ts). */
  model: string;
  /** A data file, folder or glob (see prompts.ts). */
  prompts: string;
  /** The JSONL to write (appended to, when it holds an earlier run of the same command). */
  out: string;
  /** Sequences per session run (default 32). */
  batch?: number;
  shard?: Shard;
  device?: DeviceRequest;
  /** Which CUDA device (default 0; a rank under a launcher passes its local rank's, rankCudaDevice). */
  deviceId?: number;
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
 * // a function, since it needs a model: `model` is a Hugging Face folder, an exported one or a run folder
 * export async function sampleFour(model: string): Promise<number> {
 *   const r = await sampleToFile({ model, prompts: "prompts.jsonl", out: "samples.jsonl", k: 4 });
 *   return r.done; // prompts in samples.jsonl, an earlier interrupted run's included
 * }
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
  const info = await inspectModel(o.model, { log });
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
    ...(s.templateKwargs ? { chat_template_kwargs: s.templateKwargs } : {}),
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
  await using generator = await openGenerator(info, {
    device,
    deviceId: o.deviceId,
    threads: o.threads,
    log,
  });
  let interrupted = false;
  {
    using file = await Deno.open(out, { append: true, create: true }).catch((e) => {
      throw withPath(e, out);
    });
    const encoder = new TextEncoder();
    const t0 = performance.now();
    for await (const b of sampleRows(generator, todo, s, { batch: o.batch, signal: o.signal })) {
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

// ---------------------------------------------------------------------------------------------------------
// Under a launcher: a shard per rank, merged by rank 0
// ---------------------------------------------------------------------------------------------------------

/** Whether `file` is shard `shard` of a run of `total` prompts, written whole (its sidecar says so). */
async function shardComplete(file: string, shard: Shard): Promise<{ complete: boolean; size: number }> {
  const meta = await readMeta(metaPath(file)).catch(() => null);
  if (!meta || !(await isFile(file))) return { complete: false, size: -1 };
  if (meta.shard.index !== shard.index || meta.shard.count !== shard.count) {
    throw new Error(
      `${file} is shard ${meta.shard.index}/${meta.shard.count} by its sidecar, not ${shard.index}/${shard.count}`,
    );
  }
  const lines = await completeLines(file);
  const want = shardSize(meta.prompts.count, shard);
  return { complete: lines.end === lines.size && lines.lines === want, size: lines.size };
}

/**
 * Waits until every shard file of `count` ranks is complete (its sidecar there and as many whole rows as its
 * prompts). The other ranks run without a communicator (sampling spawns processes, which Open MPI forbids
 * after MPI_Init), so their files are the only signal: the wait fails when none of the missing shards has
 * grown for `timeoutMs`, naming their ranks. False when the signal ended it.
 */
export function waitForShards(out: string, count: number, o: ShardWaitOptions = {}): Promise<boolean> {
  return waitForRankFiles(out, count, shardComplete, o);
}

/** What {@link sampleAsRank} did: this rank's sampling, and on rank 0 the merge (absent when interrupted). */
export type RankSampleResult = SampleResult & { merged?: MergeResult };

/**
 * `sample` as rank `rank` of `size` under a launcher (torchrun, mpirun, srun; no `--shard`): this rank
 * samples shard `rank/size` into {@link rankShardPath}, and rank 0 then waits for the other ranks' shards
 * ({@link waitForShards}) and merges them into `out`, the file one process writes. No communicator is opened.
 */
export async function sampleAsRank(
  o: Omit<SampleOptions, "shard">,
  world: { rank: number; size: number },
  wait: Omit<ShardWaitOptions, "signal"> = {},
): Promise<RankSampleResult> {
  const shard = { index: world.rank, count: world.size };
  const r = await sampleToFile({ ...o, shard, out: rankShardPath(o.out, shard) });
  if (world.rank !== 0 || r.interrupted) return r;
  const done = await waitForShards(o.out, world.size, { ...wait, signal: o.signal });
  if (!done) return { ...r, interrupted: true };
  const files = Array.from(
    { length: world.size },
    (_, i) => rankShardPath(o.out, { index: i, count: world.size }),
  );
  return { ...r, merged: await mergeSamples(o.out, files) };
}
