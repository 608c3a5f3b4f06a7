/**
 * Text generation over an exported serving model (see export.ts): prefill the prompts, then decode one
 * token at a time, feeding each step's `present.*` back as the next step's `past_key_values.*`.
 *
 * Prompts of different lengths are batched with left padding, exactly as transformers.js batches them
 * (attention mask 0 on the padding, position ids = cumulative sum of the mask − 1), so a prompt gives the
 * same tokens alone or in a batch. Rows that finish leave the batch: their cache rows are dropped, so
 * the remaining rows run as a smaller batch.
 *
 * Every chosen token comes with its log-probability under the model's own distribution (temperature 1,
 * no top-k/top-p), and optionally the most likely alternatives: what OpenAI's `logprobs` and
 * `top_logprobs` report.
 *
 * The cache is held by the session between steps (in the device's memory where its backend can keep it
 * there, see lib/runtime/session.ts). Tokens are chosen in JavaScript from the last position's logits, or,
 * given a {@link GraphSampler} (`sampler`), inside ONNX Runtime: then only the tokens and their log-probs
 * come back. A run blocks the thread it runs on: a server runs this in a Worker.
 * @module
 */
import type { ModelSession } from "../runtime/session.ts";
import {
  type Feeds,
  type HeldTensor,
  type HostTensor,
  isHostTensor,
  type Placement,
} from "../runtime/tensor.ts";
import { logSumExp } from "../losses/stable.ts";
import type { GraphSample, GraphSampler } from "./graph_sampler.ts";
import {
  applyRepetitionPenalty,
  mulberry32,
  type Rng,
  sampleToken,
  type SamplingParams,
  type TokenIdLogprob,
  topKIndices,
} from "./sampling.ts";

// ---------------------------------------------------------------------------------------------------------
// The serving model's interface (what export.ts writes and transformers.js feeds)
// ---------------------------------------------------------------------------------------------------------

/** Input/output names of a serving decoder, as transformers.js (and optimum's exports) name them. */
export const SERVING_NAMES = {
  inputIds: "input_ids",
  attentionMask: "attention_mask",
  positionIds: "position_ids",
  /** Scalar int64: how many trailing positions get logits (0: all). transformers.js feeds 1 while generating. */
  logitsToKeep: "num_logits_to_keep",
  logits: "logits",
  pastKey: (layer: number): string => `past_key_values.${layer}.key`,
  pastValue: (layer: number): string => `past_key_values.${layer}.value`,
  presentKey: (layer: number): string => `present.${layer}.key`,
  presentValue: (layer: number): string => `present.${layer}.value`,
} as const;

/** Symbolic dimension names of the serving model's inputs; transformers.js resolves `batch_size` itself. */
export const SERVING_DIMS = {
  batch: "batch_size",
  sequence: "sequence_length",
  past: "past_sequence_length",
  total: "total_sequence_length",
} as const;

/** The KV cache geometry of a serving model: per layer `[batch, numKvHeads, seq, headDim]`. */
export type KvLayout = {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  /** Whether the model takes `position_ids` (else it derives positions itself). */
  positionIds: boolean;
  /** Whether the model takes `num_logits_to_keep`. */
  logitsToKeep: boolean;
};

/**
 * What {@link generate} needs from a session: {@link ModelSession} fits. A stand-in may answer every
 * output as a host tensor; a session holds what is placed `"device"` (the cache), and reads it back with
 * `toHost` when rows leave the batch.
 */
export type GenerationSession = Pick<ModelSession, "inputNames"> & {
  inputMetadata?: readonly { name: string; shape?: readonly unknown[] }[];
  run(feeds: Feeds, placement: Record<string, Placement>): Promise<Record<string, HostTensor | HeldTensor>>;
  toHost?: ModelSession["toHost"];
};

/**
 * Reads the cache geometry from a session's input metadata (`past_key_values.{i}.key` of shape
 * `[batch, heads, past, headDim]` with numeric heads and headDim, as export.ts writes them).
 */
