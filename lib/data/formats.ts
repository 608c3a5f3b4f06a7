/**
 * Source formats: how each dataset layout maps onto the normalized example types, and how a
 * format is recognized from the fields of a record.
 *
 * @module
 */

import { describeValue, FieldError } from "./errors.ts";
import { expectArray, expectContent, expectNumber, expectObject, expectString } from "./fields.ts";
import { resolvePrompt, splitConversation, toPrompt, toResponse } from "./messages.ts";
import type {
  ExampleKind,
  FormatName,
  Message,
  PreferenceExample,
  RewardExample,
  ScoredResponse,
  SftExample,
} from "./types.ts";

/** All format names, in detection order. */
export const FORMAT_NAMES: readonly FormatName[] = [
  "ultrafeedback",
  "chendrag",
  "reward",
  "preference",
  "sft",
];

/** The normalized example type each format produces. */
export const FORMAT_KIND: Readonly<Record<FormatName, ExampleKind>> = {
  reward: "reward",
  ultrafeedback: "reward",
  chendrag: "reward",
  preference: "preference",
  sft: "sft",
};

/** The fields each format reads, for help and error messages. */
export const FORMAT_FIELDS: Readonly<Record<FormatName, string>> = {
  ultrafeedback: "instruction, completions[].response, completions[].overall_score",
  chendrag: "prompt, A0..A{K-1}, score_A0..score_A{K-1}",
  reward: "prompt or messages, responses[].text|content, responses[].reward",
  preference: "prompt (optional when chosen/rejected are conversations), chosen, rejected",
  sft: "messages, or prompt + completion",
};

/** Whether a string names a format. */
export function isFormatName(name: string): name is FormatName {
  return (FORMAT_NAMES as readonly string[]).includes(name);
}

/**
 * Recognize the format of a record from its field names, or `undefined` when none fits.
 * Order matters: UltraFeedback and ChenDRAG rows have a `prompt`-like field too, and
 * ultrafeedback_binarized rows carry `messages` besides `chosen`/`rejected`.
 */
export function detectFormat(row: Record<string, unknown>): FormatName | undefined {
  const has = (k: string) => Object.hasOwn(row, k) && row[k] !== undefined && row[k] !== null;
  if (has("instruction") && has("completions")) return "ultrafeedback";
  if (has("A0") && has("A1")) return "chendrag";
  if (has("responses")) return "reward";
  if (has("chosen") && has("rejected")) return "preference";
  if (has("completion") || has("messages")) return "sft";
  return undefined;
}

/** Explain why no format fits a record. */
export function undetectedFormatMessage(row: Record<string, unknown>): string {
  const fields = Object.keys(row);
  const known = FORMAT_NAMES.map((f) => `${f} (${FORMAT_FIELDS[f]})`).join("; ");
  return `cannot tell the data format from the fields [${fields.join(", ")}]; known formats: ${known}. ` +
    `Name the format explicitly if the fields are there under these names.`;
}

function requireK(responses: ScoredResponse[], field: string): ScoredResponse[] {
  if (responses.length < 2) {
    throw new FieldError(field, `expected at least 2 scored responses, got ${responses.length}`);
  }
  return responses;
}

/** `reward`: `prompt` (or `messages`) and `responses: [{text|content, reward}]`, any K ≥ 2. */
export function parseReward(row: Record<string, unknown>): RewardExample {
  const promptField = (row.prompt === undefined || row.prompt === null) && row.messages != null
    ? "messages"
    : "prompt";
  const prompt = toPrompt(row[promptField], promptField);
  const list = expectArray(row.responses, "responses");
  const responses = list.map((item, i) => {
    const field = `responses[${i}]`;
    const r = expectObject(item, field);
    const key = r.text !== undefined ? "text" : "content";
    if (r[key] === undefined) {
      throw new FieldError(`${field}.text`, 'is missing (expected the response text in "text" or "content")');
    }
    return {
      content: expectContent(r[key], `${field}.${key}`),
      reward: expectNumber(r.reward, `${field}.reward`),
    };
  });
  return { prompt, responses: requireK(responses, "responses") };
}

