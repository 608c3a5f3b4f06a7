import assert from "node:assert/strict";
import { FieldError } from "../../lib/data/errors.ts";
import { detectFormat, parseRecord } from "../../lib/data/formats.ts";
import { loadDataset } from "../../lib/data/load.ts";
import type { FormatName } from "../../lib/data/types.ts";
import { type ColType, MESSAGES, tempDir, writeJsonl, writeParquet } from "./helpers.ts";

const user = (content: string) => ({ role: "user", content });
const assistant = (content: string) => ({ role: "assistant", content });

/** One source layout per format, with the Parquet column types Hub files would use. */
const CASES: {
  name: string;
  format: FormatName;
  rows: Record<string, unknown>[];
  types: Record<string, ColType>;
  expected: unknown[];
}[] = [
  {
    name: "reward (prompt string, text)",
    format: "reward",
    rows: [
      {
        prompt: "what is 2 plus 2?",
        responses: [{ text: "four", reward: 9 }, { text: "five", reward: 1 }, { text: "4", reward: 8.5 }],
      },
      { prompt: "hi", responses: [{ text: "hello", reward: 1 }, { text: "bye", reward: 0 }] },
    ],
    types: { prompt: "string", responses: { list: { struct: { text: "string", reward: "double" } } } },
    expected: [
      {
        prompt: [user("what is 2 plus 2?")],
        responses: [{ content: "four", reward: 9 }, { content: "five", reward: 1 }, {
          content: "4",
          reward: 8.5,
        }],
      },
      { prompt: [user("hi")], responses: [{ content: "hello", reward: 1 }, { content: "bye", reward: 0 }] },
    ],
  },
  {
    name: "reward (messages, content, int64 rewards)",
    format: "reward",
    rows: [{
      messages: [{ role: "system", content: "be brief" }, user("hi")],
      responses: [{ content: "hello", reward: 3 }, { content: "yo", reward: 2 }],
    }],
    types: { messages: MESSAGES, responses: { list: { struct: { content: "string", reward: "int64" } } } },
    expected: [{
      prompt: [{ role: "system", content: "be brief" }, user("hi")],
      responses: [{ content: "hello", reward: 3 }, { content: "yo", reward: 2 }],
    }],
  },
  {
    name: "ultrafeedback (openbmb/UltraFeedback raw)",
    format: "ultrafeedback",
    rows: [{
      source: "evol_instruct",
      instruction: "write a story",
      completions: [
        { model: "m1", response: "once", overall_score: 7.5 },
        { model: "m2", response: "twice", overall_score: 4 },
        { model: "m3", response: "thrice", overall_score: 6 },
        { model: "m4", response: "never", overall_score: 2.5 },
      ],
    }],
    types: {
      source: "string",
      instruction: "string",
      completions: { list: { struct: { model: "string", response: "string", overall_score: "double" } } },
    },
    expected: [{
      prompt: [user("write a story")],
      responses: [
        { content: "once", reward: 7.5 },
        { content: "twice", reward: 4 },
        { content: "thrice", reward: 6 },
        { content: "never", reward: 2.5 },
      ],
    }],
  },
  {
    name: "chendrag (ChenDRAG/ultrafeedback_reward)",
    format: "chendrag",
    rows: [{
      prompt: "q",
      A0: [user("q"), assistant("best")],
      A1: [user("q"), assistant("good")],
      A2: [user("q"), assistant("bad")],
      score_A0: 9,
      score_A1: 7,
      score_A2: 2,
    }],
    types: {
      prompt: "string",
      A0: MESSAGES,
      A1: MESSAGES,
      A2: MESSAGES,
      score_A0: "double",
      score_A1: "double",
      score_A2: "double",
    },
    expected: [{
      prompt: [user("q")],
      responses: [{ content: "best", reward: 9 }, { content: "good", reward: 7 }, {
        content: "bad",
        reward: 2,
      }],
    }],
  },
  {
    name: "preference (HuggingFaceH4/ultrafeedback_binarized: conversations)",
    format: "preference",
    rows: [{
      prompt: "q",
      prompt_id: "abc",
      chosen: [user("q"), assistant("yes")],
      rejected: [user("q"), assistant("no")],
      messages: [user("q"), assistant("yes")],
      score_chosen: 8,
      score_rejected: 3,
    }],
    types: {
      prompt: "string",
      prompt_id: "string",
      chosen: MESSAGES,
      rejected: MESSAGES,
      messages: MESSAGES,
      score_chosen: "double",
      score_rejected: "double",
    },
    expected: [{ prompt: [user("q")], chosen: "yes", rejected: "no" }],
  },
  {
    name: "preference (TRL standard: strings)",
    format: "preference",
    rows: [{ prompt: "the sky is", chosen: " blue.", rejected: " green." }],
    types: { prompt: "string", chosen: "string", rejected: "string" },
    expected: [{ prompt: [user("the sky is")], chosen: " blue.", rejected: " green." }],
  },
  {
    name: "preference (TRL conversational: prompt messages, assistant-only answers)",
    format: "preference",
    rows: [{ prompt: [user("hi")], chosen: [assistant("hello")], rejected: [assistant("go away")] }],
    types: { prompt: MESSAGES, chosen: MESSAGES, rejected: MESSAGES },
    expected: [{ prompt: [user("hi")], chosen: "hello", rejected: "go away" }],
  },
  {
    name: "preference (TRL implicit prompt: full conversations, no prompt field)",
    format: "preference",
    rows: [{
      chosen: [{ role: "system", content: "s" }, user("hi"), assistant("hello")],
      rejected: [{ role: "system", content: "s" }, user("hi"), assistant("meh")],
    }],
    types: { chosen: MESSAGES, rejected: MESSAGES },
    expected: [{ prompt: [{ role: "system", content: "s" }, user("hi")], chosen: "hello", rejected: "meh" }],
  },
  {
    name: "sft (messages)",
    format: "sft",
    rows: [{ messages: [user("a"), assistant("b"), user("c"), assistant("d")] }],
    types: { messages: MESSAGES },
    expected: [{ prompt: [user("a"), assistant("b"), user("c")], completion: "d" }],
  },
  {
    name: "sft (prompt + completion)",
    format: "sft",
    rows: [{ prompt: "2 plus 2", completion: "4" }],
    types: { prompt: "string", completion: "string" },
    expected: [{ prompt: [user("2 plus 2")], completion: "4" }],
  },
];

