/**
 * The model shapes people align, as their Hugging Face `config.json`s say (no weights: the benchmarks make
 * random-weight bf16 folders of these shapes themselves, see {@link randomModelFolder}).
 * @module
 */
import { join } from "node:path";
import { mulberry32 } from "../lib/data/random.ts";
import { parseConfig } from "../lib/model/config.ts";
import { configToJson } from "../lib/model/config_json.ts";
import { hfStateDictName } from "../lib/model/model_folder.ts";
import { planSafetensors } from "../lib/model/safetensors.ts";
import { f32ToBf16Bits } from "../lib/model/float_codec.ts";
import { expectedTensors } from "../lib/model/weights_names.ts";
import { isFile, writeFileAtomic, writeJsonAtomic } from "../lib/files.ts";
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

/** Llama 3.2's rope scaling. */
const LLAMA3_ROPE = {
  rope_type: "llama3",
  factor: 32,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

/**
 * config.json of each shape (their published values; token ids as the tiny tokenizer needs them), and a
 * `tiny` one for the scripts' own tests.
 */
export const SHAPES: Record<string, Record<string, unknown>> = {
  "gpt2-124m": {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    activation_function: "gelu_new",
    vocab_size: 50257,
    n_embd: 768,
    n_layer: 12,
    n_head: 12,
    n_positions: 1024,
    bos_token_id: 1,
    eos_token_id: 1,
    tie_word_embeddings: true,
  },
  tiny: llama({
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 256,
  }),
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
    rope_scaling: LLAMA3_ROPE,
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
    rope_scaling: LLAMA3_ROPE,
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
 * A random-weight model folder of `shape` with bf16 weights and the tests' tiny tokenizer (ids < 128 fit
 * every vocabulary), made once under `root` and reused. Weights are uniform with the spread of N(0, 0.02²),
 * norms 1; the bytes are tiled from a seeded random pool (rotated per tensor), so that a 7B folder is
 * written at disk speed rather than a value at a time. Returns the folder.
 */
export async function randomModelFolder(root: string, shape: string): Promise<string> {
  const json = SHAPES[shape];
  if (!json) throw new Error(`unknown shape "${shape}" (known: ${Object.keys(SHAPES).join(", ")})`);
  const dir = join(root, `${shape}-bfloat16`);
  const done = join(dir, ".complete");
  if (await isFile(done)) return dir;
  const cfg = parseConfig({ ...json, torch_dtype: "bfloat16" }, shape);
  await Deno.mkdir(dir, { recursive: true });
  const specs = expectedTensors(cfg).map((t) => ({ name: hfStateDictName(cfg, t.name), shape: t.shape }));
  const layout = planSafetensors(specs, { dtype: "bfloat16" });
  const rand = mulberry32(1234);
  const pool = new Uint16Array(1 << 20);
  for (let i = 0; i < pool.length; i++) pool[i] = f32ToBf16Bits((rand() * 2 - 1) * 0.02 * Math.sqrt(3));
  const ones = new Uint16Array(1 << 16).fill(f32ToBf16Bits(1));
  await writeFileAtomic(join(dir, "model.safetensors"), async (f) => {
    await writeAll(f, layout.headerBytes);
    for (const [k, t] of layout.order.entries()) {
      const src = /norm\.weight$|layernorm\.weight$|ln_\w+\.weight$/.test(t.name) ? ones : pool;
      const start = (k * 7919) % src.length;
      for (let done = 0; done < t.numel;) {
        const from = (start + done) % src.length;
        const n = Math.min(t.numel - done, src.length - from);
        await writeAll(f, new Uint8Array(src.buffer, from * 2, n * 2));
        done += n;
      }
    }
  });
  await writeJsonAtomic(join(dir, "config.json"), configToJson(cfg));
  await writeTinyTokenizer(dir, { chatTemplate: true });
  await writeJsonAtomic(done, { shape, dtype: "bfloat16" });
  return dir;
}

async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await f.write(bytes.subarray(off));
}
