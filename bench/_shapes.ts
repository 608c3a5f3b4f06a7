/**
 * The model shapes people align, as their Hugging Face `config.json`s say (no weights: the benchmarks make
 * random-weight bf16 folders of these shapes themselves, see {@link randomModelFolder}).
 * @module
 */
import { join } from "node:path";
import { mulberry32 } from "../lib/data/random.ts";
import { parseConfig } from "../lib/model/config.ts";
import { saveModelFolder } from "../lib/model/model_folder.ts";
import { expectedTensors } from "../lib/model/weights_names.ts";
import type { OutputDtype } from "../lib/model/safetensors.ts";
import { isFile, writeJsonAtomic } from "../lib/files.ts";
import { writeTinyTokenizer } from "../tests/fixtures/tokenizer.ts";

const llama = (o: Record<string, unknown>) => ({
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_act: "silu",
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 4096,
  bos_token_id: null,
  eos_token_id: 1,
  pad_token_id: 0,
  tie_word_embeddings: false,
  ...o,
});

/** config.json of each shape (their published values; token ids as the tiny tokenizer needs them). */
export const SHAPES: Record<string, Record<string, unknown>> = {
  "smollm-135m": llama({
    hidden_size: 576,
    intermediate_size: 1536,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    vocab_size: 49152,
    tie_word_embeddings: true,
    max_position_embeddings: 2048,
  }),
  "qwen2.5-0.5b": llama({
    model_type: "qwen2",
    architectures: ["Qwen2ForCausalLM"],
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
    rope_theta: 1000000,
    rms_norm_eps: 1e-6,
  }),
  "tinyllama-1.1b": llama({
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: 22,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    vocab_size: 32000,
    max_position_embeddings: 2048,
  }),
  "llama-3.2-1b": llama({
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 128256,
    tie_word_embeddings: true,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  }),
  "qwen2.5-1.5b": llama({
    model_type: "qwen2",
    architectures: ["Qwen2ForCausalLM"],
    hidden_size: 1536,
    intermediate_size: 8960,
    num_hidden_layers: 28,
    num_attention_heads: 12,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
    rope_theta: 1000000,
    rms_norm_eps: 1e-6,
  }),
  "llama-3.2-3b": llama({
    hidden_size: 3072,
    intermediate_size: 8192,
    num_hidden_layers: 28,
    num_attention_heads: 24,
    num_key_value_heads: 8,
    head_dim: 128,
    vocab_size: 128256,
    tie_word_embeddings: true,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  }),
  "mistral-7b": llama({
    model_type: "mistral",
    architectures: ["MistralForCausalLM"],
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 32000,
    max_position_embeddings: 32768,
    sliding_window: 4096,
  }),
};

/** Parameters of a shape (every tensor of its config). */
export function shapeParameters(shape: string): number {
  const cfg = parseConfig(SHAPES[shape], shape);
  return expectedTensors(cfg).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * A random-weight model folder of `shape` in `dtype` (bf16 by default) with the tests' tiny tokenizer
 * (ids < 128 fit every vocabulary), made once under `root` and reused: weights ~ N(0, 0.02²) (uniform of
 * that spread), norms 1, written tensor by tensor. Returns the folder.
 */
export async function randomModelFolder(
  root: string,
  shape: string,
  dtype: OutputDtype = "bfloat16",
): Promise<string> {
  const json = SHAPES[shape];
  if (!json) throw new Error(`unknown shape "${shape}" (known: ${Object.keys(SHAPES).join(", ")})`);
  const dir = join(root, `${shape}-${dtype}`);
  const done = join(dir, ".complete");
  if (await isFile(done)) return dir;
  const cfg = parseConfig({ ...json, torch_dtype: dtype }, shape);
  const rand = mulberry32(1234);
  const spread = 0.02 * Math.sqrt(3);
  await saveModelFolder(dir, cfg, (name) => {
    const t = expectedTensors(cfg).find((x) => x.name === name)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (/norm\.weight$|layernorm\.weight$/.test(name)) return out.fill(1);
    for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * spread;
    return out;
  }, { dtype });
  await writeTinyTokenizer(dir, { chatTemplate: true });
  await writeJsonAtomic(done, { shape, dtype });
  return dir;
}
