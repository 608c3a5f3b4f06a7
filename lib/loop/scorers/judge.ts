/**
 * An LLM judge as a scorer: any OpenAI-compatible `/v1/chat/completions` server (vLLM, llama.cpp, OpenAI,
 * `deno task serve`) is asked, at temperature 0, to rate each response with an UltraFeedback-style rubric
 * ({@link DEFAULT_RUBRIC}: helpfulness, truthfulness, honesty, instruction following → one overall score
 * from 1 to 10), and the score is read from its answer by {@link parseRating}.
 *
 * A custom rubric (`rubric`) replaces the default; it must contain `{prompt}` and `{response}`, which are
 * replaced by the prompt (its text, or a `User:`/`Assistant:` transcript of a conversation) and the
 * response. Its scale is its own: only the default rubric's answers are checked to lie in 1–10.
 *
 * An answer without a rating, a network failure, a timeout, 408, 429 or 5xx is retried (`retries` more
 * times); then the item fails, naming its row (or is skipped with `skipErrors`). An answer larger than
 * `maxResponseBytes` is not read further and fails its item at once (at temperature 0 the same request
 * would answer the same). Any other 4xx (a wrong model name or key) stops at once: every request would fail
 * the same way.
 * @module
 */
import type { Message } from "../../data/types.ts";
import { checkTimeoutS, failItem, type ScoreItem, type Scorer, type SkipOptions } from "./types.ts";

/** The default rubric, after UltraFeedback's overall-quality rating (GPT-4's critique score, 1–10). */
export const DEFAULT_RUBRIC =
  `You are an impartial judge of an AI assistant's answer. Rate the answer to the \
user's instruction for its overall quality, considering:
- Helpfulness: does it address the instruction fully, with useful and relevant content?
- Truthfulness: is it accurate, free of fabricated facts and errors?
- Honesty: does it express uncertainty where warranted, and decline only when it should?
- Instruction following: does it respect the requested task, format, length and constraints?

[Instruction]
{prompt}

[Answer]
{response}

Give a brief justification of a few sentences. Then, on the last line, give the overall score on a scale of \
1 to 10 (10 is best), exactly in this form:
Rating: <score>`;

/** The default rubric's scale. */
export const DEFAULT_RANGE: readonly [number, number] = [1, 10];

/** The default cap on a judge's answer: a thousand times a long one, far below what would strain memory. */
export const DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** Options of {@link judgeScorer}. */
export type JudgeOptions = SkipOptions & {
  /** The server: `http://host:8000`, `…/v1` or the full `…/v1/chat/completions`. */
  url: string;
  /** The judge model's name (default: the first model the server's `GET /v1/models` lists). */
  model?: string;
  /** `Authorization: Bearer` key, if the server wants one. */
  apiKey?: string;
  /** The rubric with `{prompt}` and `{response}` (default {@link DEFAULT_RUBRIC}). */
  rubric?: string;
  /** Requests in flight at once (default 4). */
  concurrency?: number;
  /** Tries after the first for a malformed answer or a transient failure (default 2). */
  retries?: number;
  /** `max_tokens` of each answer (default 1024). */
  maxTokens?: number;
  /** Seconds to wait for one answer (default 300; at most 2^31-1 ms, which a timer holds). */
  timeoutS?: number;
  /**
   * The largest answer read, in bytes (default {@link DEFAULT_MAX_RESPONSE_BYTES}): a larger one is cut
   * off and fails its item without a retry. Also caps `GET /v1/models`.
   */
  maxResponseBytes?: number;
  /** Milliseconds before retrying a transient failure, doubled each time (default 500). */
  retryDelayMs?: number;
};

/** The chat completions endpoint of a server URL. */
export function chatEndpoint(url: string): string {
  const u = url.replace(/\/+$/, "");
  if (u.endsWith("/chat/completions")) return u;
  return u.endsWith("/v1") ? `${u}/chat/completions` : `${u}/v1/chat/completions`;
}

/** The prompt as the judge reads it: a lone user message's text, else a transcript of the conversation. */
export function judgePromptText(prompt: readonly Message[]): string {
  if (prompt.length === 1 && prompt[0].role === "user") return prompt[0].content;
  const title = (r: string) => r.slice(0, 1).toUpperCase() + r.slice(1);
  return prompt.map((m) => `${title(m.role)}: ${m.content}`).join("\n\n");
}

/** The rubric filled in (placeholders replaced literally, once each occurrence). */
export function fillRubric(rubric: string, prompt: string, response: string): string {
  return rubric.split("{prompt}").map((part) => part.split("{response}").join(response)).join(prompt);
}

/** Checks that a custom rubric has both placeholders. */
export function checkRubric(rubric: string, source = "the rubric"): void {
  for (const p of ["{prompt}", "{response}"]) {
    if (!rubric.includes(p)) {
      throw new Error(`${source} has no ${p} placeholder (it needs {prompt} and {response})`);
    }
  }
}

