/**
 * The sampling flags `deno task sample` and `deno task eval` share, parsed into settings the same way for
 * both: numbers read by `numberFlag`, then range-checked by {@link checkSettings}.
 * @module
 */
import { numberFlag } from "../cli.ts";
import { checkSettings, type SampleSettingsInput } from "./sample.ts";

/** The shared sampling flags, for `node:util` parseArgs. */
export const SAMPLING_FLAGS = {
  k: { type: "string" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  "max-new-tokens": { type: "string" },
  "max-prompt-length": { type: "string" },
  seed: { type: "string" },
} as const;

/** The flags' values as settings; throws a `SampleOptionError` naming the first one out of range. */
export function samplingSettingsFrom(
  v: Partial<Record<keyof typeof SAMPLING_FLAGS, string>>,
): SampleSettingsInput {
  const s: SampleSettingsInput = {
    k: numberFlag("k", v.k),
    temperature: numberFlag("temperature", v.temperature),
    topP: numberFlag("top-p", v["top-p"]),
    topK: numberFlag("top-k", v["top-k"]),
    maxNewTokens: numberFlag("max-new-tokens", v["max-new-tokens"]),
    maxPromptLength: numberFlag("max-prompt-length", v["max-prompt-length"]),
    seed: numberFlag("seed", v.seed),
  };
  checkSettings(s);
  return s;
}
