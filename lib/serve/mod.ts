/**
 * Serving an aligned model: an OpenAI-compatible API (chat, completions, streaming, log-probs), the
 * log-prob inspection endpoint that shows implicit rewards and how InfoNCA, NCA and DPO see a set of
 * candidates, and a dashboard of the run's training curves.
 * @module
 */
export { type RunningServer, type StartOptions, startServer } from "./server.ts";
export { createApp } from "./app.ts";
export type { ServeContext } from "./context.ts";
export {
  DEFAULT_LIMITS,
  parseServeArgs,
  SERVE_USAGE,
  type ServeLimits,
  type ServeOptions,
} from "./options.ts";
export { type ModelSource, resolveModelSource } from "./model_source.ts";
export { type ObjectivesView, objectivesView } from "./inspect.ts";
export { AdmissionQueue, QueueFullError } from "./queue.ts";
export { ApiError } from "./errors.ts";
