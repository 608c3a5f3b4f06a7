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
 * ```
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

/** What {@link renderChat} needs from a tokenizer (a transformers.js `PreTrainedTokenizer` fits). */
export type ChatTokenizer = {
  chat_template?: unknown;
  apply_chat_template(
    conversation: Message[],
    options: { tokenize: false; add_generation_prompt: boolean; chat_template?: string | null },
  ): unknown;
};

/** Options for {@link renderChat}. */
export type RenderOptions = {
  /** End with the assistant header, ready for the response (default true). */
  addGenerationPrompt?: boolean;
  /** A Jinja template to use instead of the tokenizer's own. */
  chatTemplate?: string;
};

/**
 * Render messages with the tokenizer's chat template when it has one (or `chatTemplate` when
 * given), else with {@link renderPlainChat}. Serving uses the same function, so training and
 * inference see identical prompts.
 *
 * @example
 * ```ts
 * renderChat(tokenizer, [{ role: "user", content: "hi" }]); // "<|user|>\nhi</s>\n<|assistant|>\n" for Zephyr
 * ```
 */
export function renderChat(tokenizer: ChatTokenizer, messages: Message[], opts: RenderOptions = {}): string {
  const addGenerationPrompt = opts.addGenerationPrompt ?? true;
  if (opts.chatTemplate === undefined && !tokenizer.chat_template) {
    return renderPlainChat(messages, addGenerationPrompt);
  }
  const text = tokenizer.apply_chat_template(messages, {
    tokenize: false,
    add_generation_prompt: addGenerationPrompt,
    chat_template: opts.chatTemplate ?? null,
  });
  if (typeof text !== "string") throw new Error("chat template did not render to a string");
  return text;
}