for (const c of CASES) {
  Deno.test(`format ${c.name}: detected and normalized from JSONL and Parquet`, async () => {
    await using tmp = await tempDir();
    assert.equal(detectFormat(c.rows[0]), c.format);
    const jsonl = await writeJsonl(tmp.path("d.jsonl"), c.rows);
    const parquet = await writeParquet(tmp.path("d.parquet"), c.rows, c.types);
    for (const path of [jsonl, parquet]) {
      const ds = await loadDataset(path);
      assert.equal(ds.format, c.format, path);
      assert.deepEqual(ds.examples, c.expected, path);
      assert.deepEqual(ds.skipped, []);
      assert.equal(ds.records, c.rows.length);
      const explicit = await loadDataset(path, { format: c.format });
      assert.deepEqual(explicit.examples, c.expected);
    }
  });
}

Deno.test("loadDataset: kind follows the format", async () => {
  await using tmp = await tempDir();
  const ds = await loadDataset(await writeJsonl(tmp.path("u.jsonl"), CASES[2].rows));
  assert.equal(ds.kind, "reward");
  if (ds.kind === "reward") assert.equal(ds.examples[0].responses.length, 4);
  const pref = await loadDataset(await writeJsonl(tmp.path("p.jsonl"), CASES[4].rows));
  assert.equal(pref.kind, "preference");
  const sft = await loadDataset(await writeJsonl(tmp.path("s.jsonl"), CASES[8].rows));
  assert.equal(sft.kind, "sft");
});

Deno.test("an explicit format overrides detection", async () => {
  // A binarized row also has `messages`; read as SFT it yields the chosen conversation.
  const row = CASES[4].rows[0];
  assert.deepEqual(parseRecord("sft", row), { prompt: [user("q")], completion: "yes" });
  await using tmp = await tempDir();
  const ds = await loadDataset(await writeJsonl(tmp.path("b.jsonl"), [row]), { format: "sft" });
  assert.equal(ds.kind, "sft");
  assert.deepEqual(ds.examples, [{ prompt: [user("q")], completion: "yes" }]);
  await assert.rejects(
    loadDataset(tmp.path("b.jsonl"), { format: "dpo" as FormatName }),
    /unknown data format "dpo"/,
  );
});

Deno.test("content parts are joined into text", () => {
  const row = {
    prompt: [{ role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] }],
    chosen: "x",
    rejected: "y",
  };
  assert.deepEqual(parseRecord("preference", row), { prompt: [user("ab")], chosen: "x", rejected: "y" });
});

