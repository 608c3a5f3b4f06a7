/**
 * POST /v1/logprobs — the inspection endpoint: how the policy and the reference score candidate responses to
 * a prompt, token by token, and how InfoNCA, NCA and DPO see the set (inspect.ts). Prompts and responses are
 * tokenized exactly as the trainer does (a `prompt` string is one user message through the chat template;
 * each candidate is what the template renders after the prompt — Qwen3's thinking block included — then
 * its end, which is scored; `chat_template_kwargs` as in chat completions), so the numbers are the training
 * numbers.
 * @module
 */
import { Hono } from "hono";
import type { ServeContext } from "../context.ts";
import { invalidRequest } from "../errors.ts";
import { type ObjectivesView, objectivesView } from "../inspect.ts";
import { jsonBody } from "../middleware/json_body.ts";
import {
  bodyLimitsOf,
  checkModel,
  checkPromptChars,
  checkPromptLength,
  templateFailure,
  templateKwargsOf,
} from "../request_checks.ts";
import { acquireSlot } from "../respond.ts";
import { logprobsRequestSchema } from "../schemas.ts";
import { toTemplateMessage } from "./chat_completions.ts";

/** One token of a candidate. */
export type InspectedToken = {
  id: number;
  /** The text this token adds (special tokens such as EOS shown as themselves). */
  text: string;
  policy_logprob: number;
  reference_logprob: number | null;
  /** policy − reference: what the implicit reward sums (times β). */
  log_ratio: number | null;
};

/** One scored candidate. */
export type InspectedCandidate = {
  index: number;
  text: string;
  reward: number | null;
  tokens: InspectedToken[];
  /** log π(y|x): the policy's summed log-prob of the response tokens, EOS included. */
  policy_logprob: number;
  reference_logprob: number | null;
  log_ratio: number | null;
  /** β·(log π − log μ). */
  implicit_reward: number | null;
};

/** The endpoint's response. */
export type LogprobsResponse = {
  object: "logprobs";
  model: string;
  /**
   * The reference model's folder (relative to the server's cwd, else its name; absolute with
   * `--expose-paths`), or null when the server has none (reference fields are then null).
   */
  reference_model: string | null;
  beta: number;
  alpha: number;
  prompt_tokens: number;
  candidates: InspectedCandidate[];
  objectives: ObjectivesView | null;
};

/** The inspection route. */
export function logprobsRoute(ctx: ServeContext): Hono {
  const app = new Hono();
  app.post("/v1/logprobs", jsonBody(logprobsRequestSchema, bodyLimitsOf(ctx)), async (c) => {
    const body = c.get("body");
    checkModel(ctx, body.model);
    if ((body.prompt === undefined) === (body.messages === undefined)) {
      throw invalidRequest(
        "give either prompt (a string) or messages (a list), not both or neither",
        "prompt",
      );
    }
    const rewards = body.rewards ?? undefined;
    if (rewards && rewards.length !== body.candidates.length) {
      throw invalidRequest(
        `${rewards.length} rewards for ${body.candidates.length} candidates: give one per candidate`,
        "rewards",
      );
    }
    const beta = body.beta ?? ctx.source.beta;
    const alpha = body.alpha ?? ctx.source.alpha;
    const messages = body.messages
      ? body.messages.map(toTemplateMessage)
      : [{ role: "user" as const, content: body.prompt! }];
    const promptParam = body.messages ? "messages" : "prompt";
    const templateKwargs = templateKwargsOf(ctx, body.chat_template_kwargs);
    // sizes first, in characters: tokenizing is the expensive part
    checkPromptChars(ctx, messages.reduce((a, m) => a + m.content.length, 0), promptParam);
    body.candidates.forEach((t, i) => checkPromptChars(ctx, t.length, `candidates[${i}]`));
    let promptIds: number[], responses: number[][];
    try {
      ({ prompt: promptIds, responses } = await ctx.tokens.chat(
        { messages, candidates: body.candidates, templateKwargs },
        c.req.raw.signal,
      ));
    } catch (e) {
      throw templateFailure(e, promptParam);
    }
    checkPromptLength(ctx, promptIds.length, promptParam);
    responses.forEach((r, i) => {
      if (promptIds.length + r.length > ctx.contextLength) {
        throw invalidRequest(
          `the prompt (${promptIds.length} tokens) plus candidate ${i} (${r.length} tokens) exceeds the ` +
            `model's context of ${ctx.contextLength} tokens`,
          `candidates[${i}]`,
          "context_length_exceeded",
        );
      }
    });

    const release = await acquireSlot(ctx, c.req.raw.signal);
    let policy, reference;
    try {
      const score = (model: "policy" | "reference") =>
        ctx.engine.score({ model, promptIds, responseIds: responses, padTokenId: ctx.codec.special.pad });
      policy = await score("policy");
      reference = ctx.source.referenceDir ? await score("reference") : null;
    } finally {
      release();
    }

    const candidates: InspectedCandidate[] = body.candidates.map((text, i) => {
      const pieces = ctx.codec.detokenizer([], true);
      const tokens = responses[i].map((id, j): InspectedToken => {
        const p = policy.tokenLogprobs[i][j];
        const r = reference ? reference.tokenLogprobs[i][j] : null;
        return {
          id,
          text: pieces.push(id),
          policy_logprob: p,
          reference_logprob: r,
          log_ratio: r === null ? null : p - r,
        };
      });
      const pSum = policy.sums[i];
      const rSum = reference ? reference.sums[i] : null;
      return {
        index: i,
        text,
        reward: rewards ? rewards[i] : null,
        tokens,
        policy_logprob: pSum,
        reference_logprob: rSum,
        log_ratio: rSum === null ? null : pSum - rSum,
        implicit_reward: rSum === null ? null : beta * (pSum - rSum),
      };
    });
    const response: LogprobsResponse = {
      object: "logprobs",
      model: ctx.source.id,
      reference_model: ctx.paths.showOrNull(ctx.source.referenceDir),
      beta,
      alpha,
      prompt_tokens: promptIds.length,
      candidates,
      objectives: reference ? objectivesView(policy.sums, reference.sums, { beta, alpha, rewards }) : null,
    };
    return c.json(response);
  });
  return app;
}
