/**
 * One request's generation, from prompt ids to choices: sends the job to the engine, turns each row's token
 * stream into text with an incremental detokenizer, cuts it at the first stop string (and tells the worker to
 * end that row), and reports the text as it becomes final — in deltas for streaming, and as a whole at the
 * end. Both OpenAI routes (chat and completions) use it and only differ in how they format the result.
 * @module
 */
import type { TextCodec } from "../data/codec.ts";
import type { Engine } from "./engine.ts";
import type { RowFinish, TokenEvent } from "./protocol.ts";
import { StopMatcher } from "./stop.ts";

/** A token with its log-probability, as `logprobs` reports it. */
export type TokenLogprob = { token: string; id: number; logprob: number };

/** A generated token, its log-prob and (when asked) its most likely alternatives. */
export type LogprobEntry = TokenLogprob & { top: TokenLogprob[] };

/** OpenAI's finish reasons; "abort" when the client went away (never sent to anyone). */
export type FinishReason = "stop" | "length" | "abort";

/** Something that happened to one choice, in order: deltas, then one finish. */
export type ChoiceEvent =
  | { kind: "delta"; index: number; text: string; logprobs: LogprobEntry[] }
  | { kind: "finish"; index: number; reason: FinishReason };

/** One finished choice. */
export type Choice = {
  index: number;
  text: string;
  /** The kept tokens (up to the one that completed a stop string; EOS included). */
  tokens: number[];
  logprobs: LogprobEntry[];
  finishReason: FinishReason;
};

/** What to generate. */
export type GenerationRequest = {
  /** One prompt per choice (the same ids `n` times for `n` choices). */
  prompts: number[][];
  /** Distinct prompt tokens, for `usage.prompt_tokens`. */
  promptTokens: number;
  maxTokens: number;
  temperature: number;
  topP: number;
  /** Keep the k most likely tokens (0 or absent: all). */
  topK?: number;
  /** transformers' repetition penalty over the prompt and the output (1 or absent: none). */
  repetitionPenalty?: number;
  seed?: number;
  stop: string[];
  /** Whether to record log-probs, and how many alternatives per token. */
  logprobs: boolean;
  topLogprobs: number;
  /** Generate past EOS (vLLM's `ignore_eos`): for benchmarks and long runs. */
  ignoreEos: boolean;
  /**
   * Whether the text continues the prompt's text (completions: " four" after "the answer is", decoded in
   * the prompt's context) or is a message of its own (chat: decoded alone, as training tokenizes a
   * response alone).
   */
  continuation: boolean;
  /** Aborting ends every row at its next step. */
  signal?: AbortSignal;
  /** Called as text becomes final (streaming). */
  onEvent?: (e: ChoiceEvent) => void;
};

/** What a generation returns. */
export type GenerationResult = {
  choices: Choice[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  aborted: boolean;
};

class RowState {
  readonly tokens: number[] = [];
  readonly logprobs: LogprobEntry[] = [];
  text = "";
  /** Characters of `text` already sent as deltas. */
  sent = 0;
  /** Log-prob entries already sent. */
  sentLogprobs = 0;
  finish: FinishReason | undefined;

  constructor(readonly index: number, readonly pieces: ReturnType<TextCodec["detokenizer"]>) {}
}

/**
 * Runs a generation to the end (every row finished or the signal aborted). Rows sample independently:
 * row i uses seed `seed + i`, so a seeded request gives the same choices every time.
 */
export async function runGeneration(
  engine: Engine,
  codec: TextCodec,
  req: GenerationRequest,
): Promise<GenerationResult> {
  const stop = new StopMatcher(req.stop);
  const eos = new Set(req.ignoreEos ? [] : codec.special.eos);
  const rows = req.prompts.map((p, i) => new RowState(i, codec.detokenizer(req.continuation ? p : [])));

  const emit = (row: RowState, final: boolean) => {
    if (!req.onEvent) return;
    const until = final ? row.text.length : row.text.length - stop.holdback(row.text);
    const text = row.text.slice(row.sent, Math.max(row.sent, until));
    const logprobs = row.logprobs.slice(row.sentLogprobs);
    if (text.length || logprobs.length) {
      row.sent += text.length;
      row.sentLogprobs = row.logprobs.length;
      req.onEvent({ kind: "delta", index: row.index, text, logprobs });
    }
    if (final) req.onEvent({ kind: "finish", index: row.index, reason: row.finish! });
  };

  /** Adds text to a row; true when a stop string ended it. */
  const append = (row: RowState, delta: string): boolean => {
    if (!delta) return false;
    const checked = row.text.length;
    row.text += delta;
    const at = stop.active ? stop.find(row.text, checked) : -1;
    if (at < 0) return false;
    row.text = row.text.slice(0, at);
    return true;
  };

  const finishRow = (row: RowState, reason: FinishReason) => {
    row.finish = reason;
    emit(row, true);
  };

  const handle = engine.generate({
    prompts: req.prompts,
    maxNewTokens: req.maxTokens,
    eosTokenIds: [...eos],
    temperature: req.temperature,
    topP: req.topP,
    topK: req.topK ?? 0,
    repetitionPenalty: req.repetitionPenalty ?? 1,
    seeds: req.prompts.map((_, i) => req.seed === undefined ? undefined : (req.seed + i) >>> 0),
    topLogprobs: req.logprobs ? req.topLogprobs : 0,
    padTokenId: codec.special.pad,
  }, {
    onToken(e: TokenEvent) {
      const row = rows[e.row];
      if (row.finish) return; // tokens the worker made before it saw our stop
      row.tokens.push(e.token);
      if (eos.has(e.token)) return; // the row ends here; EOS has no text
      const top = req.logprobs && e.top
        ? e.top.map(([id, logprob]) => ({ token: row.pieces.peek(id), id, logprob }))
        : [];
      const delta = row.pieces.push(e.token);
      if (req.logprobs) row.logprobs.push({ token: delta, id: e.token, logprob: e.logprob, top });
      if (append(row, delta)) {
        handle.stopRow(row.index);
        finishRow(row, "stop");
      } else emit(row, false);
    },
    onRowDone(e) {
      const row = rows[e.row];
      if (row.finish) return;
      if (append(row, row.pieces.flush())) return finishRow(row, "stop");
      finishRow(row, finishOf(e.finishReason));
    },
  });

  const onAbort = () => handle.abort();
  if (req.signal?.aborted) handle.abort();
  req.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await handle.done;
  } finally {
    req.signal?.removeEventListener("abort", onAbort);
  }
  const completion = rows.reduce((a, r) => a + r.tokens.length, 0);
  return {
    choices: rows.map((r) => ({
      index: r.index,
      text: r.text,
      tokens: r.tokens,
      logprobs: r.logprobs,
      finishReason: r.finish ?? "abort",
    })),
    usage: {
      prompt_tokens: req.promptTokens,
      completion_tokens: completion,
      total_tokens: req.promptTokens + completion,
    },
    aborted: rows.some((r) => r.finish === "abort"),
  };
}

function finishOf(r: RowFinish): FinishReason {
  return r === "length" ? "length" : r === "abort" ? "abort" : "stop";
}