/** Field errors: [format, row, field, message pattern]. */
const FIELD_ERRORS: [FormatName, Record<string, unknown>, string, RegExp][] = [
  [
    "reward",
    { prompt: "q", responses: [{ text: "a", reward: 1 }, { text: "b", reward: "abc" }] },
    "responses[1].reward",
    /expected a finite number, got "abc"/,
  ],
  [
    "reward",
    { prompt: "q", responses: [{ text: "a", reward: 1 }, { text: "b", reward: null }] },
    "responses[1].reward",
    /expected a finite number, got null/,
  ],
  [
    "reward",
    { prompt: "q", responses: [{ text: "a", reward: 1 }, { text: "b" }] },
    "responses[1].reward",
    /expected a finite number, got nothing/,
  ],
  [
    "reward",
    { prompt: "q", responses: [{ text: "a", reward: 1 }] },
    "responses",
    /at least 2 scored responses, got 1/,
  ],
  ["reward", { prompt: "q", responses: "nope" }, "responses", /expected a list, got "nope"/],
  [
    "reward",
    { prompt: "q", responses: [{ text: "a", reward: 1 }, 7] },
    "responses[1]",
    /expected an object, got 7/,
  ],
  [
    "reward",
    { prompt: "q", responses: [{ text: "a", reward: 1 }, { reward: 2 }] },
    "responses[1].text",
    /is missing/,
  ],
  ["reward", { responses: [{ text: "a", reward: 1 }, { text: "b", reward: 2 }] }, "prompt", /is missing/],
  [
    "reward",
    { prompt: [{ role: "user" }], responses: [] },
    "prompt[0].content",
    /expected a string, got nothing/,
  ],
  ["reward", { prompt: [], responses: [] }, "prompt", /non-empty list of messages/],
  ["reward", { prompt: 5, responses: [] }, "prompt", /expected a string or a list of messages, got 5/],
  [
    "ultrafeedback",
    {
      instruction: "q",
      completions: [{ response: "a", overall_score: 1 }, { response: 5, overall_score: 2 }],
    },
    "completions[1].response",
    /expected a string, got 5/,
  ],
  [
    "ultrafeedback",
    {
      instruction: "q",
      completions: [{ response: "a", overall_score: 1 }, { response: "b", overall_score: "N/A" }],
    },
    "completions[1].overall_score",
    /got "N\/A"/,
  ],
  [
    "chendrag",
    { prompt: "q", A0: [user("q"), assistant("a")], A1: [user("q"), assistant("b")], score_A0: 1 },
    "score_A1",
    /expected a finite number/,
  ],
  [
    "chendrag",
    { prompt: "q", A0: [user("q"), assistant("a")], A1: [user("q")], score_A0: 1, score_A1: 2 },
    "A1[0].role",
    /end with the "assistant" response, got role "user"/,
  ],
  [
    "chendrag",
    {
      prompt: "q",
      A0: [user("q"), assistant("a")],
      A1: [user("other"), assistant("b")],
      score_A0: 1,
      score_A1: 2,
    },
    "A1",
    /differs from "A0"/,
  ],
  ["preference", { prompt: "q", chosen: "a" }, "rejected", /is missing/],
  [
    "preference",
    { prompt: "q", chosen: 3, rejected: "b" },
    "chosen",
    /expected a string or a list of messages, got 3/,
  ],
  ["preference", { chosen: [assistant("a")], rejected: [assistant("b")] }, "prompt", /is missing/],
  ["sft", { messages: [user("a")] }, "messages[0].role", /end with the "assistant" response/],
  ["sft", { messages: [assistant("a")] }, "messages", /at least one message before/],
  ["sft", { prompt: "a", completion: null }, "completion", /is missing/],
];

for (const [i, [format, row, field, pattern]] of FIELD_ERRORS.entries()) {
  Deno.test(`field error ${i}: ${format} ${field} ${pattern.source}`, () => {
    assert.throws(() => parseRecord(format, row), (e: unknown) => {
      assert.ok(e instanceof FieldError, String(e));
      assert.equal(e.field, field);
      assert.match(e.message, pattern);
      return true;
    });
  });
}

Deno.test("detectFormat: undetectable rows", () => {
  assert.equal(detectFormat({ text: "x" }), undefined);
  assert.equal(detectFormat({ prompt: "x" }), undefined);
  assert.equal(detectFormat({ chosen: "x" }), undefined);
});
