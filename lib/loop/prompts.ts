/**
 * Prompts to sample from, out of any data a user has: the toolkit's training formats (reward, UltraFeedback,
 * ChenDRAG, preference, SFT: each row gives its prompt, the responses are ignored), or plain rows
 * `{"prompt": "..."}` (a string or a message list) and `{"messages": [...]}` (a conversation; its last
 * assistant turn, if any, is dropped: that is the answer to sample again). Files, folders, globs and Hub
 * layout folders as lib/data reads them, with its errors (`file:line: field "…": …`).
 *
 * The rows are read here rather than through `loadDataset` because the loader's examples drop what the
 * sampler must keep: the row's `id` and the prompt as it was written (a string stays a string), which go
 * into the output so that `deno task score` and a user's own scripts can join samples to their prompts.
 * @module
 */
import { createHash } from "node:crypto";
import { DataError, FieldError, type RecordUnit } from "../data/errors.ts";
import { expectMessages } from "../data/fields.ts";
import { detectFormat, FORMAT_FIELDS, FORMAT_NAMES, parseRecord } from "../data/formats.ts";
import { toPrompt } from "../data/messages.ts";
import { readRecords, recordFileKind } from "../data/records.ts";
import { type DataFiles, resolveDataFiles } from "../data/sources.ts";
import type { FormatName, Message } from "../data/types.ts";

/** How prompt rows are read: a training format, or the plain `prompt` / `messages` rows. */
export type PromptFormat = FormatName | "prompt" | "messages";

/** An id as it goes into JSON: what the row had (a Parquet int64 as a number when exact, else a string). */
export type PromptId = string | number | boolean | null | PromptId[] | { [key: string]: PromptId };

/** One prompt to sample from. */
export type PromptRow = {
  /** The row's `id` (else `prompt_id`, as ultrafeedback_binarized has it), else its index among the prompts. */
  id: PromptId;
  /** The prompt as the row gave it: a string, or the message list (a conversation without its answer). */
  given: string | Message[];
  /** The prompt as messages, for the chat template. */
  messages: Message[];
  /** Where the row is: `file` and its 1-based line (JSONL) or row (Parquet). */
  file: string;
  line: number;
  unit: RecordUnit;
};

/** What {@link readPrompts} read. */
export type PromptSet = {
  prompts: PromptRow[];
  format: PromptFormat;
  input: DataFiles;
  /** A digest of every prompt's id and text, in order: which prompts a sample file is of. */
  digest: string;
};

/**
 * The format of a row: a training format by its fields, else a plain prompt row. A `messages` row without
 * a `completion` is a conversation to continue (an SFT row reads the same: its prompt is what comes before
 * the last assistant turn).
 */
export function detectPromptFormat(row: Record<string, unknown>): PromptFormat | undefined {
  const has = (k: string) => row[k] !== undefined && row[k] !== null;
  const format = detectFormat(row);
  if (format === "sft" && !has("completion")) return "messages";
  if (format) return format;
  if (has("prompt")) return "prompt";
  return undefined;
}

/** A `messages` conversation as a prompt: its last assistant turn dropped, something left. */
function conversationPrompt(value: unknown): Message[] {
  const messages = expectMessages(value, "messages");
  const prompt = messages.at(-1)!.role === "assistant" ? messages.slice(0, -1) : messages;
  if (prompt.length === 0) {
    throw new FieldError("messages", "has only the assistant's answer: nothing to prompt with");
  }
  return prompt;
}

/** The id a row carries (`id`, else `prompt_id`), or undefined. */
function rowId(row: Record<string, unknown>): PromptId | undefined {
  const v = row.id ?? row.prompt_id;
  if (v === undefined || v === null) return undefined;
  return jsonValue(v, row.id !== undefined && row.id !== null ? "id" : "prompt_id");
}