export function kvLayoutOf(session: GenerationSession): KvLayout {
  const names = new Set(session.inputNames);
  let numLayers = 0;
  while (names.has(SERVING_NAMES.pastKey(numLayers))) numLayers++;
  if (numLayers === 0) {
    throw new Error(
      `not a serving decoder: no ${SERVING_NAMES.pastKey(0)} input (inputs: ${
        session.inputNames.join(", ")
      })`,
    );
  }
  const meta = session.inputMetadata ?? [];
  const key = meta.find((m) => m.name === SERVING_NAMES.pastKey(0));
  const [, heads, , dim] = key?.shape ?? [];
  if (typeof heads !== "number" || typeof dim !== "number") {
    throw new Error(
      `${SERVING_NAMES.pastKey(0)} must declare numeric heads and head_dim (got [${key?.shape?.join(", ")}])`,
    );
  }
  return {
    numLayers,
    numKvHeads: heads,
    headDim: dim,
    positionIds: names.has(SERVING_NAMES.positionIds),
    logitsToKeep: names.has(SERVING_NAMES.logitsToKeep),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------------------

/** Why a row stopped. */
export type StopReason = "eos" | "length" | "stop" | "abort";

/** One chosen token and what the model thought of it. */
export type TokenChoice = {
  token: number;
  /** log p(token) under the unmodified model distribution. */
  logprob: number;
  /** The `topLogprobs` most likely tokens at this step (present when asked for). */
  top?: TokenIdLogprob[];
};

/** Options for {@link generate}. */
export type GenerateOptions = SamplingParams & {
  /** The most tokens to generate per row (EOS included). */
  maxNewTokens: number;
  /** Token ids that end a row (the EOS token is kept in the output, with its log-prob). */
  eosTokenIds?: readonly number[];
  /** Seed for sampling; rows draw from one generator in row order. Default: random. */
  seed?: number;
  /**
   * A seed per row instead: each row draws from its own generator (undefined: random), so a row samples
   * what it would alone with that seed, whatever else is in the batch (the server's `n`).
   */
  seeds?: readonly (number | undefined)[];
  /** Called after each token of a row with the row's generated tokens; true ends the row ("stop"). */
  stop?: (tokens: readonly number[], row: number) => boolean;
  /**
   * Called after every step with each row's new token (null for rows already finished) and why each row
   * that ended at this step ended (null for the others).
   */
  onToken?: (
    step: number,
    tokens: readonly (number | null)[],
    choices: readonly (TokenChoice | null)[],
    finished: readonly (StopReason | null)[],
  ) => void;
  /** Ends generation at the next step boundary; rows still running finish with "abort". */
  signal?: AbortSignal;
  /** How many alternatives to report per token (0: none). */
  topLogprobs?: number;
  /** The id used for left padding (masked out, so any valid id). Default 0. */
  padTokenId?: number;
  /**
   * transformers' repetition penalty over each row's prompt and generated tokens before a token is chosen
   * (greedy included; log-probs stay the model's own). Default 1: none.
   */
  repetitionPenalty?: number;
  /** Cache geometry, when the session's metadata does not tell it. */
  layout?: KvLayout;
  /**
   * Choose tokens in ONNX Runtime (graph_sampler.ts): only the tokens and their log-probs come back, not the
   * logits; each row draws its uniform from its generator as the host sampler does, so seeds reproduce, and
   * for the same draw the token is the host's but within float32 rounding of a boundary. The host samples
   * instead (this call) when a repetition penalty or `topLogprobs` is asked for: both need the logits.
   */
  sampler?: GraphSampler;
};

/** One row's output. */
export type GeneratedRow = {
  /** The generated tokens (not the prompt), EOS included when it ended the row. */
  tokens: number[];
  /** log p of each generated token under the model. */
  logprobs: number[];
  /** The alternatives per token, when `topLogprobs` was asked for. */
  topLogprobs?: TokenIdLogprob[][];
  stopReason: StopReason;
};

/** What {@link generate} returns: one entry per prompt, in order. */
export type GenerateResult = { rows: GeneratedRow[]; steps: number };

/**
 * Generates continuations of token-id prompts with a KV cache: greedy when `temperature` is 0, else
 * seeded sampling with temperature / top-k / top-p. Stops each row at an EOS id, at `maxNewTokens`, when
 * `stop` says so, and all rows when `signal` aborts (results so far are returned).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ModelSession } from "../runtime/session.ts";
 * import { parseConfig } from "./config.ts";
 * import { exportForServing } from "./export.ts";
 * import { initWeights } from "./init.ts";
 * const cfg = parseConfig({ // a tiny random Llama; a trained run's policy/ is such a folder
 *   model_type: "llama", vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4,
 *   num_key_value_heads: 2, intermediate_size: 64, max_position_embeddings: 64,
 * });
 * const folder = await Deno.makeTempDir();
 * await exportForServing(folder, { cfg, weights: initWeights(cfg) });
 * const session = await ModelSession.create(`${folder}/onnx/model.onnx`);
 * const promptIds = [5, 6, 7];
 * const opts = { maxNewTokens: 8, temperature: 0, eosTokenIds: [2] };
 * const { rows } = await generate(session, [promptIds], opts);
 * assert.ok(rows[0].tokens.length <= 8); // the greedy continuation, stopped at EOS or at maxNewTokens
 * await session.release();
 * await Deno.remove(folder, { recursive: true });
 * ```
 */
export async function generate(
  session: GenerationSession,
  promptIds: readonly (readonly number[])[],
  opts: GenerateOptions,
): Promise<GenerateResult> {
  const B = promptIds.length;
  const k = opts.topLogprobs ?? 0;
  const rows: GeneratedRow[] = promptIds.map(() => ({
    tokens: [],
    logprobs: [],
    ...(k > 0 ? { topLogprobs: [] } : {}),
    stopReason: "length" as StopReason,
  }));
  if (B === 0) return { rows, steps: 0 };
  promptIds.forEach((p, i) => {
    if (p.length === 0) throw new RangeError(`prompt ${i} is empty: generation needs at least one token`);
  });
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 0)) {
    throw new RangeError(`maxNewTokens must be a whole number, got ${opts.maxNewTokens}`);
  }
  if (opts.maxNewTokens === 0) return { rows, steps: 0 };
  const layout = opts.layout ?? kvLayoutOf(session);
  const eos = new Set(opts.eosTokenIds ?? []);
  const randomSeed = () => Math.floor(Math.random() * 2 ** 32);
  if (opts.seeds && opts.seeds.length !== B) {
    throw new RangeError(`${opts.seeds.length} seeds for ${B} prompts`);
  }
  const rng: Rng = mulberry32(opts.seed ?? randomSeed());
  const rngs = opts.seeds?.map((s) => mulberry32(s ?? randomSeed()));
  const sampling: SamplingParams = { temperature: opts.temperature, topP: opts.topP, topK: opts.topK };
  const penalty = opts.repetitionPenalty ?? 1;
  if (!(penalty > 0 && Number.isFinite(penalty))) {
    throw new RangeError(`repetitionPenalty must be > 0, got ${penalty}`);
  }
  /** Each row's prompt and generated tokens, when a penalty needs them. */
  const seen = penalty === 1 ? undefined : promptIds.map((p) => new Set(p));
  const inGraph = penalty === 1 && k === 0 ? opts.sampler : undefined;
  const draws = (opts.temperature ?? 1) > 0;

  // The batch: `active[j]` is the original row at batch position j.
  let active = promptIds.map((_, i) => i);
  let masks: number[][] = [];
  const nextPos: number[] = [];
  const maxLen = Math.max(...promptIds.map((p) => p.length));
  const pad = opts.padTokenId ?? 0;
  const ids: number[] = [], positions: number[] = [];
  for (const p of promptIds) {
    const n = maxLen - p.length;
    ids.push(...new Array(n).fill(pad), ...p);
    masks.push([...new Array(n).fill(0), ...new Array(p.length).fill(1)]);
    positions.push(...new Array(n).fill(1), ...p.map((_, t) => t));
    nextPos.push(p.length);
  }
  const cache = cacheOf(session, layout, inGraph !== undefined, emptyCache(layout, B));
  let feeds = stepFeeds(layout, ids, masks, positions, maxLen);
  let steps = 0;

  try {
    for (let step = 0;; step++) {
      if (opts.signal?.aborted) {
        for (const r of active) rows[r].stopReason = "abort";
        break;
      }
      const logits = await cache.run(feeds);
      steps++;
      const [b, s, V] = logits.dims;
      let picked: GraphSample | undefined;
      try {
        if (b !== active.length) throw new Error(`logits batch ${b} for ${active.length} rows`);
        if (inGraph) {
          // one uniform per row, from the generator the host sampler would draw it from
          const rowDraws = active.map((r) => ({ ...sampling, u: draws ? (rngs ? rngs[r] : rng)() : 0 }));
          picked = await inGraph.sample(logits, rowDraws);
        }
      } finally {
        if (!isHostTensor(logits)) logits.release();
      }
      const newTokens: (number | null)[] = new Array(B).fill(null);
      const choices: (TokenChoice | null)[] = new Array(B).fill(null);
      const keep: number[] = [];
      for (let j = 0; j < active.length; j++) {
        const r = active[j];
        let choice: TokenChoice;
        if (picked) choice = { token: picked.tokens[j], logprob: picked.logprobs[j] };
        else {
          const at = (j * s + s - 1) * V;
          const row = ((logits as HostTensor).data as Float32Array).subarray(at, at + V);
          const scores = seen ? applyRepetitionPenalty(row, seen[r], penalty) : row;
          const token = sampleToken(scores, sampling, rngs ? rngs[r] : rng);
          seen?.[r].add(token);
          const lse = logSumExp(row);
          choice = { token, logprob: row[token] - lse };
          if (k > 0) choice.top = topKIndices(row, k).map((t) => ({ token: t, logprob: row[t] - lse }));
        }
        const token = choice.token;
        const g = rows[r];
        g.tokens.push(token);
        g.logprobs.push(choice.logprob);
        if (choice.top) g.topLogprobs!.push(choice.top);
        newTokens[r] = token;
        choices[r] = choice;
        if (eos.has(token)) g.stopReason = "eos";
        else if (opts.stop?.(g.tokens, r)) g.stopReason = "stop";
        else if (g.tokens.length >= opts.maxNewTokens) g.stopReason = "length";
        else keep.push(j);
      }
      const finished: (StopReason | null)[] = new Array(B).fill(null);
      const kept = new Set(keep.map((j) => active[j]));
      for (const r of active) if (!kept.has(r)) finished[r] = rows[r].stopReason;
      opts.onToken?.(step, newTokens, choices, finished);
      if (keep.length === 0) break;

      // Next step: the survivors' last tokens, their caches, masks grown by one.
      if (keep.length < active.length) cache.keep(keep, active.length);
      active = keep.map((j) => active[j]);
      masks = keep.map((j) => [...masks[j], 1]);
      const tokens = active.map((r) => rows[r].tokens.at(-1)!);
      const pos = active.map((r) => nextPos[r]++);
      feeds = stepFeeds(layout, tokens, masks, pos, 1);
    }
  } finally {
    cache.release();
  }
  return { rows, steps };
}

