/**
 * The LLM judge scorer against fake OpenAI-compatible servers on 127.0.0.1 (Deno.serve): the request it
 * sends (the rubric filled in, temperature 0, the model the server lists), the rating parsed, malformed
 * answers retried and then reported naming the row (or skipped), fatal HTTP errors stopping at once; and
 * end to end through the CLI against the toolkit's own `deno task serve` on a tiny random model, whose
 * answers are garbage: the run stops naming the first row.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadDataset } from "../../lib/data/load.ts";
import { scoreFile } from "../../lib/loop/score.ts";
import { chatEndpoint, DEFAULT_RUBRIC, judgeScorer, parseRating } from "../../lib/loop/scorers/judge.ts";
import { ScoreError } from "../../lib/loop/scorers/types.ts";
import { buildFixture } from "../serve/_fixture.ts";
import { jsonl, readRows, rewardsOf, SAMPLE_ROWS, taskCommand } from "./_score_helpers.ts";

type Request = {
  model: string;
  temperature: number;
  max_tokens: number;
  messages: { role: string; content: string }[];
};

/**
 * A fake judge: `answer` gives the reply to the n-th request whose rubric holds a response; `models` the
 * answer to `GET /v1/models` (default a list of one, "fake-judge").
 */
function fakeJudge(answer: (content: string, n: number) => string | Response, models?: () => Response) {
  const requests: Request[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/v1/models") {
      return models?.() ?? Response.json({ object: "list", data: [{ id: "fake-judge", object: "model" }] });
    }
    if (req.method !== "POST" || url.pathname !== "/v1/chat/completions") {
      return new Response("no", { status: 404 });
    }
    const body = await req.json() as Request;
    requests.push(body);
    const a = answer(body.messages[0].content, requests.length);
    if (a instanceof Response) return a;
    return Response.json({
      id: "x",
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: a }, finish_reason: "stop" }],
    });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, requests, close: () => server.shutdown() };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "judge_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
const quiet = () => {};

Deno.test("judge: parseRating reads the last labelled score, else a bare last line", () => {
  assert.equal(parseRating("Good answer.\nRating: 8"), 8);
  assert.equal(parseRating("**Rating:** 7.5"), 7.5);
  assert.equal(parseRating("Overall score: 9/10"), 9);
  assert.equal(parseRating("Rating: [[6]]"), 6);
  assert.equal(parseRating("score = 3, then rating: 4"), 4);
  assert.equal(parseRating("It has 3 errors.\n\n**6**"), 6);
  assert.equal(parseRating("7 out of 10"), 7);
  assert.equal(parseRating("no number here"), null);
  assert.equal(parseRating("It has 3 errors and is poor."), null);
  assert.equal(parseRating("Rating: 11", [1, 10]), null);
  assert.equal(parseRating("Rating: 11"), 11);
  assert.equal(chatEndpoint("http://h:1"), "http://h:1/v1/chat/completions");
  assert.equal(chatEndpoint("http://h:1/v1/"), "http://h:1/v1/chat/completions");
  assert.equal(chatEndpoint("http://h:1/v1/chat/completions"), "http://h:1/v1/chat/completions");
});