function jsonValue(v: unknown, field: string): PromptId {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : String(v);
  if (typeof v === "string" || typeof v === "boolean") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new FieldError(field, `expected a finite number, got ${v}`);
    return v;
  }
  if (Array.isArray(v)) return v.map((x, i) => jsonValue(x, `${field}[${i}]`));
  if (v !== null && typeof v === "object") {
    if (v instanceof Date) return v.toISOString();
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonValue(x, `${field}.${k}`)]));
  }
  throw new FieldError(field, `cannot be written as JSON (${typeof v})`);
}

/** One row's prompt in `format`: its messages and the prompt as given. */
export function promptOf(
  format: PromptFormat,
  row: Record<string, unknown>,
): { given: string | Message[]; messages: Message[] } {
  if (format === "prompt") {
    const messages = toPrompt(row.prompt, "prompt");
    return { given: typeof row.prompt === "string" ? row.prompt : messages, messages };
  }
  if (format === "messages") {
    const messages = conversationPrompt(row.messages);
    return { given: messages, messages };
  }
  const messages = parseRecord(format, row).prompt;
  // a one-message prompt that the row wrote as a string stays a string
  const field = format === "ultrafeedback" ? row.instruction : row.prompt;
  const single = messages.length === 1 && messages[0].role === "user" && field === messages[0].content;
  return { given: single ? (field as string) : messages, messages };
}

/** Options for {@link readPrompts}. */
export type ReadPromptsOptions = {
  /** Stop after this many prompts. */
  limit?: number;
};

/**
 * Reads every prompt of a data path (file, folder, glob, Hub layout folder), in order. The format is told by
 * the first row; a row that does not fit it stops reading with `file:line: …`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(join(dir, "prompts.jsonl"), '{"prompt_id": "a1", "prompt": "2 + 2?"}\n');
 * // also a Hub folder or a glob: "ultrafeedback_binarized/data/test_prefs-*.parquet"
 * const { prompts } = await readPrompts(join(dir, "prompts.jsonl"));
 * assert.equal(prompts[0].id, "a1"); // its id, else its prompt_id, else its index
 * assert.deepEqual(prompts[0].messages, [{ role: "user", content: "2 + 2?" }]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readPrompts(path: string, opts: ReadPromptsOptions = {}): Promise<PromptSet> {
  const input = await resolveDataFiles(path, { role: "train" });
  const prompts: PromptRow[] = [];
  const limit = opts.limit ?? Infinity;
  let format: PromptFormat | undefined;
  const hash = createHash("sha256");
  outer: for (const file of input.files) {
    const unit: RecordUnit = recordFileKind(file) === "parquet" ? "row" : "line";
    for await (const { row, line } of readRecords(file)) {
      if (prompts.length >= limit) break outer;
      try {
        format ??= detectPromptFormat(row) ?? noFormat(row);
        const { given, messages } = promptOf(format, row);
        const id = rowId(row) ?? prompts.length;
        prompts.push({ id, given, messages, file, line, unit });
        hash.update(promptKey(id, given));
      } catch (e) {
        throw toDataError(e, file, line, unit, format);
      }
    }
  }
  if (format === undefined || prompts.length === 0) throw new Error(`${path}: no prompts in it`);
  return { prompts, format, input, digest: `sha256:${hash.digest("hex")}` };
}

/** What a prompt's digest entry is: its id and prompt as JSON, one line. */
export function promptKey(id: PromptId, given: string | Message[]): string {
  return JSON.stringify([id, given]) + "\n";
}

function noFormat(row: Record<string, unknown>): never {
  const known = FORMAT_NAMES.map((f) => `${f} (${FORMAT_FIELDS[f]})`).join("; ");
  throw new FieldError(
    "",
    `cannot tell where the prompt is in the fields [${Object.keys(row).join(", ")}]: expected "prompt" ` +
      `(a string or messages), "messages" (a conversation), or a training format: ${known}`,
  );
}

function toDataError(
  e: unknown,
  file: string,
  line: number,
  unit: RecordUnit,
  format: PromptFormat | undefined,
): unknown {
  if (e instanceof DataError) return e;
  if (e instanceof FieldError) {
    const as = format ? ` (rows are read as "${format}", from the first row)` : "";
    return new DataError(file, line, e.message + as, e.field || undefined, unit);
  }
  return e;
}
