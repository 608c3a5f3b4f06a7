/**
 * LoRA adapters on disk as PEFT saves and loads them, and merged into the base weights for export.
 *
 * A PEFT adapter folder holds `adapter_model.safetensors` (tensors `base_model.model.<module>.lora_A.weight`
 * `[r, in]` and `…lora_B.weight` `[out, r]`) and `adapter_config.json` (`peft_type` "LORA", `r`,
 * `lora_alpha`, `lora_dropout`, `target_modules`, `bias` "none", `task_type` "CAUSAL_LM", `fan_in_fan_out`
 * — true for GPT-2's Conv1D — and `base_model_name_or_path`). `PeftModel.from_pretrained(base, folder)`
 * loads what {@link saveAdapter} writes; {@link loadAdapter} reads PEFT's own folders.
 * @module
 */
import { join } from "node:path";
import type { ModelConfig } from "./config.ts";
import { familyOf } from "./families/registry.ts";
import { linearModules, type LoraConfig, loraModules, loraScaling, normalizeLoraConfig } from "./lora.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { f16BitsToF32, f32ToF16Bits, type OutputDtype } from "./float_codec.ts";
import type { HostWeight, WeightMap } from "./weights.ts";
import { writeJsonAtomic } from "../files.ts";

/** File names of a PEFT adapter folder. */
export const ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors";
export const ADAPTER_CONFIG_NAME = "adapter_config.json";

/** Adapter tensors by PEFT name: values, or host tensors with shapes. */
export type AdapterTensors = Map<string, HostWeight> | Record<string, Float32Array | HostWeight>;

/** Options for {@link saveAdapter}. */
export type SaveAdapterOptions = {
  /** Written as `base_model_name_or_path` (a Hub id or the base model's folder). */
  baseModelNameOrPath?: string | null;
  /** Tensor dtype in the file; default float32. */
  dtype?: OutputDtype;
};

/** The adapter_config.json object for a LoRA config (PEFT's LoraConfig fields, defaults filled in). */
export function adapterConfigJson(
  cfg: ModelConfig,
  lora: LoraConfig,
  baseModelNameOrPath: string | null = null,
): Record<string, unknown> {
  const c = normalizeLoraConfig(lora);
  // PEFT resolves "all-linear" to the short names of the layers it adapted, and saves those
  const targets = c.targetModules === "all-linear"
    ? [...new Set(loraModules(cfg, c).map((m) => m.path.split(".").at(-1)!))]
    : [...c.targetModules];
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModelNameOrPath,
    bias: "none",
    fan_in_fan_out: familyOf(cfg).layout === "conv1d",
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: c.alpha,
    lora_dropout: c.dropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: c.r,
    rank_pattern: {},
    revision: null,
    target_modules: targets.sort(),
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: c.useRslora,
  };
}

function tensorOf(tensors: AdapterTensors, name: string): HostWeight | Float32Array | undefined {
  return tensors instanceof Map ? tensors.get(name) : tensors[name];
}

/**
 * Writes an adapter folder PEFT loads: every adapted module's A and B (checked against the config's
 * shapes), and adapter_config.json.
 */
export async function saveAdapter(
  dir: string,
  cfg: ModelConfig,
  lora: LoraConfig,
  tensors: AdapterTensors,
  opts: SaveAdapterOptions = {},
): Promise<void> {
  const c = normalizeLoraConfig(lora);
  const out = new Map<string, HostWeight>();
  for (const m of loraModules(cfg, c)) {
    for (
      const [name, shape] of [[m.names.a, [c.r, m.inFeatures]], [m.names.b, [m.outFeatures, c.r]]] as const
    ) {
      const t = tensorOf(tensors, name);
      if (!t) throw new Error(`saveAdapter: tensor "${name}" is missing`);
      const data = t instanceof Float32Array ? t : t.data;
      if (data.length !== shape[0] * shape[1]) {
        throw new Error(`saveAdapter: "${name}" has ${data.length} values, expected [${shape.join(", ")}]`);
      }
      out.set(name, { shape: [...shape], data });
    }
  }
  await Deno.mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS_NAME), out, { dtype: opts.dtype });
  await writeJsonAtomic(
    join(dir, ADAPTER_CONFIG_NAME),
    adapterConfigJson(cfg, c, opts.baseModelNameOrPath ?? null),
  );
}

