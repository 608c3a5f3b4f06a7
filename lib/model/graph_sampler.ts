/**
 * Sampling inside ONNX Runtime: a small graph that turns the decoder's logits into the next token of each
 * row and its log-probability, so a decode step brings `[B]` ids and `[B]` log-probs back to JavaScript
 * instead of `[B, vocab]` logits, and no JavaScript loop walks the vocabulary. The logits go from the decoder
 * to this graph as a tensor the decoder's session holds (on a GPU, through the C API: they never leave it).
 *
 * It is a graph of its own beside the decoder, not a part of it: every exported folder (and transformers.js,
 * which feeds the decoder) stays as it is, and the graph is built in memory in a few milliseconds.
 *
 * Inputs (B rows): `logits` `[B, S, V]` float32 (the last position is used); per row `sample.u` (a uniform
 * in [0, 1) drawn on the host from the row's own generator, so per-row seeds reproduce), `sample.temperature`
 * (0: greedy), `sample.top_k` int64 (0 or ≥ V: off) and `sample.top_p` (1: off). Outputs `sample.token`
 * int64 and `sample.logprob` float32: log p(token) under the model's own distribution (temperature 1,
 * unfiltered), what the host sampler reports; and `sample.truncated` (bool), see below.
 *
 * The draw is the host sampler's (sampling.ts): inverse-CDF sampling, the first token whose cumulative
 * probability exceeds u · total, over softmax(logits / T) in vocabulary order when nothing is filtered, and
 * over the kept candidates, most likely first, when top-k/top-p filter. The sums are float32 here and
 * float64 on the host, so for the same u the two pick the same token except when u · total falls within
 * float rounding of a boundary between two tokens (over random 49k-token rows, 1 to 3 draws in 1,000
 * differ, u never more than 2.5e-7 from the cumulative probabilities between the two tokens). Greedy is the
 * same argmax.
 *
 * Costs: an unfiltered row is O(V) (softmax, block totals, a search over them and within one block); only
 * filtered rows need candidates, from one TopK of the batch's widest need (k for top-k, else
 * {@link TOP_P_CANDIDATES} for top-p), and a batch with no filtered row asks TopK for one. Top-p looks at
 * the most likely `topPCandidates` tokens only: when a row's nucleus needs more (top_p near 1 over a flat
 * distribution) the graph's token for it is drawn from those, renormalized, and the row is flagged
 * `sample.truncated`; {@link GraphSampler.sample} then draws that row on the host (its logits copied back
 * once, the same u), so what it returns is always the host sampler's distribution.
 * @module
 */
import { GraphBuilder, type Value } from "../graph/builder.ts";
import type { Graph } from "../graph/ir.ts";
import * as op from "../graph/ops.ts";
import { unknownDim } from "../graph/shape.ts";
import { ModelSession } from "../runtime/session.ts";
import { type Device, type HeldTensor, type HostTensor, isHostTensor } from "../runtime/tensor.ts";
import { sampleToken, type SamplingParams, tokenLogprob } from "./sampling.ts";

/** Input and output names of the sampling graph. */
export const SAMPLER_NAMES = {
  logits: "logits",
  u: "sample.u",
  temperature: "sample.temperature",
  topK: "sample.top_k",
  topP: "sample.top_p",
  token: "sample.token",
  logprob: "sample.logprob",
  truncated: "sample.truncated",
} as const;

/** How many of the most likely tokens top-p looks at (see the module documentation). */
export const TOP_P_CANDIDATES = 1024;

/**
 * The cumulative sums' block: ONNX Runtime's CUDA CumSum sums each element's prefix on its own (quadratic in
 * the axis), and a CumSum over a whole vocabulary was half the graph's CPU time, so sums run within blocks
 * of this many and over the blocks' totals. The float32 error grows with these lengths, not the vocabulary's.
 */
const BLOCK = 256;

