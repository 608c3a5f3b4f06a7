/**
 * The messages between the HTTP thread and the model worker (worker.ts). Only token ids and numbers cross:
 * the tokenizer lives on the HTTP thread (transformers.js does not load in a Deno Worker), the ONNX sessions
 * live in the worker (their `run` blocks the thread it is called on).
 * @module
 */
import type { Device } from "../runtime/tensor.ts";

/** Which model scores a sequence. */
export type ScoringModel = "policy" | "reference";

/** Sent once after the worker starts. */
export type LoadRequest = {
  type: "load";
  /** The exported policy folder (`onnx/model.onnx` for generation, `model.safetensors` for scoring). */
  policyDir: string;
  /** The reference model's Hugging Face folder, or null when the server has none. */
  referenceDir: string | null;
  device: Device;
  /** ONNX Runtime intra-op threads per session. */
  threads: number;
  /**
   * Where the scoring graphs go, with links to the weight files they read (see
   * lib/runtime/graph_folder.ts); the engine removes it when it closes.
   */
  graphDir: string;
};

/** Generation of `prompts.length` rows (the `n` choices of a request, or several prompts). */
export type GenerateRequest = {
  type: "generate";
  id: number;
  /** One prompt per row. */
  prompts: number[][];
  maxNewTokens: number;
  /** Token ids that end a row; empty when the client asked to ignore EOS. */
  eosTokenIds: number[];
  temperature: number;
  topP: number;
  /** Keep the k most likely tokens (0: all). */
  topK: number;
  /** Repetition penalty over each row's prompt and output (1: none). */
  repetitionPenalty: number;
  /** One seed per row (each row samples from its own generator, so rows never perturb each other). */
  seeds: (number | undefined)[];
  /** Alternatives to report per token (0: none). */
  topLogprobs: number;
  padTokenId: number;
};

/** Ends one row at its next step (a stop string was found on the HTTP thread). */
export type StopRowRequest = { type: "stop-row"; id: number; row: number };

/**
 * Ends every row of a job at its next step (the client went away); the worker answers with the rows'
 * "row-done" (finish "abort") and the job's "done", after which the job holds no slot.
 */
export type AbortRequest = { type: "abort"; id: number };

/** Per-token log-probs of candidate responses after one prompt. */
export type ScoreRequest = {
  type: "score";
  id: number;
  model: ScoringModel;
  promptIds: number[];
  /** Each candidate's tokens, EOS included. */
  responseIds: number[][];
  padTokenId: number;
};

/** Everything the HTTP thread sends. */
export type ToWorker = LoadRequest | GenerateRequest | StopRowRequest | AbortRequest | ScoreRequest;

/** The worker is ready to generate. */
export type Loaded = { type: "loaded"; generationMs: number };

/** Loading failed; the server cannot start. */
export type LoadFailed = { type: "load-failed"; message: string };

/** One generated token of one row. */
export type TokenEvent = {
  type: "token";
  id: number;
  row: number;
  token: number;
  logprob: number;
  /** The alternatives as `[token, logprob]` pairs, most likely first (when asked for). */
  top?: [number, number][];
};

/** How a row ended, in the generator's words ("stop": ended by a stop-row request). */
export type RowFinish = "eos" | "length" | "stop" | "abort";

/** A row is finished; its tokens were all sent before this. */
export type RowDone = { type: "row-done"; id: number; row: number; finishReason: RowFinish };

/** Every row of a job is finished. */
export type JobDone = { type: "done"; id: number };

/** Scores of each candidate: per-token log-probs (EOS included) and their sums as the graph computed them. */
export type Scored = { type: "scored"; id: number; tokenLogprobs: number[][]; sums: number[] };

/** A job failed. */
export type JobFailed = { type: "failed"; id: number; message: string };

/** Everything the worker sends. */
export type FromWorker = Loaded | LoadFailed | TokenEvent | RowDone | JobDone | Scored | JobFailed;