/** A loaded adapter: its config, the base model it names, and its tensors by PEFT name. */
export type LoadedAdapter = {
  lora: LoraConfig;
  baseModelNameOrPath: string | null;
  tensors: WeightMap;
};

/**
 * Parses adapter_config.json. Features that change the model and that the toolkit does not implement
 * (DoRA, per-layer ranks or alphas, trained biases, extra saved modules, layer subsets) are rejected. A
 * regex `target_modules` (a string) needs `cfg` to be resolved to module paths.
 */
export function parseAdapterConfig(json: unknown, cfg?: ModelConfig, file = ADAPTER_CONFIG_NAME): {
  lora: LoraConfig;
  baseModelNameOrPath: string | null;
} {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${file}: not a JSON object`);
  }
  const j = json as Record<string, unknown>;
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  if ((j.peft_type ?? "LORA") !== "LORA") {
    fail(`peft_type ${JSON.stringify(j.peft_type)} is not supported (only LORA)`);
  }
  if (j.use_dora) fail(`use_dora is not supported`);
  if ((j.bias ?? "none") !== "none") fail(`bias ${JSON.stringify(j.bias)} is not supported (only "none")`);
  const nonEmpty = (k: string) => j[k] && typeof j[k] === "object" && Object.keys(j[k] as object).length > 0;
  if (nonEmpty("rank_pattern") || nonEmpty("alpha_pattern")) {
    fail(`rank_pattern/alpha_pattern are not supported`);
  }
  if (Array.isArray(j.modules_to_save) && j.modules_to_save.length) fail(`modules_to_save is not supported`);
  if (j.layers_to_transform !== undefined && j.layers_to_transform !== null) {
    fail(`layers_to_transform is not supported`);
  }
  let targets: string[] | "all-linear";
  const t = j.target_modules;
  if (Array.isArray(t) && t.every((x) => typeof x === "string")) targets = t as string[];
  else if (t === "all-linear") targets = "all-linear";
  else if (typeof t === "string") {
    if (!cfg) fail(`target_modules is a regex ("${t}"): pass the model config to resolve it`);
    const re = new RegExp(`^(?:${t})$`);
    targets = linearModules(cfg!).map((m) => m.peftPath).filter((p) => re.test(p));
    if (targets.length === 0) fail(`target_modules regex "${t}" matches no module`);
  } else targets = fail(`target_modules must be a list of names or a regex string`);
  const num = (k: string, dflt?: number) => {
    const v = j[k] ?? dflt;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      fail(`"${k}" must be a number, got ${JSON.stringify(j[k])}`);
    }
    return v as number;
  };
  const lora = normalizeLoraConfig({
    r: num("r", 8),
    alpha: num("lora_alpha", 8),
    dropout: num("lora_dropout", 0),
    targetModules: targets,
    useRslora: j.use_rslora === true,
  });
  if (cfg && j.fan_in_fan_out !== undefined && j.fan_in_fan_out !== (familyOf(cfg).layout === "conv1d")) {
    fail(`fan_in_fan_out ${j.fan_in_fan_out} does not fit a ${cfg.modelType} model`);
  }
  const base = typeof j.base_model_name_or_path === "string" ? j.base_model_name_or_path : null;
  return { lora, baseModelNameOrPath: base };
}

/**
 * Reads a PEFT adapter folder. With `cfg`, checks that the tensors are exactly the adapted modules' A and
 * B with the config's shapes (names saved with an adapter name, `….lora_A.default.weight`, are accepted).
 */
export async function loadAdapter(dir: string, cfg?: ModelConfig): Promise<LoadedAdapter> {
  const file = join(dir, ADAPTER_CONFIG_NAME);
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${dir}: no ${ADAPTER_CONFIG_NAME} (not a PEFT adapter folder)`);
    }
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const { lora, baseModelNameOrPath } = parseAdapterConfig(json, cfg, file);
  const raw = await readSafetensors(join(dir, ADAPTER_WEIGHTS_NAME));
  const tensors: WeightMap = new Map();
  for (const [name, t] of raw) tensors.set(name.replace(/\.(lora_[AB])\.default\.weight$/, ".$1.weight"), t);
  if (cfg) {
    const want = new Map<string, number[]>();
    for (const m of loraModules(cfg, lora)) {
      want.set(m.names.a, [lora.r, m.inFeatures]);
      want.set(m.names.b, [m.outFeatures, lora.r]);
    }
    for (const [name, shape] of want) {
      const t = tensors.get(name);
      if (!t) throw new Error(`${dir}: adapter tensor "${name}" is missing`);
      if (t.shape.join(",") !== shape.join(",")) {
        throw new Error(`${dir}: "${name}" has shape [${t.shape}], expected [${shape}]`);
      }
    }
    const extra = [...tensors.keys()].filter((n) => !want.has(n));
    if (extra.length) throw new Error(`${dir}: unexpected adapter tensors: ${extra.slice(0, 5).join(", ")}`);
  }
  return { lora, baseModelNameOrPath, tensors };
}

