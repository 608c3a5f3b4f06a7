/**
 * Tokenization for alignment: prompt through the chat template, each response tokenized on its own
 * with EOS appended (EOS is scored), truncation that keeps the end of the prompt.
 *
 * `@huggingface/transformers` is imported lazily in {@link loadTokenizer}: it loads sharp through
 * FFI at import time, and code that only reads data should not need `--allow-ffi`.
 *
 * @module
 */

import { isAbsolute, join, resolve } from "node:path";
import type { PreTrainedTokenizer } from "@huggingface/transformers";
import { type ChatTokenizer, renderChat } from "./chat.ts";
import type { Message, PreferenceExample, RewardExample, SftExample } from "./types.ts";

/** The transformers.js tokenizer type this module works with. */
export type Tokenizer = PreTrainedTokenizer;

/**
 * Load a Hugging Face tokenizer folder (`tokenizer.json`, `tokenizer_config.json`) from disk, never
 * from the Hub. Needs `--allow-read --allow-env --allow-ffi` (transformers.js loads sharp).
 *
 * @example
 * ```ts
 * const tok = await loadTokenizer("models/zephyr-7b-sft");
 * tok.encode("hello", { add_special_tokens: false });
 * ```
 */
export async function loadTokenizer(folder: string): Promise<Tokenizer> {
  // transformers.js treats a relative path that looks like "org/name" as a Hub id under
  // env.localModelPath; an absolute path is read as is.
  const dir = isAbsolute(folder) ? folder : resolve(folder);
  try {
    await Deno.stat(join(dir, "tokenizer.json"));
  } catch {
    throw new Error(
      `${folder}: no tokenizer.json in this folder (a Hugging Face tokenizer folder is expected)`,
    );
  }
  const { AutoTokenizer, env } = await import("@huggingface/transformers");
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  return await AutoTokenizer.from_pretrained(dir);
}

/** Truncation limits, in tokens (TRL's `max_length` and `max_prompt_length`). */
export type TruncationOptions = {
  /** Longest prompt + response; the response is cut at its end to fit. */
  maxLength?: number;
  /** Longest prompt; the prompt is cut from its start (its end, next to the response, is kept). */
  maxPromptLength?: number;
};

/** Options for {@link tokenizeExample}. */
export type TokenizeOptions = TruncationOptions & {
  /**
   * Put the tokenizer's BOS token first when the rendered prompt does not already start with it
   * (as TRL does; chat templates such as Llama's already render it). Default true; no effect
   * for tokenizers without a BOS token.
   */
  addBos?: boolean;
  /** A Jinja chat template to use instead of the tokenizer's own. */
  chatTemplate?: string;
};

/** One tokenized example: a prompt and K responses (K = 1 for SFT, 2 for preference pairs). */
export type TokenizedExample = {
  promptIds: number[];
  /** Each response's tokens, EOS appended (unless truncation cut it off). */
  responseIds: number[][];
  /** Reward data only: one reward per response. */
  rewards?: number[];
};

/**
 * Apply the truncation rule: the prompt keeps its last `maxPromptLength` tokens; then each
 * response is cut at its end so that prompt + response ≤ `maxLength`. At least one response token
 * always stays: when the prompt alone would reach `maxLength`, it keeps its last `maxLength − 1`.
 */
export function truncate(
  promptIds: number[],
  responseIds: number[][],
  opts: TruncationOptions,
): { promptIds: number[]; responseIds: number[][] } {
  const { maxLength, maxPromptLength } = opts;
  for (const [name, v] of [["maxLength", maxLength], ["maxPromptLength", maxPromptLength]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) {
      throw new RangeError(`${name} must be a positive integer, got ${v}`);
    }
  }
  if (maxLength !== undefined && maxLength < 2) {
    throw new RangeError(`maxLength must be at least 2, got ${maxLength}`);
  }
  let promptLimit = maxPromptLength ?? Infinity;
  if (maxLength !== undefined) promptLimit = Math.min(promptLimit, maxLength - 1);
  const prompt = promptIds.length > promptLimit ? promptIds.slice(promptIds.length - promptLimit) : promptIds;
  const responseLimit = maxLength === undefined ? Infinity : maxLength - prompt.length;
  return {
    promptIds: prompt,
    responseIds: responseIds.map((r) => r.length > responseLimit ? r.slice(0, responseLimit) : r),
  };
}

/** What {@link tokenizeExample} needs from a tokenizer. */
export type EncodingTokenizer = ChatTokenizer & {
  encode(text: string, options: { add_special_tokens: boolean }): number[];
  eos_token_id?: number | null;
  bos_token_id?: number | null;
};

/** Prompt token ids: the rendered chat prompt, tokenized without special tokens, BOS first. */
export function tokenizePrompt(
  tokenizer: EncodingTokenizer,
  prompt: Message[],
  opts: Pick<TokenizeOptions, "addBos" | "chatTemplate"> = {},
): number[] {
  const text = renderChat(tokenizer, prompt, { addGenerationPrompt: true, chatTemplate: opts.chatTemplate });
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  const bos = tokenizer.bos_token_id;
  if ((opts.addBos ?? true) && typeof bos === "number" && ids[0] !== bos) ids.unshift(bos);
  return ids;
}

/** Response token ids: the text on its own, no special tokens, then EOS. */
export function tokenizeResponse(tokenizer: EncodingTokenizer, response: string): number[] {
  const eos = tokenizer.eos_token_id;
  if (typeof eos !== "number") {
    throw new Error("the tokenizer has no EOS token: set eos_token in tokenizer_config.json");
  }
  return [...tokenizer.encode(response, { add_special_tokens: false }), eos];
}

/**
 * Tokenize a normalized example. Responses, in order: reward data → its K responses (with
 * `rewards`); preference → [chosen, rejected]; SFT → [completion].
 *
 * @example
 * ```ts
 * const t = tokenizeExample(tok, ex, { maxLength: 1024, maxPromptLength: 512 });
 * t.promptIds; t.responseIds[0].at(-1) === tok.eos_token_id; t.rewards;
 * ```
 */
export function tokenizeExample(
  tokenizer: EncodingTokenizer,
  example: RewardExample | PreferenceExample | SftExample,
  opts: TokenizeOptions = {},
): TokenizedExample {
  const promptIds = tokenizePrompt(tokenizer, example.prompt, opts);
  let texts: string[];
  let rewards: number[] | undefined;
  if ("responses" in example) {
    texts = example.responses.map((r) => r.content);
    rewards = example.responses.map((r) => r.reward);
  } else if ("chosen" in example) {
    texts = [example.chosen, example.rejected];
  } else {
    texts = [example.completion];
  }
  const cut = truncate(promptIds, texts.map((t) => tokenizeResponse(tokenizer, t)), opts);
  return rewards === undefined ? cut : { ...cut, rewards };
}

/** {@link tokenizeExample} over a list. */
export function tokenizeExamples(
  tokenizer: EncodingTokenizer,
  examples: (RewardExample | PreferenceExample | SftExample)[],
  opts: TokenizeOptions = {},
): TokenizedExample[] {
  return examples.map((ex) => tokenizeExample(tokenizer, ex, opts));
}

/** Sequence lengths (prompt + longest response) for length-grouped batching. */
export function sequenceLengths(examples: TokenizedExample[]): number[] {
  return examples.map((ex) => ex.promptIds.length + Math.max(0, ...ex.responseIds.map((r) => r.length)));
}
