/** `readPrompts`: the prompt of every data format, ids, the prompt as given, and errors with file and line. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readPrompts } from "../../lib/loop/prompts.ts";
import { writeRows } from "./_fixtures.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "loop-prompts-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const user = (content: string) => ({ role: "user", content });
const assistant = (content: string) => ({ role: "assistant", content });

Deno.test("prompts: plain rows, a string or messages; ids kept, else the index", async () => {
  await withDir(async (dir) => {
    const path = await writeRows(dir, "p.jsonl", [
      { prompt: "hello" },
      { prompt: [{ role: "system", content: "be brief" }, user("hi")], id: "q-7" },
      { prompt: "again", id: 42 },
    ]);
    const { prompts, format } = await readPrompts(path);
    assert.equal(format, "prompt");
    assert.deepEqual(prompts.map((p) => p.id), [0, "q-7", 42]);
    assert.deepEqual(prompts.map((p) => p.given), [
      "hello",
      [{ role: "system", content: "be brief" }, user("hi")],
      "again",
    ]);
    assert.deepEqual(prompts[0].messages, [user("hello")]);
    assert.deepEqual([prompts[2].file, prompts[2].line], [path, 3]);
  });
});

Deno.test("prompts: a conversation loses its last assistant turn, and only that", async () => {
  await withDir(async (dir) => {
    const path = await writeRows(dir, "m.jsonl", [
      { messages: [user("a"), assistant("b"), user("c"), assistant("d")] },
      { messages: [user("e")] },
    ]);
    const { prompts, format } = await readPrompts(path);
    assert.equal(format, "messages");
    assert.deepEqual(prompts[0].messages, [user("a"), assistant("b"), user("c")]);
    assert.deepEqual(prompts[0].given, prompts[0].messages);
    assert.deepEqual(prompts[1].messages, [user("e")]);
    const bad = await writeRows(dir, "bad.jsonl", [{ messages: [user("x")] }, {
      messages: [assistant("y")],
    }]);
    await assert.rejects(readPrompts(bad), /bad\.jsonl:2: field "messages": has only the assistant's answer/);
  });
});

Deno.test("prompts: reward, preference and SFT rows give their prompt", async () => {
  await withDir(async (dir) => {
    const cases: [string, unknown, string, unknown][] = [
      [
        "reward",
        { prompt: "r?", responses: [{ content: "a", reward: 1 }, { content: "b", reward: 0 }] },
        "reward",
        "r?",
      ],
      [
        "ultrafeedback",
        {
          instruction: "u?",
          completions: [{ response: "a", overall_score: 1 }, { response: "b", overall_score: 2 }],
        },
        "ultrafeedback",
        "u?",
      ],
      ["preference", { prompt: "p?", chosen: "a", rejected: "b" }, "preference", "p?"],
      [
        "binarized",
        {
          prompt: "b?",
          prompt_id: "abc",
          chosen: [user("b?"), assistant("a")],
          rejected: [user("b?"), assistant("c")],
        },
        "preference",
        "b?",
      ],
      ["sft", { prompt: "s?", completion: "a" }, "sft", "s?"],
      ["sft-messages", { messages: [user("m?"), assistant("a")] }, "messages", [user("m?")]],
    ];
    for (const [name, row, format, given] of cases) {
      const set = await readPrompts(await writeRows(dir, `${name}.jsonl`, [row]));
      assert.equal(set.format, format, name);
      assert.deepEqual(set.prompts[0].given, given, name);
      assert.deepEqual(set.prompts[0].id, name === "binarized" ? "abc" : 0, name);
    }
  });
});

Deno.test("prompts: a folder or glob is read in order; the digest follows ids and prompts", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(join(dir, "shards"));
    await writeRows(join(dir, "shards"), "part-10.jsonl", [{ prompt: "c" }]);
    await writeRows(join(dir, "shards"), "part-2.jsonl", [{ prompt: "a" }, { prompt: "b" }]);
    const folder = await readPrompts(join(dir, "shards"));
    assert.deepEqual(folder.prompts.map((p) => p.given), ["a", "b", "c"]);
    assert.deepEqual(folder.prompts.map((p) => p.id), [0, 1, 2]);
    const glob = await readPrompts(join(dir, "shards", "part-*.jsonl"));
    assert.equal(glob.digest, folder.digest);
    await writeRows(join(dir, "shards"), "part-2.jsonl", [{ prompt: "a" }, { prompt: "B" }]);
    assert.notEqual((await readPrompts(join(dir, "shards"))).digest, folder.digest);
  });
});

Deno.test("prompts: errors name the file, the line and the field", async () => {
  await withDir(async (dir) => {
    await assert.rejects(readPrompts(join(dir, "missing.jsonl")), /missing\.jsonl: no such file or folder/);
    const noField = await writeRows(dir, "x.jsonl", [{ question: "q" }]);
    await assert.rejects(
      readPrompts(noField),
      /x\.jsonl:1: cannot tell where the prompt is in the fields \[question\]/,
    );
    const mixed = await writeRows(dir, "y.jsonl", [{ prompt: "a" }, { prompt: 5 }]);
    await assert.rejects(
      readPrompts(mixed),
      /y\.jsonl:2: field "prompt": expected a string or a list of messages/,
    );
    await Deno.writeTextFile(join(dir, "empty.jsonl"), "");
    await assert.rejects(readPrompts(join(dir, "empty.jsonl")), /no prompts in it/);
  });
});