/**
 * Base weights with the adapters merged in: `W += scaling · B A` (transposed for GPT-2's `[in, out]`
 * Conv1D weights), as PEFT's `merge_and_unload`. Unadapted weights are shared, not copied.
 */
export function mergeLora(
  cfg: ModelConfig,
  weights: WeightMap,
  lora: LoraConfig,
  tensors: AdapterTensors,
): WeightMap {
  const out: WeightMap = new Map(weights);
  for (const m of loraModules(cfg, normalizeLoraConfig(lora))) {
    const name = `${m.path}.weight`;
    const w = weights.get(name);
    if (!w) throw new Error(`mergeLora: base weight "${name}" is missing`);
    out.set(name, { shape: [...w.shape], data: mergeLoraTensor(cfg, lora, tensors, name, w.data) });
  }
  return out;
}

/**
 * One base weight (canonical name) with its module's adapter merged in, as {@link mergeLora} merges it;
 * `base` itself when the module is not adapted. What a streaming export calls tensor by tensor; `meter`
 * measures what of the update the save dtype keeps ({@link LoraUpdateMeter}).
 */
export function mergeLoraTensor(
  cfg: ModelConfig,
  lora: LoraConfig,
  tensors: AdapterTensors,
  name: string,
  base: Float32Array,
  meter?: LoraUpdateMeter,
): Float32Array {
  const c = normalizeLoraConfig(lora);
  const m = loraModules(cfg, c).find((x) => `${x.path}.weight` === name);
  if (!m) return base;
  const get = (n: string) => {
    const t = tensorOf(tensors, n);
    if (!t) throw new Error(`mergeLora: tensor "${n}" is missing`);
    return t instanceof Float32Array ? t : t.data;
  };
  const a = get(m.names.a), b = get(m.names.b);
  const scaling = loraScaling(c);
  const merged = Float32Array.from(base);
  const { inFeatures: nIn, outFeatures: nOut } = m;
  // (B A)[o, i] = Σ_k b[o, k] a[k, i], summed in float64 in k order, then added once to the fp32 weight;
  // row by row so that the inner loop runs along memory
  const row = new Float64Array(nIn);
  for (let o = 0; o < nOut; o++) {
    row.fill(0);
    for (let k = 0; k < c.r; k++) {
      const bk = b[o * c.r + k], off = k * nIn;
      for (let i = 0; i < nIn; i++) row[i] += bk * a[off + i];
    }
    if (m.layout === "linear") { for (let i = 0; i < nIn; i++) merged[o * nIn + i] += scaling * row[i]; }
    else for (let i = 0; i < nIn; i++) merged[i * nOut + o] += scaling * row[i];
  }
  meter?.add(base, merged);
  return merged;
}