/** `ultrafeedback`: openbmb/UltraFeedback raw rows. */
export function parseUltraFeedback(row: Record<string, unknown>): RewardExample {
  const prompt = toPrompt(expectString(row.instruction, "instruction"), "instruction");
  const list = expectArray(row.completions, "completions");
  const responses = list.map((item, i) => {
    const field = `completions[${i}]`;
    const c = expectObject(item, field);
    return {
      content: expectString(c.response, `${field}.response`),
      reward: expectNumber(c.overall_score, `${field}.overall_score`),
    };
  });
  return { prompt, responses: requireK(responses, "completions") };
}

/** `chendrag`: ChenDRAG/ultrafeedback_reward: `A0..A{K-1}` conversations with `score_A0..`. */
export function parseChenDrag(row: Record<string, unknown>): RewardExample {
  const parts: { prefix: Message[]; field: string; response: string; reward: number }[] = [];
  for (let i = 0; Object.hasOwn(row, `A${i}`) && row[`A${i}`] !== null; i++) {
    const field = `A${i}`;
    const { prompt: prefix, response } = toResponse(row[field], field);
    parts.push({ prefix, field, response, reward: expectNumber(row[`score_${field}`], `score_${field}`) });
  }
  const prompt = resolvePrompt(row.prompt, "prompt", parts);
  return {
    prompt,
    responses: requireK(parts.map((p) => ({ content: p.response, reward: p.reward })), `A${parts.length}`),
  };
}

/**
 * `preference`: `chosen`/`rejected` as strings or conversations ending with the assistant turn
 * (TRL's formats and HuggingFaceH4/ultrafeedback_binarized).
 */
export function parsePreference(row: Record<string, unknown>): PreferenceExample {
  const chosen = toResponse(row.chosen, "chosen");
  const rejected = toResponse(row.rejected, "rejected");
  const prompt = resolvePrompt(row.prompt, "prompt", [
    { prefix: chosen.prompt, field: "chosen" },
    { prefix: rejected.prompt, field: "rejected" },
  ]);
  return { prompt, chosen: chosen.response, rejected: rejected.response };
}

/** `sft`: `messages` ending with the assistant turn, or `prompt` + `completion`. */
export function parseSft(row: Record<string, unknown>): SftExample {
  if (row.completion === undefined && row.messages !== undefined) {
    const { prompt, response } = splitConversation(row.messages, "messages");
    if (prompt.length === 0) {
      throw new FieldError("messages", "expected at least one message before the assistant response");
    }
    return { prompt, completion: response };
  }
  const completion = toResponse(row.completion, "completion");
  const prompt = resolvePrompt(row.prompt, "prompt", [{ prefix: completion.prompt, field: "completion" }]);
  return { prompt, completion: completion.response };
}

/** The normalized example type a format produces. */
export type ExampleOf<F extends FormatName> = F extends "preference" ? PreferenceExample
  : F extends "sft" ? SftExample
  : RewardExample;

/** The parser for each format. */
export const PARSERS: { readonly [F in FormatName]: (row: Record<string, unknown>) => ExampleOf<F> } = {
  reward: parseReward,
  ultrafeedback: parseUltraFeedback,
  chendrag: parseChenDrag,
  preference: parsePreference,
  sft: parseSft,
};

/** Parse one record in the given format (throws {@link FieldError} on a bad field). */
export function parseRecord(
  format: FormatName,
  row: Record<string, unknown>,
): RewardExample | PreferenceExample | SftExample {
  const parser = PARSERS[format];
  if (!parser) {
    throw new Error(
      `unknown data format ${describeValue(format)}; expected one of ${FORMAT_NAMES.join(", ")}`,
    );
  }
  return parser(row);
}
