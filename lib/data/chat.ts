/**
 * Prompt rendering: a message list becomes the text the model sees before its response, with the
 * generation prompt (the assistant header) at the end.
 *
 * @module
 */

import type { Message } from "./types.ts";

/**
 * The fallback when a tokenizer has no `chat_template` (base models such as GPT-2): every message
 * becomes `Role:\n{content}\n\n` (role capitalized), then the generation prompt `Assistant:\n`.
 *
 * ```text
 * User:
 * What is 2 + 2?
 *
 * Assistant:
 * ```
 *
 * The generation prompt ends with a newline so that a response tokenized on its own gives the same
 * tokens as the joined text would for byte-level BPE tokenizers (GPT-2's `\n` is its own token).
 */
export const PLAIN_CHAT_TEMPLATE = "{% for message in messages %}" +
  "{{ message['role'][0] | upper }}{{ message['role'][1:] }}{{ ':\\n' + message['content'] + '\\n\\n' }}" +
  "{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'Assistant:\\n' }}{% endif %}";

/** The same rendering as {@link PLAIN_CHAT_TEMPLATE}, in plain TypeScript. */
export function renderPlainChat(messages: Message[], addGenerationPrompt = true): string {
  const title = (role: string) => role.slice(0, 1).toUpperCase() + role.slice(1);
  const body = messages.map((m) => `${title(m.role)}:\n${m.content}\n\n`).join("");
  return addGenerationPrompt ? `${body}Assistant:\n` : body;
}

/** `apply_chat_template`'s options as {@link renderChat} passes them: extra keys are template variables. */
export type ChatTemplateOptions = {
  tokenize: false;
  add_generation_prompt: boolean;
  chat_template?: string | null;
  [variable: string]: unknown;
};

/** What {@link renderChat} needs from a tokenizer (a transformers.js `PreTrainedTokenizer` fits). */
export type ChatTokenizer = {
  chat_template?: unknown;
  apply_chat_template(conversation: Message[], options: ChatTemplateOptions): unknown;
};

/**
 * Names a template variable in `templateKwargs` may not take: the rendering's own (`messages`,
 * `add_generation_prompt`) and transformers.js' `apply_chat_template` options, which it would read as options.
 */
export const RESERVED_TEMPLATE_KWARGS: readonly string[] = [
  "messages",
  "add_generation_prompt",
  "chat_template",
  "tools",
  "documents",
  "tokenize",
  "padding",
  "truncation",
  "max_length",
  "return_tensor",
  "return_dict",
  "tokenizer_kwargs",
];

/**
 * Template kwargs given as JSON text (`--chat-template-kwargs '{"enable_thinking": false}'`) or as a parsed
 * value (a config file's): a JSON object whose keys are not {@link RESERVED_TEMPLATE_KWARGS}. Throws an
 * Error naming `what` (the flag) otherwise.
 */
export function parseTemplateKwargs(raw: unknown, what = "--chat-template-kwargs"): Record<string, unknown> {
  let v = raw;
  if (typeof raw === "string") {
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw new Error(
        `${what} must be a JSON object, e.g. '{"enable_thinking": false}': ${(e as Error).message}`,
      );
    }
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    const got = typeof raw === "string" ? raw : JSON.stringify(raw);
    throw new Error(`${what} must be a JSON object, e.g. '{"enable_thinking": false}', got ${got}`);
  }
  const reserved = Object.keys(v).filter((k) => RESERVED_TEMPLATE_KWARGS.includes(k));
  if (reserved.length) throw new Error(`${what} may not set ${reserved.join(", ")} (the toolkit sets them)`);
  return v as Record<string, unknown>;
}

/** Options for {@link renderChat}. */
export type RenderOptions = {
  /** End with the assistant header, ready for the response (default true). */
  addGenerationPrompt?: boolean;
  /** A Jinja template to use instead of the tokenizer's own. */
  chatTemplate?: string;
  /**
   * Extra variables for the template (vLLM's `chat_template_kwargs`, transformers' `**kwargs` of
   * `apply_chat_template`), e.g. `{ enable_thinking: false }` for Qwen3. Ignored by the plain fallback.
   */
  templateKwargs?: Record<string, unknown>;
};

/**
 * Render messages with the tokenizer's chat template when it has one (or `chatTemplate` when
 * given; `templateKwargs` become template variables), else with {@link renderPlainChat}. Serving uses the same function, so training and
 * inference see identical prompts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadTokenizer } from "./tokenize.ts";
 * import { writeWordPieceTokenizer } from "./wordpiece.ts";
 * const dir = await Deno.makeTempDir(); // a tiny tokenizer folder with Zephyr's template
 * const chatTemplate = "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token }}" +
 *   "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
 * await writeWordPieceTokenizer(dir, {
 *   specials: ["<pad>", "</s>", "<unk>"], pad: "<pad>", eos: "</s>", unk: "<unk>", tokens: ["hi"],
 *   chatTemplate,
 * });
 * const tokenizer = await loadTokenizer(dir);
 * const text = renderChat(tokenizer, [{ role: "user", content: "hi" }]);
 * assert.equal(text, "<|user|>\nhi</s>\n<|assistant|>\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function renderChat(tokenizer: ChatTokenizer, messages: Message[], opts: RenderOptions = {}): string {
  const addGenerationPrompt = opts.addGenerationPrompt ?? true;
  if (opts.chatTemplate === undefined && !tokenizer.chat_template) {
    return renderPlainChat(messages, addGenerationPrompt);
  }
  const kwargs = opts.templateKwargs ?? {};
  const reserved = Object.keys(kwargs).filter((k) => RESERVED_TEMPLATE_KWARGS.includes(k));
  if (reserved.length) throw new Error(`template kwargs may not set ${reserved.join(", ")}`);
  const text = tokenizer.apply_chat_template(messages, {
    ...kwargs,
    tokenize: false,
    add_generation_prompt: addGenerationPrompt,
    chat_template: opts.chatTemplate ?? null,
  });
  if (typeof text !== "string") throw new Error("chat template did not render to a string");
  return text;
}