const NUMBER = String.raw`[-+]?\d+(?:\.\d+)?`;
// what follows a labelled number, read with it so that "1e1" is not taken for 1 (trailing points are a
// sentence's end)
const TAIL = String.raw`[\p{L}\p{N}_.]*`;
const LABELLED = new RegExp(
  String.raw`(?:rating|score)\s*(?:\*\*|__)?\s*[:=]\s*(?:\*\*|__)?\s*(?:\[\[|\[)?\s*(${NUMBER})(${TAIL})`,
  "giu",
);
const BARE_LINE = new RegExp(
  String.raw`^[\s*_\[(]*(${NUMBER})\s*(?:\/\s*10|out of 10)?[\s*_\]).]*$`,
  "i",
);

/**
 * The score in a judge's answer, or null. The rule: the LAST `Rating: N` or `Score: N` (any case;
 * `Overall score:`, `**Rating:** N`, `Rating: [[N]]`, `Score = N` too), else, when there is no such label,
 * the answer's last non-empty line when it is just a number (`7`, `**7**`, `7/10`, `7 out of 10`).
 *
 * N is a plain decimal (`7`, `7.5`, `-2`), read whole: the letters, digits and points right after it must be
 * none, or points only (a sentence's end), so `7/10`, `7.` and `7,` are 7. A number that goes on (`7abc`,
 * `8.5.2`, `1e1`, `0x10`) is not a rating, rather than its first digits read as one: when the last label
 * holds one, the answer has no rating (and is asked again), since guessing that `1e1` means 10 could as well
 * be wrong. With `range`, a number outside it is no rating.
 */
export function parseRating(answer: string, range: readonly [number, number] | null = null): number | null {
  let found: number | null = null;
  for (const m of answer.matchAll(LABELLED)) found = /^\.*$/.test(m[2]) ? Number(m[1]) : NaN;
  if (found === null) {
    const last = answer.split("\n").map((l) => l.trim()).filter((l) => l.length > 0).at(-1);
    const m = last?.match(BARE_LINE);
    if (m) found = Number(m[1]);
  }
  if (found === null || !Number.isFinite(found)) return null;
  if (range && (found < range[0] || found > range[1])) return null;
  return found;
}

/** An HTTP answer that retrying will not fix. */
class FatalJudgeError extends Error {
  override name = "FatalJudgeError";
}

/** The text of a chat completion's first choice (string content, or text parts joined). */
function answerText(body: unknown): string | null {
  const choice = (body as { choices?: { message?: { content?: unknown } }[] })?.choices?.[0];
  const content = choice?.message?.content;
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p?.text === "string" ? p.text : "")).join("");
  return null;
}

/**
 * A response's body as text, reading at most `max` bytes; `over` when it is longer: the rest is not read
 * (the body is cancelled, which drops the connection), so a runaway answer cannot fill the memory.
 */
async function readCapped(res: Response, max: number): Promise<{ text: string; over: boolean }> {
  if (!res.body) return { text: "", over: false };
  if (Number(res.headers.get("content-length") ?? NaN) > max) {
    await res.body.cancel().catch(() => {});
    return { text: "", over: true };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "", size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { text: text + decoder.decode(), over: false };
      if (size + value.byteLength > max) {
        text += decoder.decode(value.subarray(0, max - size));
        await reader.cancel().catch(() => {});
        return { text, over: true };
      }
      size += value.byteLength;
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    reader.releaseLock();
  }
}

/** How much of an error answer (4xx, 5xx) is read: enough for its message. */
const ERROR_BODY_BYTES = 64 * 1024;

/** Options of {@link firstModel}. */
export type FirstModelOptions = {
  /** The largest model list read, in bytes (default {@link DEFAULT_MAX_RESPONSE_BYTES}). */
  maxBytes?: number;
  /** Seconds to wait for it (default 300). */
  timeoutS?: number;
};

