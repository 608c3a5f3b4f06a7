/**
 * Tokenization for alignment: prompt through the chat template, each response as the template renders it
 * after the prompt ({@link responseTexts}: Qwen3's empty thinking block included) with its end appended and
 * scored (the template's end-of-turn token, else EOS: {@link responseEndId}), truncation that keeps the end
 * of the prompt. Prompt ids then response ids are the template's rendering of the whole conversation,
 * tokenized.
 *
 * The chat template is read from a model folder as transformers reads it: `chat_template.jinja` (where
 * current transformers saves it), else `chat_template.json`, else `tokenizer_config.json`'s `chat_template`
 * (a string, or a list of named templates of which "default" is used).
 *
 * `@huggingface/transformers` is imported lazily in {@link loadTokenizer}: it loads sharp through
 * FFI at import time, and code that only reads data should not need `--allow-ffi`.
 *
 * @module
 */

import { isAbsolute, join, resolve } from "node:path";
import type { PreTrainedTokenizer } from "@huggingface/transformers";
import { type ChatTokenizer, renderChat, renderPlainChat } from "./chat.ts";
import type { Message, PreferenceExample, RewardExample, SftExample } from "./types.ts";
import { readJsonObject } from "../files.ts";

/** The transformers.js tokenizer type this module works with. */
export type Tokenizer = PreTrainedTokenizer;

/** The files a chat template is read from, in the order transformers looks (the first one found wins). */
export const CHAT_TEMPLATE_FILES = [
  "chat_template.jinja",
  "chat_template.json",
  "tokenizer_config.json",
] as const;

/** A model folder's chat template and the file it came from. */
export type FolderChatTemplate = {
  /** The template, or named templates (the list form; "default" is the one used). */
  template: string | Record<string, string>;
  from: (typeof CHAT_TEMPLATE_FILES)[number];
};

/** A `chat_template` value: a string, or the list form `[{name, template}, …]` as a name → template map. */
function templateValue(v: unknown, where: string): string | Record<string, string> | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named: Record<string, string> = {};
    for (const [i, t] of v.entries()) {
      if (typeof t?.name !== "string" || typeof t?.template !== "string") {
        throw new Error(`${where}: chat_template[${i}] must be {"name": string, "template": string}`);
      }
      named[t.name] = t.template;
    }
    return named;
  }
  throw new Error(`${where}: chat_template must be a string or a list of {name, template}`);
}

/**
 * The chat template of a model folder, read as transformers reads it (see the module documentation), or
 * null when the folder defines none.
 */
export async function readChatTemplate(dir: string): Promise<FolderChatTemplate | null> {
  try {
    return {
      template: await Deno.readTextFile(join(dir, "chat_template.jinja")),
      from: "chat_template.jinja",
    };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  for (const from of ["chat_template.json", "tokenizer_config.json"] as const) {
    const json = await readJsonObject(join(dir, from));
    const template = json && templateValue(json.chat_template, join(dir, from));
    if (template) return { template, from };
  }
  return null;
}

/** The one line said when a model has no chat template and prompts are rendered as plain text. */
export function plainChatNotice(folder: string): string {
  const example = JSON.stringify(renderPlainChat([{ role: "user", content: "…" }]));
  return `note: ${folder} has no chat template (no chat_template.jinja, chat_template.json or chat_template ` +
    `in tokenizer_config.json): prompts are rendered as plain text, ${example}`;
}

/** Options for {@link loadTokenizer}. */
export type LoadTokenizerOptions = {
  /** Where the notice of a missing chat template goes (default: `console.warn`). */
  log?: (line: string) => void;
};

/**
 * Load a Hugging Face tokenizer folder (`tokenizer.json`, `tokenizer_config.json`, and the chat template
 * from `chat_template.jinja` or `chat_template.json` when there) from disk, never from the Hub. A folder
 * without any chat template is said in one line ({@link plainChatNotice}). Needs `--allow-read --allow-env
 * --allow-ffi` (transformers.js loads sharp).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeWordPieceTokenizer } from "./wordpiece.ts";
 * const dir = await Deno.makeTempDir(); // a tiny tokenizer folder; a model's folder is read the same way
 * await writeWordPieceTokenizer(dir, {
 *   specials: ["<pad>", "<eos>", "<unk>"], pad: "<pad>", eos: "<eos>", unk: "<unk>", tokens: ["hello"],
 *   chatTemplate: "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}",
 * });
 * const tok = await loadTokenizer(dir);
 * assert.deepEqual(tok.encode("hello", { add_special_tokens: false }), [3]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadTokenizer(folder: string, opts: LoadTokenizerOptions = {}): Promise<Tokenizer> {
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
  const tokenizer = await AutoTokenizer.from_pretrained(dir);
  // transformers.js reads tokenizer_config.json's template only; transformers reads these files first
  const found = await readChatTemplate(dir);
  if (found) tokenizer.chat_template = found.template;
  else (opts.log ?? console.warn)(plainChatNotice(folder));
  return tokenizer;
}

/** Truncation limits, in tokens (TRL's `max_length` and `max_prompt_length`). */
export type TruncationOptions = {
  /** Longest prompt + response; the response is cut at its end to fit. */
  maxLength?: number;
  /** Longest prompt; the prompt is cut from its start (its end, next to the response, is kept). */
  maxPromptLength?: number;
  /** Counts what was cut, for a run to report (see {@link TruncationStats}). */
  stats?: TruncationStats;
};

/** What truncation cut, counted over a dataset: prompts and responses cut, and the tokens they lost. */
export type TruncationStats = {
  prompts: number;
  promptTokens: number;
  responses: number;
  responseTokens: number;
};

/** Empty {@link TruncationStats}. */
export function truncationStats(): TruncationStats {
  return { prompts: 0, promptTokens: 0, responses: 0, responseTokens: 0 };
}

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
  /** Extra variables for the chat template (e.g. `{ enable_thinking: false }`), see `renderChat`. */
  templateKwargs?: Record<string, unknown>;
};

