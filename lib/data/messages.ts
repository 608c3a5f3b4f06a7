/**
 * Prompt normalization: every format's prompt becomes a message list, and conversations that end
 * with the assistant's answer are split into (prompt, response).
 *
 * @module
 */

import { describeValue, FieldError } from "./errors.ts";
import { expectMessages } from "./fields.ts";
import type { Message } from "./types.ts";

/** A plain string prompt becomes one user message; a message list is validated and kept. */
export function toPrompt(value: unknown, field: string): Message[] {
  if (typeof value === "string") return [{ role: "user", content: value }];
  if (value === undefined || value === null) {
    throw new FieldError(field, "is missing (expected a string or a list of messages)");
  }
  if (!Array.isArray(value)) {
    throw new FieldError(field, `expected a string or a list of messages, got ${describeValue(value)}`);
  }
  return expectMessages(value, field);
}

/** A conversation whose last message is the assistant's response, split into its parts. */
export type SplitConversation = { prompt: Message[]; response: string };

/**
 * Split a conversation at its final assistant turn. The prompt may be empty (a conversation of
 * just the assistant turn, as in TRL's "prompt + completion" conversational form).
 */
export function splitConversation(value: unknown, field: string): SplitConversation {
  const messages = expectMessages(value, field);
  const last = messages.length - 1;
  if (messages[last].role !== "assistant") {
    throw new FieldError(
      `${field}[${last}].role`,
      `expected the conversation to end with the "assistant" response, got role "${messages[last].role}"`,
    );
  }
  return { prompt: messages.slice(0, last), response: messages[last].content };
}

/** Whether two message lists are the same conversation. */
export function sameMessages(a: Message[], b: Message[]): boolean {
  return a.length === b.length && a.every((m, i) => m.role === b[i].role && m.content === b[i].content);
}

/**
 * A response given either as text or as a conversation ending with the assistant turn.
 * Returns the text and the conversation prefix (empty for plain text).
 */
export function toResponse(value: unknown, field: string): SplitConversation {
  if (typeof value === "string") return { prompt: [], response: value };
  if (value === undefined || value === null) {
    throw new FieldError(
      field,
      "is missing (expected a string or a conversation ending with the assistant turn)",
    );
  }
  if (!Array.isArray(value)) {
    throw new FieldError(field, `expected a string or a list of messages, got ${describeValue(value)}`);
  }
  return splitConversation(value, field);
}

/**
 * The prompt for responses that may carry their own conversation prefix (Hugging Face's
 * ultrafeedback_binarized stores chosen/rejected as full conversations): the prefix of the first
 * response when it has one, otherwise the separate prompt field. All non-empty prefixes must agree.
 */
export function resolvePrompt(
  promptValue: unknown,
  promptField: string,
  responses: { prefix: Message[]; field: string }[],
): Message[] {
  const withPrefix = responses.filter((r) => r.prefix.length > 0);
  if (withPrefix.length === 0) return toPrompt(promptValue, promptField);
  const first = withPrefix[0];
  for (const r of withPrefix.slice(1)) {
    if (!sameMessages(first.prefix, r.prefix)) {
      throw new FieldError(r.field, `conversation before the response differs from "${first.field}"'s`);
    }
  }
  return first.prefix;
}
