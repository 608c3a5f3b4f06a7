/**
 * The inspection endpoint's numbers against an independent computation: every token's log-prob under the
 * policy and under the reference recomputed from the exported serving models (a full forward pass and a
 * log-softmax here, not the server's scoring graph), sums, implicit rewards β·(log π − log μ), and the
 * objectives' view written out from the paper's formulas. With the policy as its own reference every
 * implicit reward is 0. Also: the run's metrics endpoint, and a model folder served without a reference;
 * and a template that, like Qwen3's, puts text between the generation prompt and the answer: the candidates
 * are scored as the template renders them, `chat_template_kwargs` included.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadTokenizer, tokenizePrompt, tokenizeResponse } from "../../lib/data/tokenize.ts";
import { SERVING_NAMES } from "../../lib/model/generate.ts";
import { type HostTensor, i64, ModelSession } from "../../lib/runtime/session.ts";
import { FALLBACK_BETA } from "../../lib/serve/model_source.ts";
import type { LogprobsResponse } from "../../lib/serve/routes/logprobs.ts";
import { buildFixture, CFG, RUN_ALPHA, RUN_BETA, RUN_NAME, RUN_STEPS, serve } from "./_fixture.ts";
import { exportForServing } from "../../lib/model/export.ts";
import { initWeights } from "../../lib/model/init.ts";
import { tinyVocab } from "../fixtures/tokenizer.ts";
import { writeThinkingTemplate } from "../fixtures/thinking_template.ts";

const PROMPT = "sort 3 1 2";
const CANDIDATES = ["1 2 3", "1 3 2", "3 2 1"];
const REWARDS = [1, 0.33, 0.3];

/** log p(token t | tokens < t) for every t ≥ 1 of `seq`, from the serving model's logits. */
async function tokenLogprobs(session: ModelSession, seq: number[]): Promise<number[]> {
  const feeds: Record<string, HostTensor> = {
    input_ids: i64(seq, [1, seq.length]),
    attention_mask: i64(seq.map(() => 1), [1, seq.length]),
    position_ids: i64(seq.map((_, i) => i), [1, seq.length]),
    num_logits_to_keep: i64([0], []),
  };
  for (let l = 0; l < CFG.numLayers; l++) {
    const empty: HostTensor = {
      dtype: "float32",
      dims: [1, CFG.numKvHeads, 0, CFG.headDim],
      data: new Float32Array(0),
    };
    feeds[SERVING_NAMES.pastKey(l)] = empty;
    feeds[SERVING_NAMES.pastValue(l)] = empty;
  }
  const logits = (await session.run(feeds)).logits.data as Float32Array;
  const V = CFG.vocabSize;
  const out: number[] = [];
  for (let t = 1; t < seq.length; t++) {
    const row = logits.subarray((t - 1) * V, t * V);
    let m = -Infinity;
    for (const x of row) m = Math.max(m, x);
    let s = 0;
    for (const x of row) s += Math.exp(x - m);
    out.push(row[seq[t]] - m - Math.log(s));
  }
  return out;
}

const near = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);
const sig = (x: number) => 1 / (1 + Math.exp(-x));

