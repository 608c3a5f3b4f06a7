/**
 * Sampled rows from an open generator: a prompt's K responses, in prompt order, batch by batch. Each
 * response draws from its own seed (sample_settings.ts' `sampleSeed`), so a row does not depend on the batch
 * it shared. Tokens are chosen in ONNX Runtime (lib/model/graph_sampler.ts) unless a repetition penalty
 * needs the logits in JavaScript.
 * @module
 */
import { tokenizePrompt, truncate } from "../data/tokenize.ts";
import type { Message } from "../data/types.ts";
import { generate } from "../model/generate.ts";
import { GraphSampler } from "../model/graph_sampler.ts";
import type { Generator, ModelInfo } from "../model/open.ts";
import type { PromptId, PromptRow } from "./prompts.ts";
import { SAMPLE_DEFAULTS, SampleOptionError, sampleSeed, type SampleSettings } from "./sample_settings.ts";

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
 * Prompt token ids as training renders them (the chat template with `templateKwargs`, BOS first;
 * `maxPromptLength` keeps the end), checked against the model's context: a prompt that leaves no room for
 * `maxNewTokens` is an error naming its file and line. What the model then generates is what training
 * scores after the same prompt (Qwen3's thinking block, when the prompt does not end with it, included).
 */
export function promptJobs(
  model: Pick<ModelInfo, "tokenizer" | "contextLength">,
  rows: readonly PromptRow[],
  s: Pick<SampleSettings, "maxNewTokens" | "maxPromptLength" | "templateKwargs">,
): PromptJob[] {
  return rows.map((row) => {
    let ids = tokenizePrompt(model.tokenizer, row.messages, { templateKwargs: s.templateKwargs });
    if (s.maxPromptLength !== null) ids = truncate(ids, [], { maxPromptLength: s.maxPromptLength }).promptIds;
    if (ids.length + s.maxNewTokens > model.contextLength) {
      const where = row.unit === "line" ? `${row.file}:${row.line}` : `${row.file}: row ${row.line}`;
      throw new Error(
        `${where}: the prompt is ${ids.length} tokens; with --max-new-tokens ${s.maxNewTokens} it passes the ` +
          `model's context of ${model.contextLength} tokens: set --max-prompt-length (the prompt keeps its ` +
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
  /** The `sampler.model` of each row (default: the model's name). */
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
  model: Pick<Generator & ModelInfo, "session" | "codec" | "eosIds" | "padId" | "name">,
  jobs: readonly PromptJob[],
  s: SampleSettings,
  o: SampleRowsOptions = {},
): AsyncGenerator<BatchReport> {
  const batch = o.batch ?? SAMPLE_DEFAULTS.batch;
  if (!(Number.isSafeInteger(batch) && batch >= 1)) {
    throw new SampleOptionError(`--batch must be a whole number ≥ 1, got ${batch}`);
  }
  const sampler = {
    model: o.modelName ?? model.name,
    temperature: s.temperature,
    top_p: s.topP,
    top_k: s.topK,
    seed: s.seed,
  };
  const eos = new Set(model.eosIds);
  const results: (SampledResponse | undefined)[][] = jobs.map(() => new Array(s.k));
  let next = 0; // the first prompt not yet reported
  const total = jobs.length * s.k;
  // tokens are chosen in ONNX Runtime (only ids come back), unless a repetition penalty needs the logits
  await using graphSampler = s.repetitionPenalty === 1 ? await GraphSampler.beside(model.session) : undefined;
  {
    for (let at = 0; at < total; at += batch) {
      if (o.signal?.aborted) return;
      const part = Array.from({ length: Math.min(batch, total - at) }, (_, n) => {
        const q = at + n;
        return { p: Math.floor(q / s.k), j: q % s.k };
      });
      const { rows } = await generate(model.session, part.map(({ p }) => jobs[p].ids), {
        maxNewTokens: s.maxNewTokens,
        eosTokenIds: model.eosIds,
        temperature: s.temperature,
        topP: s.topP,
        topK: s.topK,
        repetitionPenalty: s.repetitionPenalty,
        seeds: part.map(({ p, j }) => sampleSeed(s.seed, jobs[p].row.id, j)),
        padTokenId: model.padId,
        signal: o.signal,
        sampler: graphSampler,
      });
      let tokens = 0;
      rows.forEach((r, n) => {
        tokens += r.tokens.length;
        if (r.stopReason === "abort") return;
        const stopped = r.stopReason === "eos" && eos.has(r.tokens.at(-1)!);
        const body = stopped ? r.tokens.slice(0, -1) : r.tokens;
        const { p, j } = part[n];
        results[p][j] = {
          content: model.codec.decode(body),
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
  }
}
