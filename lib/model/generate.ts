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
 * With onnxruntime-node each run copies the cache into and out of ONNX Runtime; with the C API backend
 * (`ffi`) it stays there between steps. Tokens are chosen in JavaScript from the last position's logits, or,
 * given a {@link GraphSampler} (`sampler`), inside ONNX Runtime: then only the tokens and their log-probs
 * come back. A run blocks the thread it runs on: a server runs this in a Worker.
 * @module
 */
import type { HostTensor, ModelSession } from "../runtime/session.ts";
import { OrtValue } from "../runtime/ort/value.ts";
import { logSumExp } from "../losses/stable.ts";
import type { GraphSample, GraphSampler } from "./graph_sampler.ts";
import {
  applyRepetitionPenalty,
  mulberry32,
  type Rng,
  sampleToken,
  type SamplingParams,
  type TokenLogprob,
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

/** What {@link generate} needs from a session: {@link ModelSession} fits. */
export type DecoderSession = Pick<ModelSession, "inputNames" | "run"> & {
  session?: { inputMetadata?: readonly unknown[] };
  /** With the `ffi` backend the KV cache stays in ONNX Runtime values (on the device) between steps. */
  backend?: "node" | "ffi";
  runBound?: ModelSession["runBound"];
  toHost?: ModelSession["toHost"];
};

/**
 * Reads the cache geometry from a session's input metadata (`past_key_values.{i}.key` of shape
 * `[batch, heads, past, headDim]` with numeric heads and headDim, as export.ts writes them).
 */
export function kvLayoutOf(session: DecoderSession): KvLayout {
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
  const meta = (session.session?.inputMetadata ?? []) as { name: string; shape?: readonly unknown[] }[];
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
export type FinishReason = "eos" | "length" | "stop" | "abort";

/** One chosen token and what the model thought of it. */
export type TokenChoice = {
  token: number;
  /** log p(token) under the unmodified model distribution. */
  logprob: number;
  /** The `topLogprobs` most likely tokens at this step (present when asked for). */
  top?: TokenLogprob[];
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
    finished: readonly (FinishReason | null)[],
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
  topLogprobs?: TokenLogprob[][];
  finishReason: FinishReason;
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
 * const session = await ModelSession.create(`${folder}/onnx/model.onnx`);
 * const { rows } = await generate(session, [promptIds], { maxNewTokens: 32, temperature: 0, eosTokenIds: [2] });
 * rows[0].tokens; // the greedy continuation
 * ```
 */
export async function generate(
  session: DecoderSession,
  promptIds: readonly (readonly number[])[],
  opts: GenerateOptions,
): Promise<GenerateResult> {
  const B = promptIds.length;
  const k = opts.topLogprobs ?? 0;
  const rows: GeneratedRow[] = promptIds.map(() => ({
    tokens: [],
    logprobs: [],
    ...(k > 0 ? { topLogprobs: [] } : {}),
    finishReason: "length" as FinishReason,
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
  const cache = cacheOf(session, layout, inGraph !== undefined);
  let feeds = stepFeeds(layout, ids, masks, positions, maxLen, emptyCache(layout, B));
  let steps = 0;

  try {
    for (let step = 0;; step++) {
      if (opts.signal?.aborted) {
        for (const r of active) rows[r].finishReason = "abort";
        break;
      }
      const { out, logits } = await cache.run(feeds);
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
        if (logits instanceof OrtValue) logits.release();
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
        if (eos.has(token)) g.finishReason = "eos";
        else if (opts.stop?.(g.tokens, r)) g.finishReason = "stop";
        else if (g.tokens.length >= opts.maxNewTokens) g.finishReason = "length";
        else keep.push(j);
      }
      const finished: (FinishReason | null)[] = new Array(B).fill(null);
      const kept = new Set(keep.map((j) => active[j]));
      for (const r of active) if (!kept.has(r)) finished[r] = rows[r].finishReason;
      opts.onToken?.(step, newTokens, choices, finished);
      if (keep.length === 0) break;

      // Next step: the survivors' last tokens, their caches, masks grown by one.
      const presents = keep.length === active.length ? out : cache.keep(out, keep, active.length);
      active = keep.map((j) => active[j]);
      masks = keep.map((j) => [...masks[j], 1]);
      const tokens = active.map((r) => rows[r].tokens.at(-1)!);
      const pos = active.map((r) => nextPos[r]++);
      feeds = stepFeeds(layout, tokens, masks, pos, 1, presents);
    }
  } finally {
    cache.release();
  }
  return { rows, steps };
}

/**
 * How a decode step runs and where its KV cache lives. Through onnxruntime-node every step's presents come
 * back to JavaScript and go in again as the next pasts. With the `ffi` backend they stay ONNX Runtime
 * values (only the logits come back, or stay too for an in-graph sampler, which the caller then releases):
 * the feeds carry placeholders for them, which {@link run} replaces.
 */
type StepRunner = {
  run(
    feeds: Record<string, HostTensor>,
  ): Promise<{ out: Record<string, HostTensor>; logits: HostTensor | OrtValue }>;
  /** The presents of the kept batch rows. */
  keep(out: Record<string, HostTensor>, keep: readonly number[], batch: number): Record<string, HostTensor>;
  release(): void;
};

function cacheOf(session: DecoderSession, layout: KvLayout, logitsStay: boolean): StepRunner {
  if (session.backend !== "ffi" || !session.runBound || !session.toHost) {
    return {
      async run(feeds) {
        const out = await session.run(feeds);
        return { out, logits: out[SERVING_NAMES.logits] };
      },
      keep: (o, k, b) => dropRows(layout, o, k, b),
      release() {},
    };
  }
  const runBound = session.runBound.bind(session), toHost = session.toHost.bind(session);
  /** Each past's present, by past name. */
  const presentOf = new Map<string, string>();
  for (let i = 0; i < layout.numLayers; i++) {
    presentOf.set(SERVING_NAMES.pastKey(i), SERVING_NAMES.presentKey(i));
    presentOf.set(SERVING_NAMES.pastValue(i), SERVING_NAMES.presentValue(i));
  }
  const where: Record<string, "host" | "device"> = { [SERVING_NAMES.logits]: logitsStay ? "device" : "host" };
  for (const present of presentOf.values()) where[present] = "device";
  /** The last step's presents, by present name. */
  let held: Record<string, OrtValue> | undefined;
  const drop = () => {
    for (const v of Object.values(held ?? {})) v.release();
    held = undefined;
  };
  /** What the step's feeds carry for a held present: its shape, no data. */
  const placeholders = () =>
    Object.fromEntries(
      Object.entries(held!).map((
        [n, v],
      ) => [n, { dtype: "float32", dims: v.dims, data: new Float32Array(0) }]),
    ) as Record<string, HostTensor>;
  return {
    async run(feeds) {
      const host: Record<string, HostTensor> = {}, values: Record<string, OrtValue> = {};
      for (const [name, t] of Object.entries(feeds)) {
        const present = held?.[presentOf.get(name) ?? ""];
        if (present) values[name] = present;
        else host[name] = t;
      }
      const out = await runBound(host, values, where);
      drop();
      const { [SERVING_NAMES.logits]: kept, ...presents } = out.device;
      held = presents;
      return { out: { ...out.host, ...placeholders() }, logits: kept ?? out.host[SERVING_NAMES.logits] };
    },
    keep(_out, keep, batch) {
      // rows leave the batch: the cache goes through the host once, the kept rows become values again
      const host = Object.fromEntries(Object.entries(held!).map(([n, v]) => [n, toHost(v)]));
      const kept = dropRows(layout, host, keep, batch);
      drop();
      held = Object.fromEntries(Object.entries(kept).map(([n, t]) => [n, OrtValue.fromHost(t)]));
      return placeholders();
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

/** Feeds for one run: the new tokens, the whole mask, their positions and the previous step's presents. */
function stepFeeds(
  layout: KvLayout,
  tokens: readonly number[],
  masks: readonly number[][],
  positions: readonly number[],
  seq: number,
  presents: Record<string, HostTensor>,
): Record<string, HostTensor> {
  const b = masks.length;
  const feeds: Record<string, HostTensor> = {
    [SERVING_NAMES.inputIds]: i64(tokens, [b, seq]),
    [SERVING_NAMES.attentionMask]: i64(masks.flat(), [b, masks[0].length]),
  };
  if (layout.positionIds) feeds[SERVING_NAMES.positionIds] = i64(positions, [b, seq]);
  if (layout.logitsToKeep) feeds[SERVING_NAMES.logitsToKeep] = i64([1], []);
  for (let i = 0; i < layout.numLayers; i++) {
    feeds[SERVING_NAMES.pastKey(i)] = presents[SERVING_NAMES.presentKey(i)];
    feeds[SERVING_NAMES.pastValue(i)] = presents[SERVING_NAMES.presentValue(i)];
  }
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