/** The largest float32 below 1: u is clamped to it, so u · total stays below the total in float32. */
const ONE_BELOW = 1 - 2 ** -24;

/** Options for {@link buildSamplerGraph}. */
export type SamplerGraphOptions = {
  /** The candidates top-p looks at (default {@link TOP_P_CANDIDATES}). */
  topPCandidates?: number;
};

/**
 * Adds the sampling head to `g` over the last position's logits `[B, V]` (float32): declares the `sample.*`
 * inputs and returns the chosen token `[B]` int64, its log-probability `[B]` float32, and whether the row's
 * nucleus was cut at the candidates (`[B]` bool).
 */
export function samplingHead(
  g: GraphBuilder,
  logits: Value,
  o: SamplerGraphOptions = {},
): { token: Value; logprob: Value; truncated: Value } {
  const candidatesForTopP = o.topPCandidates ?? TOP_P_CANDIDATES;
  if (!(Number.isInteger(candidatesForTopP) && candidatesForTopP >= 1)) {
    throw new RangeError(`topPCandidates must be a whole number ≥ 1, got ${candidatesForTopP}`);
  }
  const B = logits.shape[0];
  const u = g.input(SAMPLER_NAMES.u, "float32", [B]);
  const temperature = g.input(SAMPLER_NAMES.temperature, "float32", [B]);
  const topK = g.input(SAMPLER_NAMES.topK, "int64", [B]);
  const topP = g.input(SAMPLER_NAMES.topP, "float32", [B]);

  const vocab = op.squeeze(op.shapeOf(logits, 1, 2), [0]); // int64 scalar
  const greedy = op.argMax(logits, -1);
  const sampled = op.greater(temperature, 0);
  const scale = op.where(sampled, op.reciprocal(op.max(temperature, 1e-30)), 1);
  const probs = op.softmax(op.mul(logits, col(scale)));

  // Unfiltered: the first token whose cumulative probability (vocabulary order) exceeds u · total.
  const uCol = col(u);
  const { index: unfiltered, total } = inverseCdf(probs, uCol);

  // Filtered rows: the top `need` candidates of each, from one TopK as wide as the widest need.
  const k = op.where(op.and(op.greater(topK, 0), op.less(topK, vocab)), topK, 0);
  const nucleus = op.less(topP, 1);
  const need = op.where(
    sampled,
    op.where(op.greater(k, 0), k, op.where(nucleus, g.scalar(candidatesForTopP, "int64"), 0)),
    0,
  );
  const filtered = op.greater(need, 0);
  const width = op.max(op.min(op.reduceMax(need, [0]), vocab), g.scalar(1, "int64")); // scalar
  const [values, indices] = op.topK(probs, op.unsqueeze(width, [0]));
  const at = op.range(g.scalar(0, "int64"), width, g.scalar(1, "int64")); // [width]
  const inRow = op.less(at, col(need)); // [B, width]
  const mass = op.where(inRow, values, 0);
  // top-p keeps a candidate while the mass before it is below p · (the top-k mass, or the whole mass)
  const candidateMass = op.reduceSum(mass, [1], true);
  const base = op.where(col(op.greater(k, 0)), candidateMass, total);
  const target = op.mul(col(topP), base);
  const before = blockedCumSum(mass, { exclusive: true });
  const inNucleus = op.or(op.not(col(nucleus)), op.less(before, target));
  // a top-p row (no top-k) whose candidates, fewer than the vocabulary, do not reach p: the nucleus is cut
  const cut = op.and(op.and(filtered, op.lessOrEqual(k, 0)), op.less(need, vocab));
  const truncated = op.and(cut, op.squeeze(op.less(candidateMass, target), [1]));
  const kept = op.where(op.and(inRow, inNucleus), values, 0);
  const fromCandidates = pick(indices, inverseCdf(kept, uCol).index);

  const token = op.where(sampled, op.where(filtered, fromCandidates, unfiltered), greedy);
  const logprob = pick(op.logSoftmax(logits), token);
  return { token, logprob, truncated };
}

