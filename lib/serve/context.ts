/**
 * What every route needs, built once by server.ts and handed to the route factories: the model (its source,
 * tokenizer, engine), the admission queue, the resolved limits, who may call (API key, Host names) and how
 * paths are shown. Tests build one around a real or fake engine and drive the app with `app.request()`.
 * @module
 */
import type { TextCodec } from "../data/codec.ts";
import type { Engine } from "./engine.ts";
import type { HostPolicy } from "./middleware/host_check.ts";
import type { ModelSource } from "./model_source.ts";
import type { PathView } from "./paths.ts";
import type { AdmissionQueue } from "./queue.ts";
import type { SamplingDefaults } from "../model/sampling.ts";
import type { PromptTokenizer } from "./tokens.ts";

/** Limits with every default filled in from the model. */
export type ResolvedLimits = {
  maxBodyBytes: number;
  bodyTimeoutMs: number;
  maxPromptTokens: number;
  /** Characters per prompt or candidate, checked before tokenizing. */
  maxPromptChars: number;
  maxTokensLimit: number;
};

/** The served model and the machinery around it. */
export type ServeContext = {
  source: ModelSource;
  /** The tokenizer on the HTTP thread: decoding generated tokens. */
  codec: TextCodec;
  /** Tokenizing request text (off the HTTP thread). */
  tokens: PromptTokenizer;
  engine: Engine;
  queue: AdmissionQueue;
  limits: ResolvedLimits;
  /** Prompt + completion tokens the model supports (its position table, or sliding window). */
  contextLength: number;
  /** When the model was loaded (Unix seconds): `created` of /v1/models. */
  createdAt: number;
  /** Access log and notices (silent in tests). */
  log: (line: string) => void;
  /** The model's sampling defaults (its generation_config.json), for requests that do not set them. */
  defaults?: SamplingDefaults;
  /** Aborted when the server starts shutting down: new work and bodies still arriving get 503. */
  shutdown: AbortSignal;
  /** `--api-key`, or null when the API is open. */
  apiKey: string | null;
  /** The Host names the server answers. */
  hosts: HostPolicy;
  /** How folders appear in responses. */
  paths: PathView;
};
