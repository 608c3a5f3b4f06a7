/**
 * What every route needs, built once by server.ts and handed to the route factories: the model (its source,
 * tokenizer, engine), the admission queue and the resolved limits. Tests build one around a real or fake
 * engine and drive the app with `app.request()`.
 * @module
 */
import type { TextCodec } from "./codec.ts";
import type { Engine } from "./engine.ts";
import type { ModelSource } from "./model_source.ts";
import type { AdmissionQueue } from "./queue.ts";

/** Limits with every default filled in from the model. */
export type ResolvedLimits = {
  maxBodyBytes: number;
  maxPromptTokens: number;
  maxTokensLimit: number;
};

/** The served model and the machinery around it. */
export type ServeContext = {
  source: ModelSource;
  codec: TextCodec;
  engine: Engine;
  queue: AdmissionQueue;
  limits: ResolvedLimits;
  /** Prompt + completion tokens the model supports (its position table, or sliding window). */
  contextLength: number;
  /** When the model was loaded (Unix seconds): `created` of /v1/models. */
  createdAt: number;
  /** Access log and notices (silent in tests). */
  log: (line: string) => void;
};