/** `[B]` → `[B, 1]`. */
const col = (x: Value) => op.unsqueeze(x, [1]);
/** `x[b, at[b]]` of `[B, N]`. */
const pick = (x: Value, at: Value) => op.squeeze(op.gatherElements(x, col(at), 1), [1]);
/** Per row, how many of the (non-decreasing) sums are at or below the threshold: the first one above it. */
const count = (sums: Value, threshold: Value) =>
  op.reduceSum(op.cast(op.lessOrEqual(sums, threshold), "int64"), [1]);

/**
 * Inverse-CDF draws over the rows of `x` `[B, N]` (non-negative weights, in draw order; N known at run
 * time): per row the first index whose cumulative sum exceeds u · total, and the total `[B, 1]`. In two
 * levels, so no cumulative sum runs over the whole row: the blocks' totals find the block the draw lands
 * in, the cumulative sum of that block's {@link BLOCK} weights the index. Never an index of weight 0: the
 * sums do not move there, and a draw that rounding carries past its block's end takes the block's last
 * positive weight.
 */
function inverseCdf(x: Value, u: Value): { index: Value; total: Value } {
  const g = x.g;
  const n = op.shapeOf(x, 1, 2); // [1]
  const nb = op.div(op.add(n, BLOCK - 1), BLOCK); // [1]: the blocks
  const pads = op.concat([g.ints([0, 0, 0]), op.sub(op.mul(nb, BLOCK), n)], 0);
  const blocks = op.reshape(op.pad(x, pads, [x.shape[0], unknownDim()]), [0, -1, BLOCK]); // [B, nb, BLOCK]
  const sums = op.reduceSum(blocks, [2]); // [B, nb]
  const upTo = op.cumSum(sums, 1);
  const total = op.reduceMax(upTo, [1], true);
  const threshold = op.mul(u, total);
  const block = op.min(count(upTo, threshold), op.sub(op.squeeze(nb, [0]), g.scalar(1, "int64")));
  const before = pick(op.cumSum(sums, 1, { exclusive: true }), block);
  const at = op.expand(
    op.unsqueeze(block, [1, 2]),
    op.concat([op.shapeOf(x, 0, 1), g.ints([1, BLOCK])], 0),
    [x.shape[0], 1, BLOCK],
  );
  const weights = op.squeeze(op.gatherElements(blocks, at, 1), [1]); // [B, BLOCK]
  const within = op.add(op.cumSum(weights, 1), col(before));
  const positions = g.constant(Array.from({ length: BLOCK }, (_, i) => i), [BLOCK], "int64");
  const lastPositive = op.reduceMax(op.where(op.greater(weights, 0), positions, -1), [1]);
  const offset = op.min(count(within, threshold), lastPositive);
  return { index: op.add(op.mul(block, BLOCK), offset), total };
}

/**
 * Cumulative sums along the last axis of `[B, N]` (N known only at run time; top-p's mass before each
 * candidate), in blocks of {@link BLOCK}: within each block, plus the running total of the blocks before,
 * each block's total being its own last sum, so the sums never decrease for non-negative input.
 */
function blockedCumSum(x: Value, o: { exclusive?: boolean } = {}): Value {
  const g = x.g;
  const n = op.shapeOf(x, 1, 2); // [1]
  const blocks = op.div(op.add(n, BLOCK - 1), BLOCK);
  const padded = op.mul(blocks, BLOCK);
  const pads = op.concat([g.ints([0, 0, 0]), op.sub(padded, n)], 0);
  const rows = op.reshape(op.pad(x, pads, [x.shape[0], unknownDim()]), [0, -1, BLOCK]);
  const inner = op.cumSum(rows, 2, o);
  // each block's total is its inclusive last sum, so a block starts exactly where the last one ended
  const totals = o.exclusive ? op.add(inner, rows) : inner;
  const before = op.cumSum(op.slice(totals, [BLOCK - 1], [BLOCK], [2]), 1, { exclusive: true });
  const sums = op.reshape(op.add(inner, before), [0, -1]);
  const [out] = g.node(
    "Slice",
    [sums, g.ints([0]), n, g.ints([1])],
    [{ dtype: x.dtype, shape: x.shape }],
  );
  return out;
}

