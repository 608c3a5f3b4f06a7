/**
 * LoRA as PEFT defines it: a frozen linear layer W gets a trainable low-rank update,
 * `y = W x + (alpha / r) · B A dropout(x)`, with A `[r, in]` (kaiming-uniform) and B `[out, r]` (zero), so
 * training starts from the base model. Dropout acts on the LoRA input path only.
 *
 * Modules are named as PEFT names them: a target such as `q_proj` matches every module whose path is
 * `q_proj` or ends with `.q_proj`; `"all-linear"` takes every linear layer except the LM head. Adapter
 * tensors are named as PEFT saves them: `base_model.model.<module path>.lora_A.weight`, where the module
 * path is the one in the `…ForCausalLM` model (GPT-2: `transformer.h.0.attn.c_attn`).
 * @module
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import { mulberry32 } from "../data/random.ts";
import type { ModelConfig } from "./config.ts";
import { familyOf } from "./families/registry.ts";
import { type Ctx, dropout, keyedKeep, type LinearHook } from "./layers.ts";
import type { FloatDType, HostWeight } from "./weights.ts";

/** A LoRA configuration (PEFT's `LoraConfig` fields that change the model). */
export type LoraConfig = {
  /** Rank. */
  r: number;
  /** Scaling numerator (`lora_alpha`): the update is scaled by alpha / r (alpha / √r with rsLoRA). */
  alpha: number;
  /** Dropout on the LoRA input path, during training. Default 0. */
  dropout?: number;
  /** PEFT module names (`q_proj`, `c_attn`, …) or "all-linear". */
  targetModules: readonly string[] | "all-linear";
  /** rsLoRA scaling (alpha / √r). Default false. */
  useRslora?: boolean;
};

/** One linear layer of a model, as LoRA and the graph see it. */
export type LinearModule = {
  /** Canonical module path: the weight is `${path}.weight` in a {@link WeightMap}. */
  path: string;
  /** The module path PEFT uses (inside the `…ForCausalLM` model). */
  peftPath: string;
  inFeatures: number;
  outFeatures: number;
  /** `linear`: weight `[out, in]`; `conv1d` (GPT-2): weight `[in, out]` (PEFT's fan_in_fan_out). */
  layout: "linear" | "conv1d";
  bias: boolean;
};

/** An adapted module with its adapter tensor names. */
export type LoraModule = LinearModule & { names: { a: string; b: string } };

/**
 * Every linear layer of the decoder layers, in module order (the LM head is never adapted): the 2-D
 * weights of the family's tensor list inside the layers (norms are 1-D, embeddings sit outside), laid out
 * and named for PEFT as the family's file says.
 */
export function linearModules(cfg: ModelConfig): LinearModule[] {
  const fam = familyOf(cfg);
  const tensors = fam.tensors(cfg);
  const names = new Set(tensors.map((t) => t.name));
  const inLayer = (name: string) => {
    const rest = name.startsWith(`${fam.layers}.`) ? name.slice(fam.layers.length + 1) : null;
    return rest !== null && /^\d+\./.test(rest);
  };
  const out: LinearModule[] = [];
  for (const { name, shape } of tensors) {
    if (shape.length !== 2 || !inLayer(name) || !name.endsWith(".weight")) continue;
    const path = name.slice(0, -".weight".length);
    const [inFeatures, outFeatures] = fam.layout === "conv1d" ? shape : [shape[1], shape[0]];
    out.push({
      path,
      peftPath: fam.prefix + path,
      inFeatures,
      outFeatures,
      layout: fam.layout,
      bias: names.has(`${path}.bias`),
    });
  }
  return out;
}

/** Checks a LoRA config and fills its defaults. */
export function normalizeLoraConfig(c: LoraConfig): Required<LoraConfig> {
  if (!Number.isInteger(c.r) || c.r < 1) {
    throw new RangeError(`LoRA rank r must be a positive integer, got ${c.r}`);
  }
  if (!(Number.isFinite(c.alpha) && c.alpha > 0)) {
    throw new RangeError(`lora_alpha must be positive, got ${c.alpha}`);
  }
  const dropout = c.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`lora_dropout must be in [0, 1), got ${dropout}`);
  const t = c.targetModules;
  if (t !== "all-linear" && (!Array.isArray(t) || t.length === 0)) {
    throw new RangeError(`target_modules must be a non-empty list of module names or "all-linear"`);
  }
  return {
    r: c.r,
    alpha: c.alpha,
    dropout,
    targetModules: t === "all-linear" ? t : [...t],
    useRslora: c.useRslora ?? false,
  };
}

/** The factor applied to B·A·x. */
export function loraScaling(c: LoraConfig): number {
  return c.useRslora ? c.alpha / Math.sqrt(c.r) : c.alpha / c.r;
}

/** PEFT's adapter tensor names of a module. */
export function peftTensorNames(peftPath: string): { a: string; b: string } {
  return {
    a: `base_model.model.${peftPath}.lora_A.weight`,
    b: `base_model.model.${peftPath}.lora_B.weight`,
  };
}

/** The modules a LoRA config adapts, in module order. Throws when a target matches nothing (as PEFT). */
export function loraModules(cfg: ModelConfig, lora: LoraConfig): LoraModule[] {
  const all = linearModules(cfg);
  const targets = lora.targetModules;
  if (targets === "all-linear") return all.map((m) => ({ ...m, names: peftTensorNames(m.peftPath) }));
  const matches = (m: LinearModule, t: string) => m.peftPath === t || m.peftPath.endsWith(`.${t}`);
  const unmatched = targets.filter((t) => !all.some((m) => matches(m, t)));
  if (unmatched.length) {
    const names = [...new Set(all.map((m) => m.path.split(".").at(-1)))].join(", ");
    throw new Error(
      `LoRA target modules ${unmatched.map((t) => `"${t}"`).join(", ")} not found in the ${cfg.modelType} ` +
        `model (its linear layers: ${names})`,
    );
  }
  return all.filter((m) => targets.some((t) => matches(m, t))).map((m) => ({
    ...m,
    names: peftTensorNames(m.peftPath),
  }));
}

