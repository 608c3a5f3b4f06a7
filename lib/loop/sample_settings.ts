/**
 * How responses are sampled (`deno task sample`, `eval`): the settings that change what is written, their
 * defaults and checks, each sample's seed, and shards (`--shard i/n`).
 * @module
 */
import { parseTemplateKwargs } from "../data/chat.ts";
import type { ModelInfo } from "../model/open.ts";
import type { PromptId } from "./prompts.ts";

/** How responses are sampled: everything that changes what is written. */
export type SampleSettings = {
  /** Responses per prompt. */
  k: number;
  seed: number;
  /** 0: greedy (the K responses are then the same). */
  temperature: number;
  /** Nucleus mass, (0, 1]; 1: off. */
  topP: number;
  /** 0: off. */
  topK: number;
  /** transformers' repetition penalty; 1: off. */
  repetitionPenalty: number;
  maxNewTokens: number;
  /** Longer prompts keep their last tokens (as training cuts them); null: no limit but the model's. */
  maxPromptLength: number | null;
  /**
   * Variables for the chat template (`--chat-template-kwargs`, e.g. `{ enable_thinking: false }` for Qwen3),
   * as training renders the prompts with them; absent: none.
   */
  templateKwargs?: Record<string, unknown>;
};

/** What a caller may set; the rest comes from the model's generation_config.json, then the defaults. */
export type SampleSettingsInput = Partial<SampleSettings>;

/** Defaults where neither the caller nor generation_config.json says. */
export const SAMPLE_DEFAULTS = {
  k: 4,
  seed: 0,
  temperature: 1,
  topP: 1,
  topK: 0,
  repetitionPenalty: 1,
  maxNewTokens: 256,
  batch: 32,
} as const;

/** A wrong setting: the CLI shows it with its usage, and exits 2. */
export class SampleOptionError extends Error {
  override name = "SampleOptionError";
}

/** The settings of a run: the caller's, else the model's generation_config.json, else {@link SAMPLE_DEFAULTS}. */
export function resolveSettings(input: SampleSettingsInput, model: Pick<ModelInfo, "generationDefaults">) {
  const gen = model.generationDefaults;
  const s: SampleSettings = {
    k: input.k ?? SAMPLE_DEFAULTS.k,
    seed: input.seed ?? SAMPLE_DEFAULTS.seed,
    temperature: input.temperature ?? gen.temperature ?? SAMPLE_DEFAULTS.temperature,
    topP: input.topP ?? gen.topP ?? SAMPLE_DEFAULTS.topP,
    topK: input.topK ?? gen.topK ?? SAMPLE_DEFAULTS.topK,
    repetitionPenalty: input.repetitionPenalty ?? gen.repetitionPenalty ?? SAMPLE_DEFAULTS.repetitionPenalty,
    maxNewTokens: input.maxNewTokens ?? SAMPLE_DEFAULTS.maxNewTokens,
    maxPromptLength: input.maxPromptLength ?? null,
    ...(input.templateKwargs ? { templateKwargs: input.templateKwargs } : {}),
  };
  checkSettings(s);
  return s;
}

/** Throws a {@link SampleOptionError} naming the first setting out of range. */
export function checkSettings(s: SampleSettingsInput): void {
  const bad = (flag: string, want: string, v: unknown) => {
    throw new SampleOptionError(`--${flag} must be ${want}, got ${v}`);
  };
  const int = (v: number | undefined | null, min: number) =>
    v === undefined || v === null || (Number.isSafeInteger(v) && v >= min);
  if (!int(s.k, 1)) bad("k", "a whole number ≥ 1", s.k);
  if (!int(s.seed, 0)) bad("seed", "a whole number ≥ 0", s.seed);
  if (s.temperature !== undefined && !(s.temperature >= 0 && Number.isFinite(s.temperature))) {
    bad("temperature", "≥ 0", s.temperature);
  }
  if (s.topP !== undefined && !(s.topP > 0 && s.topP <= 1)) bad("top-p", "in (0, 1]", s.topP);
  if (!int(s.topK, 0)) bad("top-k", "a whole number ≥ 0 (0: off)", s.topK);
  if (
    s.repetitionPenalty !== undefined && !(s.repetitionPenalty > 0 && Number.isFinite(s.repetitionPenalty))
  ) {
    bad("repetition-penalty", "> 0", s.repetitionPenalty);
  }
  if (!int(s.maxNewTokens, 1)) bad("max-new-tokens", "a whole number ≥ 1", s.maxNewTokens);
  if (!int(s.maxPromptLength, 1)) bad("max-prompt-length", "a whole number ≥ 1", s.maxPromptLength);
  if (s.templateKwargs !== undefined) {
    try {
      parseTemplateKwargs(s.templateKwargs);
    } catch (e) {
      throw new SampleOptionError((e as Error).message);
    }
  }
}

/** `--chat-template-kwargs` text as settings: a JSON object, else a {@link SampleOptionError}. */
export function templateKwargsFlag(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  try {
    return parseTemplateKwargs(text);
  } catch (e) {
    throw new SampleOptionError((e as Error).message);
  }
}

/**
 * The seed of sample `j` of the prompt with id `id` (its index when the row has none): a 32-bit hash of the
 * three, so each sample has its own generator whatever shares its batch, shard or run.
 */
export function sampleSeed(seed: number, id: PromptId, j: number): number {
  const text = `${seed}\u001f${JSON.stringify(id)}\u001f${j}`;
  // FNV-1a over the UTF-16 code units, then murmur3's finalizer to spread the bits
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A share of the prompts: those whose index is `index` modulo `count`. */
export type Shard = { index: number; count: number };

/** Parses `--shard i/n` (0-based i). */
export function parseShard(s: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(s);
  const index = Number(m?.[1]), count = Number(m?.[2]);
  if (!m || !Number.isSafeInteger(count) || count < 1 || index >= count) {
    throw new SampleOptionError(
      `--shard must be i/n with n ≥ 1 and 0 ≤ i < n (0-based: --shard 0/4 … 3/4), got "${s}"`,
    );
  }
  return { index, count };
}

/** How many of `total` prompts shard `shard` has. */
export function shardSize(total: number, shard: Shard): number {
  return Math.max(0, Math.ceil((total - shard.index) / shard.count));
}