/** One tokenized example: a prompt and K responses (K = 1 for SFT, 2 for preference pairs). */
export type TokenizedExample = {
  promptIds: number[];
  /**
   * Each response's tokens as the template renders it after the prompt ({@link tokenizeResponses}), its end
   * ({@link responseEndId}) appended (unless truncation cut it off).
   */
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
  const stats = opts.stats;
  if (stats && prompt !== promptIds) {
    stats.prompts++;
    stats.promptTokens += promptIds.length - prompt.length;
  }
  return {
    promptIds: prompt,
    responseIds: responseIds.map((r) => {
      if (r.length <= responseLimit) return r;
      if (stats) {
        stats.responses++;
        stats.responseTokens += r.length - responseLimit;
      }
      return r.slice(0, responseLimit);
    }),
  };
}

/** What {@link tokenizeExample} needs from a tokenizer. */
export type EncodingTokenizer = ChatTokenizer & {
  encode(text: string, options: { add_special_tokens: boolean }): number[];
  eos_token_id?: number | null;
  bos_token_id?: number | null;
  /** The special tokens and their ids, in the same order (transformers.js has both). */
  all_special_tokens?: readonly string[];
  all_special_ids?: readonly number[];
};

/** Prompt token ids: the rendered chat prompt, tokenized without special tokens, BOS first. */
export function tokenizePrompt(
  tokenizer: EncodingTokenizer,
  prompt: Message[],
  opts: Pick<TokenizeOptions, "addBos" | "chatTemplate" | "templateKwargs"> = {},
): number[] {
  const text = renderChat(tokenizer, prompt, {
    addGenerationPrompt: true,
    chatTemplate: opts.chatTemplate,
    templateKwargs: opts.templateKwargs,
  });
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  const bos = tokenizer.bos_token_id;
  if ((opts.addBos ?? true) && typeof bos === "number" && ids[0] !== bos) ids.unshift(bos);
  return ids;
}

/** A special token and its id. */
export type SpecialToken = { token: string; id: number };

/** What stands for the response when the end-of-turn probe renders a conversation. */
const RESPONSE_PROBE = "nca_align_response_probe";
const endOfTurnCache = new WeakMap<object, Map<string, SpecialToken | null>>();

/**
 * The special token a chat template puts right after an assistant message's content (`<|eot_id|>` for
 * Llama 3, `<|im_end|>` for Qwen and ChatML, `<end_of_turn>` for Gemma, `<|end|>` for Phi-3), or null when
 * what follows is not a special token (the plain fallback, templates that end a turn with text). Found by
 * rendering `[user, assistant]` without a generation prompt (with `templateKwargs`) and looking right after
 * the assistant's text.
 */