/**
 * Initial adapter tensors: A ~ U(−1/√in, 1/√in) (PEFT's `kaiming_uniform_(a=√5)`), B = 0. Seeded and
 * deterministic (mulberry32, modules in order, A row-major).
 */
export function initLoraTensors(cfg: ModelConfig, lora: LoraConfig, seed = 0): Map<string, HostWeight> {
  const rng = mulberry32(seed);
  const out = new Map<string, HostWeight>();
  for (const m of loraModules(cfg, lora)) {
    const bound = 1 / Math.sqrt(m.inFeatures);
    const a = new Float32Array(lora.r * m.inFeatures);
    for (let i = 0; i < a.length; i++) a[i] = (rng() * 2 - 1) * bound;
    out.set(m.names.a, { shape: [lora.r, m.inFeatures], data: a });
    out.set(m.names.b, { shape: [m.outFeatures, lora.r], data: new Float32Array(m.outFeatures * lora.r) });
  }
  return out;
}

/** One module's adapter inside a graph. */
export type LoraAdapter = { a: Value; b: Value };

/** Adapters as the decoder applies them: by canonical module path. */
export type LoraRuntime = {
  adapters: Map<string, LoraAdapter>;
  scaling: number;
  dropout: number;
  /** Apply dropout (training graphs). */
  train: boolean;
  /**
   * A scalar that keys the dropout masks (a different value every optimizer step). With it, a mask is a
   * pure function of (key, module, element), so a resumed run draws exactly the masks an uninterrupted one
   * would; without it the masks come from ONNX Runtime's random generator, seeded per session.
   */
  dropoutKey?: Value;
  /** Per-row ids of the keyed masks (layers.ts' `dropoutRowIds`), set by the decoder from the batch. */
  dropoutRows?: Value;
  /**
   * Keyed dropout masks are drawn again in a backward pass built per segment rather than kept (see
   * layers.ts' `keyedKeep`): for graphs whose layers' backward passes are segments (save, recompute).
   */
  recompute?: boolean;
};

/**
 * Binds a LoRA config to graph values: `tensors` maps PEFT tensor names to values (trainable parameters
 * as `buildTrainingGraph` hands them over, graph inputs, or initializers).
 */
export function loraRuntime(
  cfg: ModelConfig,
  lora: LoraConfig,
  tensors: Record<string, Value>,
  opts: { train?: boolean; dropoutKey?: Value; recompute?: boolean } = {},
): LoraRuntime {
  const c = normalizeLoraConfig(lora);
  const adapters = new Map<string, LoraAdapter>();
  for (const m of loraModules(cfg, c)) {
    const a = tensors[m.names.a], b = tensors[m.names.b];
    if (!a || !b) {
      throw new Error(`LoRA tensors of ${m.peftPath} are missing (${!a ? m.names.a : m.names.b})`);
    }
    adapters.set(m.path, { a, b });
  }
  return {
    adapters,
    scaling: loraScaling(c),
    dropout: c.dropout,
    train: opts.train ?? false,
    dropoutKey: opts.dropoutKey,
    recompute: opts.recompute,
  };
}

/** A stable per-module dropout seed, so a graph built twice draws the same masks. */
function seedOf(path: string): number {
  let h = 2166136261;
  for (let i = 0; i < path.length; i++) h = Math.imul(h ^ path.charCodeAt(i), 16777619);
  return (h >>> 1) % 1_000_000_007;
}

/**
 * The hook layers.ts' `linear` calls (`Ctx.adapt`): for an adapted module, `y` plus the LoRA update
 * `scaling · dropout(x) A^T B^T` in the context's dtype; `y` itself for the others.
 */
export function loraHook(lora: LoraRuntime): LinearHook {
  return (ctx: Ctx, path: string, x: Value, y: Value): Value => {
    const ad = lora.adapters.get(path);
    if (!ad) return y;
    return op.add(y, loraUpdate(ctx.g, ctx.dtype, lora, ad, path, x));
  };
}

function loraUpdate(
  g: GraphBuilder,
  dtype: FloatDType,
  lora: LoraRuntime,
  ad: LoraAdapter,
  path: string,
  x: Value,
): Value {
  const dropping = lora.train && lora.dropout > 0;
  // keyed dropout's 1/(1 − p) rides on the adapter's scaling: one pass over x fewer, forward and backward
  const xin = !dropping
    ? x
    : lora.dropoutKey
    ? keyedDrop(g, x, lora, seedOf(path))
    : dropout(x, lora.dropout, seedOf(path));
  const alpha = dropping && lora.dropoutKey ? lora.scaling / (1 - lora.dropout) : lora.scaling;
  const down = op.gemm(xin, op.cast(ad.a, dtype), null, { transB: true });
  return op.gemm(down, op.cast(ad.b, dtype), null, { transB: true, alpha });
}

/** `x` where the keyed mask keeps it, else 0 (the adapter's scaling carries 1/(1 − p)). */
function keyedDrop(g: GraphBuilder, x: Value, lora: LoraRuntime, seed: number): Value {
  const y = op.where(
    keyedKeep(x, lora.dropout, lora.dropoutKey!, seed, lora.recompute, lora.dropoutRows),
    x,
    0,
  );
  return lora.recompute ? g.remat(y) : y;
}
