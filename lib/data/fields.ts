/**
 * Field readers that either return a well-typed value or throw a {@link FieldError} naming the
 * field path, so a bad record is reported precisely (`responses[2].reward`).
 *
 * @module
 */

import { describeValue, FieldError } from "./errors.ts";
import type { Message } from "./types.ts";

/** A JSON object (not null, not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** `value` as a string, or throw. */
export function expectString(value: unknown, field: string): string {
  if (typeof value !== "string") {
    throw new FieldError(field, `expected a string, got ${describeValue(value)}`);
  }
  return value;
}

/**
 * `value` as a finite number, or throw. `bigint` (Parquet INT64 columns) is converted; numeric
 * strings are rejected on purpose: they usually mean a column was read as text by mistake.
 */
export function expectNumber(value: unknown, field: string): number {
  if (typeof value === "bigint") return Number(value);
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new FieldError(field, `expected a finite number, got ${describeValue(value)}`);
  }
  return value;
}

/** `value` as an array, or throw. */
export function expectArray(value: unknown, field: string): unknown[] {
  if (!Array.isArray(value)) throw new FieldError(field, `expected a list, got ${describeValue(value)}`);
  return value;
}

/** `value` as an object, or throw. */
export function expectObject(value: unknown, field: string): Record<string, unknown> {
  if (!isObject(value)) throw new FieldError(field, `expected an object, got ${describeValue(value)}`);
  return value;
}

/**
 * Message content as text. Besides a string, accepts the OpenAI "content parts" form
 * (`[{type: "text", text}]`), joining the text parts: some chat datasets store it that way.
 */
export function expectContent(value: unknown, field: string): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    return value.map((part, i) => {
      const p = expectObject(part, `${field}[${i}]`);
      if (p.type !== "text") {
        throw new FieldError(
          `${field}[${i}].type`,
          `only text content parts are supported, got ${describeValue(p.type)}`,
        );
      }
      return expectString(p.text, `${field}[${i}].text`);
    }).join("");
  }
  throw new FieldError(field, `expected a string, got ${describeValue(value)}`);
}

/** `value` as a non-empty list of `{role, content}` messages, or throw. */
export function expectMessages(value: unknown, field: string): Message[] {
  const list = expectArray(value, field);
  if (list.length === 0) throw new FieldError(field, "expected a non-empty list of messages, got []");
  return list.map((item, i) => {
    const m = expectObject(item, `${field}[${i}]`);
    return {
      role: expectString(m.role, `${field}[${i}].role`),
      content: expectContent(m.content, `${field}[${i}].content`),
    };
  });
}