export function endOfTurnToken(
  tokenizer: EncodingTokenizer,
  chatTemplate?: string,
  templateKwargs?: Record<string, unknown>,
): SpecialToken | null {
  let cache = endOfTurnCache.get(tokenizer);
  if (!cache) endOfTurnCache.set(tokenizer, cache = new Map());
  const key = JSON.stringify([chatTemplate ?? "", templateKwargs ?? {}]);
  if (cache.has(key)) return cache.get(key)!;
  let found: SpecialToken | null = null;
  const tokens = tokenizer.all_special_tokens ?? [];
  const ids = tokenizer.all_special_ids ?? [];
  let text: string | undefined;
  try {
    text = renderChat(tokenizer, [{ role: "user", content: "hi" }, {
      role: "assistant",
      content: RESPONSE_PROBE,
    }], {
      addGenerationPrompt: false,
      chatTemplate,
      templateKwargs,
    });
  } catch {
    // a template that refuses this conversation: keep EOS
  }
  const at = text?.lastIndexOf(RESPONSE_PROBE) ?? -1;
  if (text !== undefined && at >= 0) {
    const after = text.slice(at + RESPONSE_PROBE.length);
    tokens.forEach((token, i) => {
      if (token && after.startsWith(token) && (!found || token.length > found.token.length)) {
        if (typeof ids[i] === "number") found = { token, id: ids[i] };
      }
    });
  }
  cache.set(key, found);
  return found;
}

/**
 * The token that ends every response, appended after its text and scored: the chat template's end-of-turn
 * token ({@link endOfTurnToken}) when it has one, else the tokenizer's EOS.
 */
export function responseEndId(
  tokenizer: EncodingTokenizer,
  chatTemplate?: string,
  templateKwargs?: Record<string, unknown>,
): number {
  const eot = endOfTurnToken(tokenizer, chatTemplate, templateKwargs);
  if (eot) return eot.id;
  const eos = tokenizer.eos_token_id;
  if (typeof eos !== "number") {
    throw new Error("the tokenizer has no EOS token: set eos_token in tokenizer_config.json");
  }
  return eos;
}

/** What {@link checkSpecialIdsInVocab} reads of a tokenizer (transformers.js has all of it). */
export type SpecialIdsTokenizer = EncodingTokenizer & {
  pad_token_id?: number | null;
  bos_token?: string | null;
  eos_token?: string | null;
  pad_token?: string | null;
};

/**
 * Throws when an id the tokenizer puts into sequences — BOS, EOS, pad, the chat template's end of turn —
 * is not a row of the model's embedding (`vocabSize` rows): it would index past it, or, as a stop id, never
 * be sampled. `tokenizerDir` and `configFile` name the two sides in the message.
 */
export function checkSpecialIdsInVocab(
  tokenizer: SpecialIdsTokenizer,
  vocabSize: number,
  tokenizerDir: string,
  configFile: string,
): void {
  const eot = endOfTurnToken(tokenizer);
  const roles: [string, number | null | undefined, string | null | undefined][] = [
    ["bos_token", tokenizer.bos_token_id, tokenizer.bos_token],
    ["eos_token", tokenizer.eos_token_id, tokenizer.eos_token],
    ["pad_token", tokenizer.pad_token_id, tokenizer.pad_token],
    ["chat template's end-of-turn token", eot?.id, eot?.token],
  ];
  for (const [role, id, token] of roles) {
    if (typeof id !== "number" || (id >= 0 && id < vocabSize)) continue;
    const text = typeof token === "string" ? ` ${JSON.stringify(token)}` : "";
    throw new Error(
      `${tokenizerDir}: the tokenizer's ${role}${text} has id ${id}, outside the model's vocabulary ` +
        `(vocab_size ${vocabSize} in ${configFile})`,
    );
  }
}

/** The chat template options a response is rendered with: those of its prompt. */
export type ResponseOptions = Pick<TokenizeOptions, "chatTemplate" | "templateKwargs">;

/**
 * Each response's text as the chat template renders it after `prompt`, between the generation prompt and
 * the end of the assistant's turn: what the model generates there. For most templates that is the content
 * itself; Qwen3's puts an empty thinking block (`<think>\n\n</think>\n\n`) before a final answer unless
 * `enable_thinking` is false (then the generation prompt has it), and moves reasoning written as
 * `<think>…</think>` into its own form. Found by rendering `[...prompt, assistant]` (without a generation
 * prompt): the text after the prompt's rendering (with it), up to what the template puts after any content
 * (its end of turn, learned from a placeholder answer). Where the two renderings do not line up (a template
 * that drops or rewrites the prompt's end), what the template puts before the placeholder is put before
 * the content; where even that cannot be found, the content is used as it is.
 */
export function responseTexts(
  tokenizer: ChatTokenizer,
  prompt: Message[],
  contents: readonly string[],
  opts: ResponseOptions = {},
): string[] {
  return renderResponses(tokenizer, prompt, contents, opts).texts;
}

