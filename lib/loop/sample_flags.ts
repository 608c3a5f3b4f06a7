/**
 * The sampling flags `deno task sample` and `deno task eval` share, as one option table read by lib/cli's
 * engine for both, with the ranges {@link checkSettings} holds them to (so every bad value is listed at
 * once); each entry gives them its own help and defaults (`respec`).
 * @module
 */
import type { OptionSpec } from "../cli/spec.ts";
import { parseTemplateKwargs } from "../data/chat.ts";
import { checkSettings, SAMPLE_DEFAULTS, type SampleSettingsInput } from "./sample_settings.ts";

/** The values of the sampling flags: the settings a sampling run takes, only those given. */
export type SamplingFlags = Pick<
  SampleSettingsInput,
  "k" | "temperature" | "topP" | "topK" | "maxNewTokens" | "maxPromptLength" | "seed" | "templateKwargs"
>;

/** The `--help` section the sampling flags are listed in. */
export const SAMPLING_GROUP = "Sampling";

/** The shared sampling flags, with `deno task sample`'s help and defaults. */
export const SAMPLING_SPECS: readonly OptionSpec<SamplingFlags>[] = Object.freeze(
  [
    {
      key: "k",
      flag: "k",
      kind: "int",
      group: SAMPLING_GROUP,
      min: 1,
      arg: "n",
      defaultText: String(SAMPLE_DEFAULTS.k),
      help: "responses per prompt",
    },
    {
      key: "temperature",
      flag: "temperature",
      kind: "number",
      group: SAMPLING_GROUP,
      min: 0,
      arg: "t",
      defaultText: "generation_config.json's, else 1",
      help: "0: greedy",
    },
    {
      key: "topP",
      flag: "top-p",
      kind: "number",
      group: SAMPLING_GROUP,
      check: (v) => (v > 0 && v <= 1 ? undefined : "must be in (0, 1]"),
      arg: "p",
      defaultText: "generation_config.json's, else 1 (off)",
      help: "nucleus sampling: the smallest set of tokens whose probability reaches p",
    },
    {
      key: "topK",
      flag: "top-k",
      kind: "int",
      group: SAMPLING_GROUP,
      min: 0,
      arg: "n",
      defaultText: "generation_config.json's, else 0 (off)",
      help: "sample from the n most likely tokens; 0: off",
    },
    {
      key: "maxNewTokens",
      flag: "max-new-tokens",
      kind: "int",
      group: SAMPLING_GROUP,
      min: 1,
      arg: "n",
      defaultText: String(SAMPLE_DEFAULTS.maxNewTokens),
      help: "longest response in tokens",
    },
    {
      key: "maxPromptLength",
      flag: "max-prompt-length",
      kind: "int",
      group: SAMPLING_GROUP,
      min: 1,
      arg: "n",
      defaultText: "no cut",
      help: "cut longer prompts from their start, as training does",
    },
    {
      key: "templateKwargs",
      flag: "chat-template-kwargs",
      kind: "json",
      group: SAMPLING_GROUP,
      parse: (raw, flag) => parseTemplateKwargs(raw, flag),
      arg: "json",
      defaultText: "none",
      help: `variables for the chat template, a JSON object, e.g. '{"enable_thinking": false}' for Qwen3; ` +
        "give train the same, so that it scores what was sampled",
    },
    {
      key: "seed",
      flag: "seed",
      kind: "int",
      group: SAMPLING_GROUP,
      min: 0,
      arg: "s",
      defaultText: String(SAMPLE_DEFAULTS.seed),
      help:
        "sample j of a prompt draws from its own seed of (s, id, j), so batch size, sharding and resuming " +
        "do not change the output",
    },
  ] satisfies OptionSpec<SamplingFlags>[],
);

/**
 * The sampling flags' values as settings, only those given: a flag left out has no key at all, so that
 * spreading the result over defaults (`{ temperature: 1, ...settings }`) keeps them — an `undefined` there
 * would replace eval's temperature 1 with the model's generation_config.json. Throws a `SampleOptionError`
 * naming the first one out of range (values read through {@link SAMPLING_SPECS} are in range already).
 */
export function samplingSettingsFrom(v: Partial<SamplingFlags>): SampleSettingsInput {
  const keys = SAMPLING_SPECS.map((s) => s.key);
  const s = Object.fromEntries(
    keys.filter((k) => v[k] !== undefined).map((k) => [k, v[k]]),
  ) as SampleSettingsInput;
  checkSettings(s);
  return s;
}