/**
 * How a decode step runs and where its KV cache lives: each step's presents are placed `"device"`, held by
 * the session, and are the next step's pasts as they are; only the logits come back (or stay too, for an
 * in-graph sampler, which the caller then releases). When rows leave the batch the cache goes through the
 * host once, the kept rows' part fed as host tensors to the next step.
 */
type StepRunner = {
  /** Runs a step on `feeds` (the tokens, mask, positions) and the cache; the logits. */
  run(feeds: Record<string, HostTensor>): Promise<HostTensor | HeldTensor>;
  /** Keeps the cache rows of the batch positions `keep` only. */
  keep(keep: readonly number[], batch: number): void;
  release(): void;
};

function cacheOf(
  session: GenerationSession,
  layout: KvLayout,
  logitsStay: boolean,
  initial: Record<string, HostTensor>,
): StepRunner {
  /** Each past's present, by past name. */
  const presentOf = new Map<string, string>();
  for (let i = 0; i < layout.numLayers; i++) {
    presentOf.set(SERVING_NAMES.pastKey(i), SERVING_NAMES.presentKey(i));
    presentOf.set(SERVING_NAMES.pastValue(i), SERVING_NAMES.presentValue(i));
  }
  const where: Record<string, Placement> = { [SERVING_NAMES.logits]: logitsStay ? "device" : "host" };
  for (const present of presentOf.values()) where[present] = "device";
  /** The last step's presents, by present name. */
  let last: Record<string, HostTensor | HeldTensor> = initial;
  const drop = () => {
    for (const v of Object.values(last)) if (!isHostTensor(v)) v.release();
    last = {};
  };
  return {
    async run(feeds) {
      const all: Record<string, HostTensor | HeldTensor> = { ...feeds };
      for (const [past, present] of presentOf) all[past] = last[present];
      const out = await session.run(all, where);
      drop();
      const { [SERVING_NAMES.logits]: logits, ...presents } = out;
      last = presents;
      return logits;
    },
    keep(keep, batch) {
      const toHost = (v: HostTensor | HeldTensor) => isHostTensor(v) ? v : session.toHost!(v);
      const host = Object.fromEntries(Object.entries(last).map(([n, v]) => [n, toHost(v)]));
      const kept = dropRows(layout, host, keep, batch);
      drop();
      last = kept;
    },
    release: drop,
  };
}