/**
 * The sampling graph: `logits` `[batch, sequence, vocab]` (the decoder's output) in, the last position's
 * token and log-probability per row out.
 */
export function buildSamplerGraph(o: SamplerGraphOptions = {}): Graph {
  const g = new GraphBuilder("sampler");
  const logits = g.input(SAMPLER_NAMES.logits, "float32", ["batch_size", "sequence_length", "vocab_size"]);
  const last = op.squeeze(op.slice(logits, [-1], [2 ** 62], [1]), [1]);
  const { token, logprob, truncated } = samplingHead(g, last, o);
  g.output(token, SAMPLER_NAMES.token);
  g.output(logprob, SAMPLER_NAMES.logprob);
  g.output(truncated, SAMPLER_NAMES.truncated);
  return g.build();
}

/** One row's draw: its uniform and its sampling parameters. */
export type SampleRowParams = SamplingParams & { u: number };

/** What {@link GraphSampler.sample} returns, one entry per row. */
export type GraphSample = {
  tokens: number[];
  logprobs: number[];
  /** How many rows were drawn on the host because their nucleus went past the candidates. */
  onHost: number;
};

/** Options for {@link GraphSampler.create}. */
export type GraphSamplerOptions = SamplerGraphOptions & {
  device?: Device;
  deviceId?: number;
  /**
   * CPU threads inside an operator. Default 1: the graph is light (SmolLM's 49k vocabulary at batch 16: 6 ms
   * on one thread, 5.7 on two), and a second thread pool beside the decoder's spins after each run on the
   * cores the decoder's next step needs (both at 2 threads on 2 cores: the decoder's step went from about
   * 120 to about 150 ms).
   */
  threads?: number;
};

/**
 * A session of the sampling graph. Give it to `generate` (its `sampler` option) to sample there; create it
 * where the decoder's logits are ({@link GraphSampler.beside}) and release it when done.
 *
 * @example
 * ```ts
 * import { ModelSession } from "../runtime/session.ts";
 * import { parseConfig } from "./config.ts";
 * import { exportForServing } from "./export.ts";
 * import { generate } from "./generate.ts";
 * import { initWeights } from "./init.ts";
 * const cfg = parseConfig({ // a tiny random Llama; a trained run's policy/ is such a folder
 *   model_type: "llama", vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4,
 *   num_key_value_heads: 2, intermediate_size: 64, max_position_embeddings: 64,
 * });
 * const folder = await Deno.makeTempDir();
 * await exportForServing(folder, { cfg, weights: initWeights(cfg) });
 * {
 *   await using session = await ModelSession.create(`${folder}/onnx/model.onnx`);
 *   await using sampler = await GraphSampler.beside(session);
 *   const prompts = [[5, 6, 7], [8, 9]], seeds = [1, 2];
 *   const { rows } = await generate(session, prompts, { maxNewTokens: 8, temperature: 0.8, seeds, sampler });
 *   console.log(rows.map((r) => r.tokens)); // each row's draws depend on its seed only
 * } // both sessions released here
 * await Deno.remove(folder, { recursive: true });
 * ```
 */
export class GraphSampler {
  private constructor(readonly session: ModelSession) {}

  /**
   * A sampler on `device`, through the C API (where it covers a use, that use goes through it: the
   * decoder's held logits are then read where they are).
   */
  static async create(o: GraphSamplerOptions = {}): Promise<GraphSampler> {
    const session = await ModelSession.create(buildSamplerGraph(o), {
      device: o.device,
      deviceId: o.deviceId,
      intraOpThreads: o.threads ?? 1,
      backend: "ffi",
    });
    return new GraphSampler(session);
  }