/** The first model a server lists (`GET /v1/models`). */
export async function firstModel(url: string, apiKey?: string, o: FirstModelOptions = {}): Promise<string> {
  const endpoint = chatEndpoint(url).replace(/\/chat\/completions$/, "/models");
  const max = o.maxBytes ?? DEFAULT_MAX_RESPONSE_BYTES, timeoutS = o.timeoutS ?? 300;
  checkTimeoutS("timeoutS", timeoutS);
  let res: Response, body: { text: string; over: boolean };
  try {
    res = await fetch(endpoint, {
      headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
      signal: AbortSignal.timeout(timeoutS * 1000),
    });
    body = await readCapped(res, res.ok ? max : ERROR_BODY_BYTES);
  } catch (e) {
    throw new Error(`the judge at ${endpoint} cannot be reached: ${(e as Error).message}`);
  }
  if (res.ok && body.over) {
    throw new Error(
      `GET ${endpoint} answered more than ${max} bytes (the answer cap, --judge-max-bytes); name the ` +
        `judge's model (--judge-model)`,
    );
  }
  const text = body.text;
  let id: unknown;
  try {
    id = res.ok ? JSON.parse(text)?.data?.[0]?.id : undefined;
  } catch {
    id = undefined;
  }
  if (typeof id !== "string") {
    const body = text.slice(0, 200);
    throw new Error(
      `GET ${endpoint} answered ${res.status} without a model list (${body}); name the judge's model`,
    );
  }
  return id;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The judge scorer. Without `model`, asks the server which model it serves. */
export async function judgeScorer(o: JudgeOptions): Promise<Scorer> {
  const endpoint = chatEndpoint(o.url);
  const rubric = o.rubric ?? DEFAULT_RUBRIC;
  if (o.rubric !== undefined) checkRubric(o.rubric);
  const range = o.rubric === undefined ? DEFAULT_RANGE : null;
  const concurrency = o.concurrency ?? 4, retries = o.retries ?? 2, maxTokens = o.maxTokens ?? 1024;
  const maxBytes = o.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  const timeoutS = o.timeoutS ?? 300, delay = o.retryDelayMs ?? 500;
  const counts: [string, number, number][] = [
    ["concurrency", concurrency, 1],
    ["retries", retries, 0],
    ["maxTokens", maxTokens, 1],
    ["maxResponseBytes", maxBytes, 1],
  ];
  for (const [k, v, min] of counts) {
    if (!Number.isSafeInteger(v) || v < min) {
      throw new RangeError(`${k} must be an integer ≥ ${min}, got ${v}`);
    }
  }
  // past 2^31-1 ms a timer fires at once: every request would be aborted as it starts
  checkTimeoutS("timeoutS", timeoutS);
  const timeoutMs = timeoutS * 1000;
  const model = o.model ?? await firstModel(o.url, o.apiKey, { maxBytes, timeoutS });
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;

  /**
   * One request: the answer's text, or why there is none (a transient `failure`, or a `final` one not worth
   * retrying); throws when fatal.
   */
  async function ask(content: string): Promise<{ text: string } | { failure: string } | { final: string }> {
    let res: Response;
    try {
      res = await fetch(endpoint, {
        method: "POST",
        headers,
        body: JSON.stringify({
          model,
          messages: [{ role: "user", content }],
          temperature: 0,
          max_tokens: maxTokens,
        }),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      return { failure: `the request failed: ${(e as Error).message}` };
    }
    if (!res.ok) {
      const body = await readCapped(res, ERROR_BODY_BYTES).then(
        (b) => b.text,
        (e) => `(body unreadable: ${e})`,
      );
      const what = `${endpoint} answered ${res.status}: ${body.slice(0, 300)}`;
      if (res.status === 408 || res.status === 429 || res.status >= 500) return { failure: what };
      throw new FatalJudgeError(`the judge ${what}`);
    }
    let body: string;
    try {
      const read = await readCapped(res, maxBytes);
      if (read.over) {
        return {
          final: `the judge's answer is larger than ${maxBytes} bytes (the answer cap, --judge-max-bytes); ` +
            `not read further, and not retried`,
        };
      }
      body = read.text;
    } catch (e) {
      return { failure: `the answer could not be read: ${(e as Error).message}` };
    }
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      return { failure: `the answer is not JSON: ${body.slice(0, 200)}` };
    }
    const text = answerText(json);
    return text === null ? { failure: `the answer has no message content: ${body.slice(0, 200)}` } : { text };
  }

  async function rate(item: ScoreItem, index: number): Promise<number> {
    const content = fillRubric(rubric, judgePromptText(item.prompt), item.response);
    let last = "";
    for (let attempt = 0; attempt <= retries; attempt++) {
      const a = await ask(content);
      if ("final" in a) return failItem(item, index, a.final, o);
      if ("text" in a) {
        const r = parseRating(a.text, range);
        if (r !== null) return r;
        const excerpt = a.text.length > 160 ? `…${a.text.slice(-160)}` : a.text;
        const scale = range ? ` in ${range[0]}–${range[1]}` : "";
        last = `no rating${scale} in the answer ${JSON.stringify(excerpt)}`;
      } else {
        last = a.failure;
        if (attempt < retries) await sleep(delay * 2 ** attempt);
      }
    }
    return failItem(item, index, `the judge failed after ${retries + 1} tries: ${last}`, o);
  }

  return {
    kind: "judge",
    name: model,
    settings: { url: endpoint, model, rubric, maxTokens },
    async score(items: readonly ScoreItem[]): Promise<number[]> {
      const out = new Array<number>(items.length);
      let next = 0, stop = false;
      const worker = async () => {
        while (!stop && next < items.length) {
          const i = next++;
          try {
            out[i] = await rate(items[i], i);
          } catch (e) {
            stop = true;
            throw e;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
      return out;
    },
    release: () => Promise.resolve(),
  };
}