function i64(values: readonly number[], dims: readonly number[]): HostTensor {
  return { dtype: "int64", dims, data: BigInt64Array.from(values, (v) => BigInt(v)) };
}

/** An empty cache (past length 0), as transformers.js feeds at prefill. */
function emptyCache(layout: KvLayout, batch: number): Record<string, HostTensor> {
  const t = (): HostTensor => ({
    dtype: "float32",
    dims: [batch, layout.numKvHeads, 0, layout.headDim],
    data: new Float32Array(0),
  });
  const out: Record<string, HostTensor> = {};
  for (let i = 0; i < layout.numLayers; i++) {
    out[SERVING_NAMES.presentKey(i)] = t();
    out[SERVING_NAMES.presentValue(i)] = t();
  }
  return out;
}

/** Feeds for one run but the cache: the new tokens, the whole mask and their positions. */
function stepFeeds(
  layout: KvLayout,
  tokens: readonly number[],
  masks: readonly number[][],
  positions: readonly number[],
  seq: number,
): Record<string, HostTensor> {
  const b = masks.length;
  const feeds: Record<string, HostTensor> = {
    [SERVING_NAMES.inputIds]: i64(tokens, [b, seq]),
    [SERVING_NAMES.attentionMask]: i64(masks.flat(), [b, masks[0].length]),
  };
  if (layout.positionIds) feeds[SERVING_NAMES.positionIds] = i64(positions, [b, seq]);
  if (layout.logitsToKeep) feeds[SERVING_NAMES.logitsToKeep] = i64([1], []);
  return feeds;
}

/** The presents of the kept batch rows only (each row of `[batch, heads, seq, dim]` is contiguous). */
function dropRows(
  layout: KvLayout,
  out: Record<string, HostTensor>,
  keep: readonly number[],
  batch: number,
): Record<string, HostTensor> {
  const result: Record<string, HostTensor> = {};
  for (let i = 0; i < layout.numLayers; i++) {
    for (const name of [SERVING_NAMES.presentKey(i), SERVING_NAMES.presentValue(i)]) {
      const t = out[name];
      const src = t.data as Float32Array;
      const per = src.length / batch;
      const data = new Float32Array(per * keep.length);
      keep.forEach((j, n) => data.set(src.subarray(j * per, (j + 1) * per), n * per));
      result[name] = { dtype: "float32", dims: [keep.length, ...t.dims.slice(1)], data };
    }
  }
  return result;
}
