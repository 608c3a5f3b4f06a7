/**
 * Request bodies, as zod schemas: the OpenAI fields this server implements, with OpenAI's ranges, and the
 * inspection endpoint's body. Fields OpenAI defines but this server cannot honour are accepted only with
 * their neutral values and otherwise refused by name (unsupported.ts), never silently ignored; fields
 * nobody defines are ignored, as OpenAI does.
 * @module
 */
import { z } from "zod";

/** Most choices per request. */
export const MAX_N = 16;
/** Most alternatives per token (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;
/** Most stop strings per request. */
export const MAX_STOP = 16;
/** Most candidates the inspection endpoint scores at once. */
export const MAX_CANDIDATES = 16;
/**
 * Largest β the inspection endpoint takes: implicit rewards β·(log π − log μ) overflow past any sensible
 * value (papers use 0.01–1), and a request for more is a mistake, not an experiment.
 */
export const MAX_BETA = 1000;
/** Largest α (soft-label temperature): beyond it every soft label is uniform to double precision. */
export const MAX_ALPHA = 1e6;

const textPart = z.object({ type: z.literal("text"), text: z.string() });

/** A chat message; content as a string or as text parts. */
export const messageSchema = z.object({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: z.union([z.string(), z.array(textPart)]).nullable(),
});

export type ChatMessage = z.infer<typeof messageSchema>;

const sampling = {
  model: z.string().optional(),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** vLLM's extension: keep the k most likely tokens (0 or -1: all). */
  top_k: z.number().int().min(-1).nullish(),
  /** vLLM's extension (transformers' repetition_penalty): > 1 discourages tokens already in the sequence. */
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(MAX_STOP)]).nullish(),
  n: z.number().int().min(1).max(MAX_N).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  /** vLLM's extension: keep generating past EOS (up to max_tokens). */
  ignore_eos: z.boolean().nullish(),
  frequency_penalty: z.number().nullish(),
  presence_penalty: z.number().nullish(),
  logit_bias: z.record(z.string(), z.number()).nullish(),
};

/** The fields both generation routes share. */
export type SamplingRequest = z.infer<z.ZodObject<typeof sampling>>;

/** POST /v1/chat/completions. */
export const chatRequestSchema = z.object({
  ...sampling,
  messages: z.array(messageSchema).min(1),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  tools: z.array(z.unknown()).nullish(),
  response_format: z.object({ type: z.string() }).loose().nullish(),
  /** vLLM's extension: extra variables for the chat template, e.g. `{"enable_thinking": false}` for Qwen3. */
  chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
});

export type ChatRequest = z.infer<typeof chatRequestSchema>;

/** POST /v1/completions. */
export const completionRequestSchema = z.object({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()).min(1)]),
  logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  echo: z.boolean().nullish(),
  suffix: z.string().nullish(),
  best_of: z.number().int().nullish(),
});

export type CompletionRequest = z.infer<typeof completionRequestSchema>;

/** POST /v1/logprobs: a prompt (text or messages) and the candidates to score under both models. */
export const logprobsRequestSchema = z.object({
  model: z.string().optional(),
  prompt: z.string().optional(),
  messages: z.array(messageSchema).min(1).optional(),
  candidates: z.array(z.string()).min(1).max(MAX_CANDIDATES),
  rewards: z.array(z.number()).nullish(),
  beta: z.number().gt(0).max(MAX_BETA).nullish(),
  alpha: z.number().min(0).max(MAX_ALPHA).nullish(),
  /** Variables for the chat template, as in chat completions: the prompt and candidates are rendered with them. */
  chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
});

export type LogprobsRequest = z.infer<typeof logprobsRequestSchema>;