Deno.test("judge: parseRating reads a number whole: 7abc, 8.5.2, 1e1, 0x10 are no rating; 7/10 is 7", () => {
  // not their first digits: each is no rating at all (the answer is asked again)
  assert.equal(parseRating("Rating: 7abc"), null);
  assert.equal(parseRating("Rating: 8.5.2"), null);
  assert.equal(parseRating("Rating: 1e1"), null);
  assert.equal(parseRating("Rating: 1e1", [1, 10]), null);
  assert.equal(parseRating("Rating: 0x10"), null);
  assert.equal(parseRating("Score: 7점"), null);
  // what may follow a number
  assert.equal(parseRating("Rating: 7/10"), 7);
  assert.equal(parseRating("Rating: 7 / 10", [1, 10]), 7);
  assert.equal(parseRating("Rating: 7."), 7);
  assert.equal(parseRating("Rating: 7.5/10."), 7.5);
  assert.equal(parseRating("Rating: 10, a fine answer", [1, 10]), 10);
  assert.equal(parseRating("**Rating:** 9**"), 9);
  // the last label decides: a malformed one is not replaced by an earlier label or the last line
  assert.equal(parseRating("Rating: 8\nOn reflection, Rating: 9x"), null);
  assert.equal(parseRating("Rating: 1e1\n7"), null);
  // a bare last line is read whole too
  assert.equal(parseRating("Fine.\n1e1"), null);
  assert.equal(parseRating("Fine.\n8.5.2"), null);
  assert.equal(parseRating("Fine.\n7abc"), null);
  assert.equal(parseRating("Fine.\n0x10"), null);
  assert.equal(parseRating("Fine.\n7/10"), 7);
});

Deno.test("judge: an answer over maxResponseBytes fails its item naming the cap, without a retry", async () => {
  const item = {
    prompt: [{ role: "user", content: "q" }],
    response: "a",
    row: {},
    at: "f.jsonl:1 responses[0]",
  };
  const capped = "the judge's answer is larger than 16384 bytes (the answer cap, --judge-max-bytes); " +
    "not read further, and not retried";
  // a large answer with a rating at its end: its length is declared (content-length)
  const big = fakeJudge(() => `${"blah ".repeat(8000)}\nRating: 8`);
  try {
    const scorer = await judgeScorer({
      url: big.url,
      model: "m",
      maxResponseBytes: 16 * 1024,
      retryDelayMs: 1,
    });
    await assert.rejects(
      () => scorer.score([item]),
      (e: Error) => e instanceof ScoreError && e.message === `f.jsonl:1 responses[0]: ${capped}`,
    );
    assert.equal(big.requests.length, 1, "not retried");
    const skipped: string[] = [];
    const skipping = await judgeScorer({
      url: big.url,
      model: "m",
      maxResponseBytes: 16 * 1024,
      skipErrors: true,
      onSkip: (_at, why) => skipped.push(why),
    });
    assert.deepEqual(await skipping.score([item]), [NaN]);
    assert.deepEqual(skipped, [capped]);
    // under the cap it is read
    const roomy = await judgeScorer({ url: big.url, model: "m", maxResponseBytes: 64 * 1024 });
    assert.deepEqual(await roomy.score([item]), [8]);
  } finally {
    await big.close();
  }
  // an answer that never ends, streamed without a length: cut off at the cap, the request dropped
  let chunks = 0;
  const endless = fakeJudge(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        pull(c) {
          chunks++;
          c.enqueue(new TextEncoder().encode(`{"choices": [{"message": {"content": "${"x".repeat(4096)}`));
        },
      }),
      { headers: { "content-type": "application/json" } },
    )
  );
  try {
    const scorer = await judgeScorer({
      url: endless.url,
      model: "m",
      maxResponseBytes: 16 * 1024,
      retries: 0,
      timeoutS: 20,
    });
    const t0 = performance.now();
    await assert.rejects(
      () => scorer.score([item]),
      (e: Error) => e instanceof ScoreError && e.message === `f.jsonl:1 responses[0]: ${capped}`,
    );
    assert.ok(performance.now() - t0 < 10_000, "cut off, not timed out");
    await new Promise((r) => setTimeout(r, 300));
    const after = chunks;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(chunks, after, "the server stopped sending");
  } finally {
    await endless.close();
  }
});