/** {@link responseTexts}, with the prompt's rendering (the generation prompt at its end). */
function renderResponses(
  tokenizer: ChatTokenizer,
  prompt: Message[],
  contents: readonly string[],
  opts: ResponseOptions,
): { promptText: string; texts: string[] } {
  const render = (messages: Message[], addGenerationPrompt: boolean) =>
    renderChat(tokenizer, messages, {
      addGenerationPrompt,
      chatTemplate: opts.chatTemplate,
      templateKwargs: opts.templateKwargs,
    });
  const promptText = render(prompt, true);
  const answer = (content: string): Message[] => [...prompt, { role: "assistant", content }];
  let before: string | null = null, after: string | null = null;
  try {
    const probe = render(answer(RESPONSE_PROBE), false);
    const at = probe.lastIndexOf(RESPONSE_PROBE);
    if (at >= 0) {
      after = probe.slice(at + RESPONSE_PROBE.length);
      if (probe.startsWith(promptText) && at >= promptText.length) {
        before = probe.slice(promptText.length, at);
      }
    }
  } catch {
    // a template that refuses a conversation ending with the assistant: the content as it is
  }
  const texts = contents.map((content) => {
    if (after !== null) {
      try {
        const full = render(answer(content), false);
        const end = full.length - after.length;
        if (full.startsWith(promptText) && full.endsWith(after) && end >= promptText.length) {
          return full.slice(promptText.length, end);
        }
      } catch {
        // as for the probe
      }
    }
    return before === null ? content : before + content;
  });
  return { promptText, texts };
}

/**
 * The end of `text` from its last special token on (the whole text when it has none). Tokenizers split
 * special tokens out before anything else, so what follows the prompt tokenizes after this tail as it does
 * after the whole prompt, and encoding the tail is cheap.
 */
function specialTail(tokenizer: EncodingTokenizer, text: string): string {
  let from = 0;
  for (const token of tokenizer.all_special_tokens ?? []) {
    if (!token) continue;
    const at = text.lastIndexOf(token);
    if (at > from) from = at;
  }
  return text.slice(from);
}

/**
 * Response token ids, as the chat template's rendering of the whole conversation tokenizes: each
 * response's text after `prompt` ({@link responseTexts}), tokenized where it stands (after the prompt: a
 * token that would merge across the boundary cannot, so the text is then tokenized on its own), then the
 * response's end ({@link responseEndId}: the template's end-of-turn token, else EOS). With the prompt's
 * own ids (`tokenizePrompt`) before them, the ids are those of the conversation rendered by the template
 * up to the end of the assistant's turn.
 */
export function tokenizeResponses(
  tokenizer: EncodingTokenizer,
  prompt: Message[],
  contents: readonly string[],
  opts: ResponseOptions = {},
): number[][] {
  const end = responseEndId(tokenizer, opts.chatTemplate, opts.templateKwargs);
  const encode = (text: string) => tokenizer.encode(text, { add_special_tokens: false });
  const { promptText, texts } = renderResponses(tokenizer, prompt, contents, opts);
  const tail = specialTail(tokenizer, promptText);
  const tailIds = encode(tail);
  return texts.map((text) => {
    const joined = encode(tail + text);
    const split = joined.length >= tailIds.length && tailIds.every((id, i) => joined[i] === id);
    return [...(split ? joined.slice(tailIds.length) : encode(text)), end];
  });
}

/** One response's ids: {@link tokenizeResponses} of one. */
export function tokenizeResponse(
  tokenizer: EncodingTokenizer,
  prompt: Message[],
  content: string,
  opts: ResponseOptions = {},
): number[] {
  return tokenizeResponses(tokenizer, prompt, [content], opts)[0];
}

/**
 * Tokenize a normalized example. Responses, in order: reward data → its K responses (with
 * `rewards`); preference → [chosen, rejected]; SFT → [completion].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeWordPieceTokenizer } from "./wordpiece.ts";
 * const dir = await Deno.makeTempDir(); // a tiny tokenizer folder; a model's folder is read the same way
 * await writeWordPieceTokenizer(dir, {
 *   specials: ["<pad>", "<eos>", "<unk>"], pad: "<pad>", eos: "<eos>", unk: "<unk>",
 *   tokens: ["2", "4", "5", "+", "?", "user", "assistant", ":"],
 * });
 * const tok = await loadTokenizer(dir, { log: () => {} }); // no chat template: plain "User:" text, said here
 * const ex = {
 *   prompt: [{ role: "user", content: "2 + 2?" }],
 *   responses: [{ content: "4", reward: 1 }, { content: "5", reward: 0 }],
 * };
 * const t = tokenizeExample(tok, ex, { maxLength: 1024, maxPromptLength: 512 });
 * assert.equal(t.responseIds.length, 2); // K responses, each ended by EOS (or the template's end of turn)
 * assert.equal(t.responseIds[0].at(-1), responseEndId(tok));
 * assert.deepEqual(t.rewards, [1, 0]);
 * await Deno.remove(dir, { recursive: true });
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
  const cut = truncate(promptIds, tokenizeResponses(tokenizer, example.prompt, texts, opts), opts);
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
