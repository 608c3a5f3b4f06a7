/**
 * Parses and validates a JSON request body against a zod schema, before the route runs: the body is read
 * under the server's limits (read_body.ts: JSON Content-Type only, size, deadline), then malformed JSON and
 * schema violations become 400s whose `param` names the offending field (`messages[0].content`), so a
 * client sees what to fix. The route reads the typed body with `c.get("body")`.
 * @module
 */
import type { MiddlewareHandler } from "hono";
import type { z } from "zod";
import { invalidRequest } from "../errors.ts";
import { type BodyLimits, readJsonText } from "./read_body.ts";

/** The Hono environment a route behind {@link jsonBody} sees. */
export type JsonBodyEnv<T> = { Variables: { body: T } };

/** A path as OpenAI writes parameters: `messages[0].content`. */
export function paramPath(path: readonly PropertyKey[]): string | null {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : `${out ? "." : ""}${String(p)}`;
  return out || null;
}

/** Reads the body under `limits`, validates it with `schema` and stores it as `body`. */
export function jsonBody<S extends z.ZodType>(
  schema: S,
  limits: BodyLimits,
): MiddlewareHandler<JsonBodyEnv<z.output<S>>> {
  return async (c, next) => {
    const text = await readJsonText(c, limits);
    if (text.trim() === "") {
      throw invalidRequest("the request body is empty; send a JSON object", null, "invalid_json");
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw invalidRequest(
        `the request body is not valid JSON: ${(e as Error).message}`,
        null,
        "invalid_json",
      );
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw invalidRequest("the request body must be a JSON object", null, "invalid_json");
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const param = paramPath(issue.path);
      const more = parsed.error.issues.length > 1 ? ` (and ${parsed.error.issues.length - 1} more)` : "";
      throw invalidRequest(`${param ?? "body"}: ${issue.message}${more}`, param, "invalid_value");
    }
    c.set("body", parsed.data);
    await next();
  };
}