Deno.test("judge: GET /v1/models is capped too; a timeout a timer cannot hold is refused", async () => {
  const many = fakeJudge(
    () => "Rating: 8",
    () =>
      Response.json({
        data: Array.from({ length: 2000 }, (_, i) => ({ id: `model-${i}`, object: "model" })),
      }),
  );
  try {
    await assert.rejects(
      () => judgeScorer({ url: many.url, maxResponseBytes: 16 * 1024 }),
      (e: Error) =>
        e.message === `GET ${many.url}/v1/models answered more than 16384 bytes (the answer cap, ` +
            `--judge-max-bytes); name the judge's model (--judge-model)`,
    );
    assert.equal((await judgeScorer({ url: many.url })).name, "model-0");
  } finally {
    await many.close();
  }
  // past 2^31-1 ms setTimeout fires at once: every request would be aborted as it starts
  for (const timeoutS of [2 ** 31 / 1000, 1e300, Infinity, NaN, 0, -1]) {
    await assert.rejects(
      () => judgeScorer({ url: "http://127.0.0.1:9", model: "m", timeoutS }),
      (e: Error) =>
        e instanceof RangeError &&
        /timeoutS must be a number of seconds > 0 and ≤ 2147483\.647/.test(e.message),
      String(timeoutS),
    );
  }
  await assert.rejects(
    () => judgeScorer({ url: "http://127.0.0.1:9", model: "m", maxResponseBytes: 0 }),
    /maxResponseBytes must be an integer ≥ 1/,
  );
});

Deno.test("judge: 'Rating: 8' from an OpenAI-compatible server scores every response 8", async () => {
  const judge = fakeJudge(() => "The answer is correct and concise.\nRating: 8");
  try {
    await withDir(async (dir) => {
      const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
      await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
      const scorer = await judgeScorer({ url: judge.url, concurrency: 3 });
      assert.equal(scorer.name, "fake-judge");
      await scoreFile({ data, out, scorer, log: quiet });
      assert.deepEqual(rewardsOf(await readRows(out)), [[8, 8, 8], [8, 8], [8, 8], [8, 8]]);
      const ds = await loadDataset(out);
      assert.equal(ds.kind, "reward");
      assert.equal(judge.requests.length, 9);
      for (const r of judge.requests) {
        assert.equal(r.model, "fake-judge");
        assert.equal(r.temperature, 0);
        assert.equal(r.messages.length, 1);
        assert.ok(
          !r.messages[0].content.includes("{prompt}") && r.messages[0].content.includes("Rating: <score>"),
        );
      }
      const first = judge.requests.find((r) => r.messages[0].content.includes("[Answer]\nit is 4 .\n"));
      assert.ok(
        first?.messages[0].content.includes("[Instruction]\nwhat is 2 + 2 ?\n"),
        "prompt and response filled in",
      );
      // a conversation is shown as a transcript
      assert.ok(
        judge.requests.some((r) =>
          r.messages[0].content.includes("System: be brief\n\nUser: what is 3 + 4 ?")
        ),
      );
      assert.ok(DEFAULT_RUBRIC.includes("1 to 10"));
    });
  } finally {
    await judge.close();
  }
});

Deno.test("judge: garbage is retried, then an error naming the row; retry can succeed; skipErrors skips", async () => {
  const garbage = fakeJudge(() => "I cannot decide. The answer is interesting.");
  try {
    await withDir(async (dir) => {
      const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
      await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
      const scorer = await judgeScorer({ url: garbage.url, model: "fake-judge", concurrency: 1, retries: 2 });
      await assert.rejects(
        () => scoreFile({ data, out, scorer, log: quiet }),
        (e: Error) =>
          e.message.startsWith(
            `${data}:1 responses[0]: the judge failed after 3 tries: no rating in 1–10 in the answer`,
          ),
      );
      assert.equal(garbage.requests.length, 3);
      // --skip-errors: every row skipped and counted, nothing written
      const skipped: string[] = [];
      const skipping = await judgeScorer({
        url: garbage.url,
        model: "fake-judge",
        retries: 0,
        skipErrors: true,
        onSkip: (at) => skipped.push(at),
      });
      const r = await scoreFile({ data, out, scorer: skipping, skipErrors: true, log: quiet });
      assert.equal(r.rowsWritten, 0);
      assert.equal(r.skipped.length, 4);
      assert.equal(skipped.length, 9);
    });
  } finally {
    await garbage.close();
  }
  // the first answer of each response is garbage, the second a rating: retried, scored
  const seen = new Set<string>();
  const flaky = fakeJudge((content) => {
    if (seen.has(content)) return "Rating: 6";
    seen.add(content);
    return "hmm";
  });
  try {
    const scorer = await judgeScorer({ url: flaky.url, model: "m", retries: 1 });
    const item = { prompt: [{ role: "user", content: "q" }], response: "a", row: {} };
    assert.deepEqual(await scorer.score([item, { ...item, response: "b" }]), [6, 6]);
    assert.equal(flaky.requests.length, 4);
  } finally {
    await flaky.close();
  }
});

