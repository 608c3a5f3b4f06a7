/**
 * Rotary position embeddings as transformers configures them: the rope scaling types the toolkit
 * implements, their checks, and the inverse frequencies and attention factor a family's rotary tables
 * are built from. Every type here is a fixed rescaling of the inverse frequencies (and, for `longrope`,
 * of cos/sin), so a graph bakes it in as constants.
 * @module
 */

/** Rope scaling types that {@link ropeInverseFrequencies} implements. */
export const SUPPORTED_ROPE_TYPES = ["default", "linear", "llama3", "longrope"] as const;
/** A supported rope scaling type. */
export type RopeType = typeof SUPPORTED_ROPE_TYPES[number];

/** What the rotary tables of a layer depend on. */
export type RopeSettings = {
  /** Per-head dimension. */
  headDim: number;
  /** Rotated dimensions (the first ones of each head): `headDim` unless the rotation is partial (Phi-3). */
  rotaryDim?: number;
  ropeTheta: number;
  /** The raw rope scaling object (null for none). */
  ropeScaling: Record<string, unknown> | null;
  /** `max_position_embeddings`, for longrope's attention factor. */
  maxPositions?: number;
};

/** The type of a rope scaling object (`rope_type`, or the legacy `type`); null means none. */
export function ropeScalingType(scaling: Record<string, unknown> | null): string {
  if (scaling === null) return "default";
  const t = scaling.rope_type ?? scaling.type ?? "default";
  return typeof t === "string" ? t : String(t);
}

/**
 * Checks a rope scaling object, calling `fail` with a message naming `key` for an unsupported type or a
 * missing/invalid parameter. `rotaryDim` is needed for longrope's factor lists (length rotaryDim / 2).
 */
export function checkRopeScaling(
  scaling: Record<string, unknown>,
  key: string,
  fail: (msg: string) => never,
  rotaryDim?: number,
): void {
  const type = ropeScalingType(scaling);
  if (!(SUPPORTED_ROPE_TYPES as readonly string[]).includes(type)) {
    fail(
      `${key} type "${type}" is not supported (supported: null, ${
        SUPPORTED_ROPE_TYPES.map((t) => `"${t}"`).join(", ")
      })`,
    );
  }
  const num = (k: string) => {
    const v = scaling[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      fail(`${key}.${k} must be a positive number for rope type "${type}", got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  if (type === "linear") num("factor");
  if (type === "llama3") {
    num("factor");
    num("original_max_position_embeddings");
    const low = num("low_freq_factor");
    const high = num("high_freq_factor");
    if (high <= low) fail(`${key}.high_freq_factor (${high}) must exceed low_freq_factor (${low})`);
  }
  if (type === "longrope") {
    for (const k of ["short_factor", "long_factor"]) {
      const v = scaling[k];
      const ok = Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isFinite(x) && x > 0);
      if (!ok) fail(`${key}.${k} must be a list of positive numbers for rope type "longrope"`);
      if (rotaryDim !== undefined && (v as number[]).length !== rotaryDim / 2) {
        fail(
          `${key}.${k} has ${(v as number[]).length} entries, the rotary dimension ${rotaryDim} needs ${
            rotaryDim / 2
          }`,
        );
      }
    }
    if (scaling.attention_factor !== undefined && scaling.attention_factor !== null) num("attention_factor");
    num("original_max_position_embeddings");
  }
}

/**
 * Llama 3 frequency remapping (transformers' `_compute_llama3_parameters`): wavelengths shorter than
 * `original / high_freq_factor` keep their frequency, those longer than `original / low_freq_factor` are
 * slowed by `factor`, and the band between is interpolated smoothly.
 */
export function llama3ScaleInverseFrequencies(
  invFreq: Float64Array,
  params: {
    factor: number;
    low_freq_factor: number;
    high_freq_factor: number;
    original_max_position_embeddings: number;
  },
): Float64Array {
  const { factor, low_freq_factor: low, high_freq_factor: high } = params;
  const oldContext = params.original_max_position_embeddings;
  const lowFreqWavelen = oldContext / low;
  const highFreqWavelen = oldContext / high;
  const out = new Float64Array(invFreq.length);
  for (let i = 0; i < invFreq.length; i++) {
    const f = invFreq[i];
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) out[i] = f;
    else if (wavelen > lowFreqWavelen) out[i] = f / factor;
    else {
      const smooth = (oldContext / wavelen - low) / (high - low);
      out[i] = (1 - smooth) * (f / factor) + smooth * f;
    }
  }
  return out;
}

/**
 * Rotary inverse frequencies `1 / theta^(2i/d)` for i < d/2 (d = the rotary dimension), with the
 * scaling applied. Longrope divides by its `short_factor`: the toolkit models sequences up to
 * `original_max_position_embeddings`, where transformers uses that list (see `maxSupportedLength`).
 * Computed in float64 (transformers uses fp32), so the graph builder decides the final precision.
 */
export function ropeInverseFrequencies(cfg: RopeSettings): Float64Array {
  const dim = cfg.rotaryDim ?? cfg.headDim;
  if (dim % 2 !== 0) throw new Error(`rotary embeddings need an even dimension, got ${dim}`);
  const inv = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = 1 / cfg.ropeTheta ** ((2 * i) / dim);
  const type = ropeScalingType(cfg.ropeScaling);
  const s = cfg.ropeScaling ?? {};
  switch (type) {
    case "default":
      return inv;
    case "linear":
      return inv.map((f) => f / (s.factor as number));
    case "llama3":
      return llama3ScaleInverseFrequencies(inv, s as Parameters<typeof llama3ScaleInverseFrequencies>[1]);
    case "longrope": {
      const short = s.short_factor as number[];
      return inv.map((f, i) => f / short[i]);
    }
    default:
      throw new Error(
        `rope scaling type "${type}" is not supported (supported: ${SUPPORTED_ROPE_TYPES.join(", ")})`,
      );
  }
}

/**
 * The factor cos and sin are multiplied by: 1, except for longrope, where it is `attention_factor` or,
 * when absent, `√(1 + ln(s) / ln(original))` with s = max_position_embeddings / original (1 when s ≤ 1),
 * as transformers' `_compute_longrope_parameters` sets it.
 */
export function ropeAttentionFactor(cfg: RopeSettings): number {
  if (ropeScalingType(cfg.ropeScaling) !== "longrope") return 1;
  const s = cfg.ropeScaling!;
  if (typeof s.attention_factor === "number") return s.attention_factor;
  const original = s.original_max_position_embeddings as number;
  const factor = (cfg.maxPositions ?? original) / original;
  return factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original));
}

/** The longest sequence the scaling is exact for: longrope switches lists past its original length. */
export function ropeSupportedLength(cfg: RopeSettings): number {
  if (ropeScalingType(cfg.ropeScaling) !== "longrope") return Infinity;
  return cfg.ropeScaling!.original_max_position_embeddings as number;
}