/** What of a merged LoRA update the saved weights keep (summary.json's `export.lora_update_kept`). */
export type LoraUpdateKept = {
  /** Weights the update changes: merged ≠ base, in float32. */
  weights_touched: number;
  /** The fraction of them whose saved value is the base's saved value: their update rounded away. */
  weights_unchanged: number;
  /**
   * ‖saved update − update‖ / ‖update‖ over the touched weights (the saved update: merged − base, both
   * rounded to the save dtype; the update: the float32 merge's): the share of the update's size lost.
   */
  update_lost: number;
};

/**
 * Measures what rounding the merged weights to the save dtype does to a LoRA update. bf16 keeps 8
 * significant bits: a weight moves only when its update passes half a unit in the last place, 1/512 to
 * 1/256 of the weight, and the small update of a short run at a small learning rate is mostly below that:
 * the saved policy is then mostly the base, while `adapter/` holds the update whole. Fed each adapted
 * tensor by {@link mergeLoraTensor}.
 */
export class LoraUpdateMeter {
  #touched = 0;
  #unchanged = 0;
  #updateSq = 0;
  #lostSq = 0;
  readonly #f32 = new Float32Array(1);
  readonly #u32 = new Uint32Array(this.#f32.buffer);
  readonly #round: (x: number) => number;

  constructor(readonly dtype: OutputDtype) {
    this.#round = dtype === "float32"
      ? (x) => x
      : dtype === "float16"
      ? (x) => f16BitsToF32(f32ToF16Bits(x))
      : (x) => {
        // round to nearest even at bit 16, as the safetensors writer encodes bf16 (NaN kept as it is)
        this.#f32[0] = x;
        const f = this.#u32[0];
        if ((f & 0x7fffffff) > 0x7f800000) return x;
        this.#u32[0] = ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) << 16;
        return this.#f32[0];
      };
  }

  /** Counts one adapted tensor: its base weights and the merged ones (float32, same layout). */
  add(base: Float32Array, merged: Float32Array): void {
    const round = this.#round;
    for (let i = 0; i < merged.length; i++) {
      const b = base[i], m = merged[i];
      if (m === b || m !== m) continue; // untouched, or NaN
      const update = m - b, saved = round(m) - round(b);
      this.#touched++;
      if (saved === 0) this.#unchanged++;
      this.#updateSq += update * update;
      this.#lostSq += (saved - update) ** 2;
    }
  }

  /** The measure so far. */
  result(): LoraUpdateKept {
    return {
      weights_touched: this.#touched,
      weights_unchanged: this.#touched ? this.#unchanged / this.#touched : 0,
      update_lost: this.#updateSq ? Math.sqrt(this.#lostSq / this.#updateSq) : 0,
    };
  }
}

/** Above this share of touched weights unchanged, or of the update's size lost, the export warns. */
export const LORA_LOSS_WARNING = 0.1;

/**
 * The warning for a save dtype that loses much of the update (more than {@link LORA_LOSS_WARNING} of the
 * touched weights unchanged, or of the update's size lost), with the numbers; null when it keeps it.
 */
export function loraUpdateWarning(kept: LoraUpdateKept, dtype: OutputDtype): string | null {
  if (kept.weights_unchanged <= LORA_LOSS_WARNING && kept.update_lost <= LORA_LOSS_WARNING) return null;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  return `warning: the policy saved in ${dtype} loses much of the LoRA update: ` +
    `${pct(kept.weights_unchanged)} of the ${kept.weights_touched} weights the adapters change come out ` +
    `unchanged, and ${pct(kept.update_lost)} of the update's size is lost (it is below ${dtype}'s ` +
    `resolution). --save-dtype float32 keeps it; adapter/ holds the exact update`;
}
