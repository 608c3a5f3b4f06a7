/**
 * How several ranks split the data of a run: every rank plans the same global steps (the same seeded shuffle)
 * and takes, from each micro-batch of a step, its contiguous part of whole prompts ({@link rankSteps}, as
 * even as it goes, possibly none), weighted by its share of the micro-batch ({@link rankShares}: prompts, or
 * response tokens for SFT), padded to the whole micro-batch's width, with the rows before it for keyed LoRA
 * dropout ({@link assembleRankChunk}). The ranks together train on exactly one process's steps.
 * @module
 */
import { sequenceLengths } from "../data/tokenize.ts";
import { SHARE_INPUT } from "../graph/distributed.ts";
import type { HostTensor } from "../runtime/tensor.ts";
import {
  assembleChunk,
  BATCH_INPUTS,
  type ChunkOptions,
  type ChunkTensors,
  type PlannedStep,
} from "./chunks.ts";
import type { PreparedExample } from "./prepare.ts";

/**
 * Where rank `rank` of `size` starts in a micro-batch of `m` prompts, and how many it takes: the prompts split
 * as evenly as they go, the first `m mod size` ranks taking one more (some none when `m < size`).
 */
export function rankPart(m: number, world: { rank: number; size: number }): { start: number; count: number } {
  const base = Math.floor(m / world.size), extra = m % world.size;
  return {
    start: world.rank * base + Math.min(world.rank, extra),
    count: base + (world.rank < extra ? 1 : 0),
  };
}

/**
 * This rank's share of each global step: from each of the step's A micro-batches of G / A prompts, this
 * rank's contiguous part ({@link rankPart}) — whole prompts, all K responses with them. Any step one process
 * can take (G a multiple of A) splits; a part may be empty.
 */
export function rankSteps(
  steps: readonly PlannedStep[],
  world: { rank: number; size: number },
  accumulation: number,
): PlannedStep[] {
  const A = accumulation;
  return steps.map((st) => {
    const G = st.indices.length;
    if (G % A !== 0) {
      throw new RangeError(`a step of ${G} prompts cannot be split into ${A} micro-batches`);
    }
    const micro = G / A, { start, count } = rankPart(micro, world);
    const indices: number[] = [];
    for (let a = 0; a < A; a++) {
      indices.push(...st.indices.slice(a * micro + start, a * micro + start + count));
    }
    return { epoch: st.epoch, indices };
  });
}

/**
 * This rank's share of each micro-batch of `steps` (`[steps × accumulation]`, float32): its part of the
 * micro-batch's loss denominator over the whole — prompts, or for SFT (a mean over response tokens) its
 * prompts' response tokens. The ranks' shares of a micro-batch add up to 1.
 */
export function rankShares(
  examples: PreparedExample[],
  steps: readonly PlannedStep[],
  world: { rank: number; size: number },
  o: { accumulation: number; loss: ChunkOptions["loss"] },
): Float32Array {
  const A = o.accumulation;
  const weight = (i: number) =>
    o.loss === "sft" ? examples[i].responseIds.reduce((n, r) => n + r.length, 0) : 1;
  const out = new Float32Array(steps.length * A);
  steps.forEach((st, si) => {
    const micro = st.indices.length / A, { start, count } = rankPart(micro, world);
    for (let a = 0; a < A; a++) {
      const all = st.indices.slice(a * micro, (a + 1) * micro);
      const whole = all.reduce((n, i) => n + weight(i), 0);
      const mine = all.slice(start, start + count).reduce((n, i) => n + weight(i), 0);
      out[si * A + a] = whole > 0 ? mine / whole : 0;
    }
  });
  return out;
}

/** The width a chunk of `steps` pads to in one process (assembleChunk's rule): the longest sequence, rounded up. */
export function chunkWidth(examples: PreparedExample[], steps: readonly PlannedStep[], mult = 8): number {
  const lengths = sequenceLengths(steps.flatMap((s) => s.indices.map((i) => examples[i])));
  return Math.ceil(Math.max(0, ...lengths) / mult) * mult;
}

/**
 * A chunk of this rank's shares of the global `steps` (see {@link rankSteps}): padded to the global batch's
 * width, with the rank's share of each micro-batch ({@link rankShares}, the gradient graph's `train.share`)
 * and the rows of the global micro-batch before this rank's part for keyed dropout (`rowOffset`: the graph
 * takes `dropout_row_offset`). A rank without prompts in these steps gets batch inputs of 0 rows (the session
 * then runs nothing).
 */
export function assembleRankChunk(
  examples: PreparedExample[],
  steps: PlannedStep[],
  reference: Float32Array[] | undefined,
  o: ChunkOptions,
  world: { rank: number; size: number },
  rowOffset: boolean,
): ChunkTensors {
  const S = steps.length, A = o.accumulation;
  const mine = rankSteps(steps, world, A);
  const width = chunkWidth(examples, steps, o.padToMultipleOf ?? 8);
  const lead = A > 1 ? [S, A] : [S];
  const opts = { ...o, minWidth: Math.max(o.minWidth ?? 0, width) };
  let tensors: ChunkTensors;
  if (mine[0].indices.length > 0) tensors = assembleChunk(examples, mine, reference, opts);
  else {
    // the shapes of one prompt per micro-batch, with the rows (and prompts) axis emptied
    const one = assembleChunk(
      examples,
      steps.map((st) => ({ ...st, indices: st.indices.slice(0, A) })),
      reference,
      opts,
    );
    const feeds = Object.fromEntries(
      Object.entries(one.feeds).map(([name, t]) => {
        if (t.dims.length <= lead.length) return [name, t];
        const dims = t.dims.map((d, i) => (i === lead.length ? 0 : d));
        return [name, { ...t, dims, data: t.data.subarray(0, 0) } as HostTensor];
      }),
    );
    tensors = { feeds, tokens: one.tokens.map(() => 0), prompts: 0, width: one.width };
  }
  tensors.feeds[SHARE_INPUT] = {
    dtype: "float32",
    dims: lead,
    data: rankShares(examples, steps, world, { accumulation: A, loss: o.loss }),
  };
  if (rowOffset && o.dropout) {
    const rowsBefore = rankPart(steps[0].indices.length / A, world).start * o.k;
    tensors.feeds[BATCH_INPUTS.dropoutRowOffset] = {
      dtype: "float32",
      dims: lead,
      data: new Float32Array(S * A).fill(rowsBefore),
    };
  }
  return tensors;
}