  /** A sampler where `decoder`'s held logits are: the device whose memory holds them. */
  static beside(
    decoder: Pick<ModelSession, "holdsOn" | "deviceId">,
    o: Omit<GraphSamplerOptions, "device" | "deviceId"> = {},
  ): Promise<GraphSampler> {
    const device = decoder.holdsOn;
    return GraphSampler.create({ ...o, device, deviceId: device === "cuda" ? decoder.deviceId : undefined });
  }

  /**
   * Draws one token per row of `logits` (`[B, S, V]`, the last position used) with `rows[b]`'s draw; rows
   * whose nucleus the graph cut are drawn again on the host with the same u.
   */
  async sample(logits: HostTensor | HeldTensor, rows: readonly SampleRowParams[]): Promise<GraphSample> {
    const B = rows.length;
    if (logits.dims[0] !== B) throw new RangeError(`logits for ${logits.dims[0]} rows, parameters for ${B}`);
    const u = new Float32Array(B), temperature = new Float32Array(B), topP = new Float32Array(B);
    const topK = new BigInt64Array(B);
    rows.forEach((r, b) => {
      const t = checkedParams(r);
      u[b] = Math.min(Math.fround(r.u), ONE_BELOW);
      temperature[b] = t.temperature;
      topK[b] = BigInt(t.topK);
      topP[b] = t.topP;
    });
    const v = (data: Float32Array | BigInt64Array): HostTensor => ({
      dtype: data instanceof Float32Array ? "float32" : "int64",
      dims: [B],
      data,
    });
    const host = await this.session.run({
      [SAMPLER_NAMES.logits]: logits,
      [SAMPLER_NAMES.u]: v(u),
      [SAMPLER_NAMES.temperature]: v(temperature),
      [SAMPLER_NAMES.topK]: v(topK),
      [SAMPLER_NAMES.topP]: v(topP),
    }, [SAMPLER_NAMES.token, SAMPLER_NAMES.logprob, SAMPLER_NAMES.truncated]);
    const tokens = Array.from(host[SAMPLER_NAMES.token].data as BigInt64Array, Number);
    const logprobs = Array.from(host[SAMPLER_NAMES.logprob].data as Float32Array);
    const truncated = host[SAMPLER_NAMES.truncated].data as Uint8Array;
    let onHost = 0, all: HostTensor | undefined;
    for (let b = 0; b < B; b++) {
      if (!truncated[b]) continue;
      all ??= isHostTensor(logits) ? logits : this.session.toHost(logits);
      const [, S, V] = all.dims;
      const at = (b * S + S - 1) * V;
      const row = (all.data as Float32Array).subarray(at, at + V);
      tokens[b] = sampleToken(row, rows[b], () => rows[b].u);
      logprobs[b] = tokenLogprob(row, tokens[b]);
      onHost++;
    }
    return { tokens, logprobs, onHost };
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /** `await using` releases it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/**
 * A row's parameters with their defaults, checked as the host sampler checks them (only when sampling:
 * greedy ignores the filters there too).
 */
function checkedParams(p: SampleRowParams): { temperature: number; topK: number; topP: number } {
  const temperature = p.temperature ?? 1, topK = p.topK ?? 0, topP = p.topP ?? 1;
  if (temperature < 0 || Number.isNaN(temperature)) {
    throw new RangeError(`temperature must be ≥ 0, got ${temperature}`);
  }
  if (temperature === 0) return { temperature, topK: 0, topP: 1 };
  if (topK < 0 || !Number.isInteger(topK)) throw new RangeError(`top_k must be a whole number, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${topP}`);
  if (!(p.u >= 0 && p.u < 1)) throw new RangeError(`u must be in [0, 1), got ${p.u}`);
  return { temperature, topK, topP };
}