Deno.test("judge: a 401 stops at once; a 503 is retried; a custom rubric keeps its own scale", async () => {
  const denied = fakeJudge(() => new Response('{"error": {"message": "bad key"}}', { status: 401 }));
  try {
    const scorer = await judgeScorer({
      url: denied.url,
      model: "m",
      retries: 3,
      apiKey: "k",
      skipErrors: true,
    });
    const item = {
      prompt: [{ role: "user", content: "q" }],
      response: "a",
      row: {},
      at: "f.jsonl:1 responses[0]",
    };
    await assert.rejects(() => scorer.score([item]), /the judge .* answered 401: .*bad key/);
    assert.equal(denied.requests.length, 1);
  } finally {
    await denied.close();
  }
  const busy = fakeJudge((_c, n) => n === 1 ? new Response("busy", { status: 503 }) : "Score: 73");
  try {
    const scorer = await judgeScorer({
      url: `${busy.url}/v1`,
      model: "m",
      rubric: "Q: {prompt}\nA: {response}\nScore 0-100 as Score: N",
      retryDelayMs: 1,
    });
    const item = { prompt: [{ role: "user", content: "q?" }], response: "a!", row: {} };
    assert.deepEqual(await scorer.score([item]), [73]);
    assert.equal(busy.requests.length, 2);
    assert.equal(busy.requests[1].messages[0].content, "Q: q?\nA: a!\nScore 0-100 as Score: N");
  } finally {
    await busy.close();
  }
  await assert.rejects(
    () => judgeScorer({ url: "http://127.0.0.1:9", model: "m", rubric: "{prompt} only" }),
    /no \{response\} placeholder/,
  );
});

Deno.test("judge: end to end, deno task score against deno task serve on a tiny model (garbage answers)", async () => {
  const fx = await buildFixture();
  const serve = await taskCommand("serve", [
    "--model",
    fx.policyDir,
    "--port",
    "0",
    "--threads",
    "1",
    "--quiet",
  ]);
  const child = new Deno.Command(serve.cmd, {
    args: serve.args,
    cwd: serve.cwd,
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const stderr = child.stderr.text();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!/listening on (http:\/\/\S+)/.test(out)) {
      const r = await reader.read();
      if (r.done) throw new Error(`serve exited: ${out}\n${await stderr}`);
      out += r.value;
    }
    reader.releaseLock();
    child.stdout.cancel().catch(() => {});
    const url = out.match(/listening on (http:\/\/\S+)/)![1];
    const data = join(fx.root, "samples.jsonl"), scored = join(fx.root, "scored.jsonl");
    await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS.slice(0, 2)));
    const score = await taskCommand("score", [
      "--data",
      data,
      "--out",
      scored,
      "--judge-url",
      url,
      "--concurrency",
      "1",
      "--retries",
      "1",
      "--judge-max-tokens",
      "3",
      "--quiet",
    ]);
    const r = await new Deno.Command(score.cmd, {
      args: score.args,
      cwd: score.cwd,
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    const err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 1, err);
    assert.match(
      err,
      new RegExp(`error: ${data}:1 responses\\[0\\]: the judge failed after 2 tries: no rating`),
    );
    assert.equal(await Deno.readTextFile(scored), "");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await stderr.catch(() => "");
    await fx.cleanup();
  }
});