Deno.test({
  name: "log-prob inspection endpoint",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const fx = await buildFixture();
    const server = await serve({ model: fx.runDir });
    const inspect = async (url: string, body: unknown) => {
      const res = await fetch(`${url}/v1/logprobs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    const tok = await loadTokenizer(fx.policyDir);
    const policy = await ModelSession.create(join(fx.policyDir, "onnx/model.onnx"), { intraOpThreads: 1 });
    const reference = await ModelSession.create(join(fx.baseDir, "onnx/model.onnx"), { intraOpThreads: 1 });
    try {
      await t.step("per-token log-probs, sums, implicit rewards and objectives match", async () => {
        const { status, body } = await inspect(server.url, {
          prompt: PROMPT,
          candidates: CANDIDATES,
          rewards: REWARDS,
        });
        assert.equal(status, 200, JSON.stringify(body));
        const res = body as LogprobsResponse;
        assert.equal(res.model, RUN_NAME);
        assert.equal(res.reference_model, "base", "the folder's name, not the machine's path");
        assert.equal(res.beta, RUN_BETA);
        assert.equal(res.alpha, RUN_ALPHA);
        const promptIds = tokenizePrompt(tok, [{ role: "user", content: PROMPT }]);
        assert.equal(res.prompt_tokens, promptIds.length);
        const z: number[] = [];
        for (const [k, c] of res.candidates.entries()) {
          const ids = tokenizeResponse(tok, [{ role: "user", content: PROMPT }], CANDIDATES[k]);
          assert.equal(c.text, CANDIDATES[k]);
          assert.equal(c.reward, REWARDS[k]);
          assert.deepEqual(c.tokens.map((x) => x.id), ids);
          assert.equal(c.tokens.map((x) => x.text).join(""), tok.decode(ids, { skip_special_tokens: false }));
          const seq = [...promptIds, ...ids];
          const pol = (await tokenLogprobs(policy, seq)).slice(promptIds.length - 1);
          const ref = (await tokenLogprobs(reference, seq)).slice(promptIds.length - 1);
          c.tokens.forEach((x, j) => {
            near(x.policy_logprob, pol[j], 1e-4, `policy token ${k}.${j}`);
            near(x.reference_logprob!, ref[j], 1e-4, `reference token ${k}.${j}`);
            near(x.log_ratio!, x.policy_logprob - x.reference_logprob!, 1e-12, "ratio");
          });
          const sumP = c.tokens.reduce((a, x) => a + x.policy_logprob, 0);
          const sumR = c.tokens.reduce((a, x) => a + x.reference_logprob!, 0);
          near(c.policy_logprob, sumP, 1e-4, "policy sum = Σ tokens");
          near(c.reference_logprob!, sumR, 1e-4, "reference sum = Σ tokens");
          near(c.policy_logprob, pol.reduce((a, b) => a + b), 1e-4, "policy sum, independent");
          near(c.log_ratio!, c.policy_logprob - c.reference_logprob!, 1e-12, "log ratio");
          near(
            c.implicit_reward!,
            RUN_BETA * (c.policy_logprob - c.reference_logprob!),
            1e-12,
            "implicit reward",
          );
          z.push(c.implicit_reward!);
        }
        assert.ok(z.some((x) => Math.abs(x) > 1e-3), "the policy differs from the reference");
        const o = res.objectives!;
        o.implicit_rewards.forEach((x, i) => near(x, z[i], 1e-12, "z"));
        const e = REWARDS.map((r) => Math.exp(r / RUN_ALPHA));
        const p = e.map((x) => x / e.reduce((a, b) => a + b));
        o.soft_labels!.forEach((x, i) => near(x, p[i], 1e-12, "soft label"));
        const ez = z.map(Math.exp);
        const q = ez.map((x) => x / ez.reduce((a, b) => a + b));
        o.infonca.probabilities.forEach((x, i) => near(x, q[i], 1e-12, "InfoNCA p"));
        near(o.infonca.loss!, -p.reduce((a, pi, i) => a + pi * Math.log(q[i]), 0), 1e-12, "InfoNCA loss");
        o.nca.probabilities.forEach((x, i) => near(x, sig(z[i]), 1e-12, "NCA σ"));
        const nca = -p.reduce((a, pi, i) => a + pi * Math.log(sig(z[i])), 0) -
          z.reduce((a, zi) => a + Math.log(sig(-zi)), 0) / z.length;
        near(o.nca.loss!, nca, 1e-12, "NCA loss");
        const best = z.indexOf(Math.max(...z));
        assert.equal(o.infonca.preferred, best);
        assert.equal(o.nca.preferred, best);
        assert.equal(o.reward_preferred, 0);
        assert.equal(o.dpo!.chosen, 0);
        assert.equal(o.dpo!.rejected, 2);
        near(o.dpo!.loss, -Math.log(sig(z[0] - z[2])), 1e-12, "DPO loss");
      });

      await t.step("β from the request; messages instead of a prompt string give the same", async () => {
        const a = (await inspect(server.url, { prompt: PROMPT, candidates: CANDIDATES.slice(0, 2) })).body;
        const b = (await inspect(server.url, {
          messages: [{ role: "user", content: PROMPT }],
          candidates: CANDIDATES.slice(0, 2),
          beta: 2,
        })).body as LogprobsResponse;
        assert.equal(b.beta, 2);
        b.candidates.forEach((c, i) => {
          assert.equal(c.policy_logprob, a.candidates[i].policy_logprob);
          near(c.implicit_reward!, 2 * c.log_ratio!, 1e-12, "β = 2");
        });
        assert.equal(a.objectives.soft_labels, null, "no rewards, no labels");
        assert.equal(a.objectives.infonca.loss, null);
        assert.notEqual(a.objectives.dpo, null, "a pair still has DPO's view");
      });

      await t.step("bad requests", async () => {
        const bad = async (body: unknown, param: string) => {
          const r = await inspect(server.url, body);
          assert.equal(r.status, 400, JSON.stringify(r.body));
          assert.equal(r.body.error.param, param);
        };
        await bad({ prompt: PROMPT, candidates: CANDIDATES, rewards: [1, 2] }, "rewards");
        await bad(
          { prompt: PROMPT, messages: [{ role: "user", content: "x" }], candidates: ["a"] },
          "prompt",
        );
        await bad({ candidates: ["a"] }, "prompt");
        await bad({ prompt: PROMPT, candidates: [] }, "candidates");
        await bad({ prompt: PROMPT, candidates: ["a"], beta: 0 }, "beta");
        await bad({ prompt: PROMPT, candidates: ["a", 3] }, "candidates[1]");
      });

      await t.step("the run's training metrics", async () => {
        const res = await fetch(`${server.url}/v1/runs/current/metrics`);
        const m = await res.json();
        assert.equal(m.run.id, RUN_NAME);
        assert.equal(m.run.loss, "nca");
        assert.equal(m.run.beta, RUN_BETA);
        assert.equal(m.records.length, RUN_STEPS);
        assert.equal(m.records[0].step, 1);
        for (const k of ["loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "eval/loss"]) {
          assert.ok(m.metrics.includes(k), k);
        }
        assert.equal(m.records.filter((r: Record<string, number>) => "eval/loss" in r).length, 4);
        assert.equal(m.summary.steps, RUN_STEPS);
        assert.equal(m.config.k, 4);
      });

      await t.step("with the policy as its own reference, every implicit reward is 0", async () => {
        const same = await serve({ model: fx.runDir, reference: fx.policyDir });
        try {
          const { body } = await inspect(same.url, {
            prompt: PROMPT,
            candidates: CANDIDATES,
            rewards: REWARDS,
          });
          const res = body as LogprobsResponse;
          assert.equal(res.reference_model, "policy");
          for (const c of res.candidates) {
            assert.equal(c.implicit_reward, 0);
            assert.equal(c.log_ratio, 0);
            assert.ok(c.tokens.every((x) => x.log_ratio === 0));
          }
          res.objectives!.nca.probabilities.forEach((x) => assert.equal(x, 0.5));
          res.objectives!.infonca.probabilities.forEach((x) => near(x, 1 / 3, 1e-15, "uniform"));
        } finally {
          await same.close();
        }
      });

      await t.step("a model folder without a reference: policy log-probs only; no run metrics", async () => {
        const bare = await serve({ model: fx.baseDir });
        try {
          const { status, body } = await inspect(bare.url, { prompt: PROMPT, candidates: CANDIDATES });
          assert.equal(status, 200);
          const res = body as LogprobsResponse;
          assert.equal(res.model, "base");
          assert.equal(res.reference_model, null);
          assert.equal(res.beta, FALLBACK_BETA);
          assert.equal(res.objectives, null);
          assert.ok(res.candidates.every((c) => c.reference_logprob === null && c.implicit_reward === null));
          assert.ok(res.candidates.every((c) => Number.isFinite(c.policy_logprob)));
          const m = await (await fetch(`${bare.url}/v1/runs/current/metrics`)).json();
          assert.equal(m.run, null);
          assert.deepEqual(m.records, []);
        } finally {
          await bare.close();
        }
      });
    } finally {
      await policy.release();
      await reference.release();
      await server.close();
      await fx.cleanup();
    }
  },
});

Deno.test({
  name: "log-prob inspection: candidates are scored as the template renders them after the prompt",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const fx = await buildFixture();
    const tokDir = join(fx.root, "thinking-tokenizer");
    await Deno.mkdir(tokDir);
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      await Deno.copyFile(join(fx.tokenizerDir, f), join(tokDir, f));
    }
    await writeThinkingTemplate(tokDir);
    const modelDir = join(fx.root, "thinking");
    await exportForServing(modelDir, {
      cfg: CFG,
      weights: initWeights(CFG, { seed: 4, std: 0.3, normStd: 0.1 }),
      tokenizerDir: tokDir,
    });
    const server = await serve({ model: modelDir });
    const vocab = tinyVocab();
    const ids = (s: string) => s.split(" ").map((t) => vocab.indexOf(t));
    const inspect = async (body: Record<string, unknown>) => {
      const res = await fetch(`${server.url}/v1/logprobs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "what is two plus two", candidates: ["four", "five"], ...body }),
      });
      return { status: res.status, body: await res.json() };
    };
    try {
      const on = (await inspect({})).body as LogprobsResponse;
      assert.deepEqual(on.candidates[0].tokens.map((t) => t.id), ids("answer : four <eos>"));
      assert.deepEqual(on.candidates[1].tokens.map((t) => t.id), ids("answer : five <eos>"));
      const off = (await inspect({ chat_template_kwargs: { enable_thinking: false } }))
        .body as LogprobsResponse;
      assert.equal(off.prompt_tokens, on.prompt_tokens + 2, "the generation prompt has `answer :`");
      assert.deepEqual(off.candidates[0].tokens.map((t) => t.id), ids("four <eos>"));
      // the same sequence either way: the tokens both score have the same log-probs
      const tail = on.candidates[0].tokens.slice(2);
      off.candidates[0].tokens.forEach((t, j) =>
        near(t.policy_logprob, tail[j].policy_logprob, 1e-4, `token ${j}`)
      );
      const bad = await inspect({ chat_template_kwargs: { add_generation_prompt: false } });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.param, "chat_template_kwargs");
    } finally {
      await server.close();
      await fx.cleanup();
    }
  },
});
