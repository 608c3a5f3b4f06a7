/**
 * A cheap fingerprint of a model folder, to tell "the same model" when a sampling run resumes or shards are
 * merged.
 * @module
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { isFile } from "../files.ts";
import { SERVING_ONNX_FILE } from "./export.ts";

/**
 * A short fingerprint of a model folder, to tell "the same model" when a sampling run resumes or shards
 * are merged, without reading gigabytes: the config, generation config, tokenizer and chat template files
 * whole, and each weight file's name, size and sixteen 64 KiB samples of its bytes (a retrained or merged
 * model changes every layer, so the samples see it).
 */
export async function modelFingerprint(dir: string): Promise<string> {
  const hash = createHash("sha256");
  const small = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
  ];
  for (const f of small) {
    const bytes = await Deno.readFile(join(dir, f)).catch(() => undefined);
    if (bytes) hash.update(`${f}\0${bytes.length}\0`).update(bytes);
  }
  const weights: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".safetensors")) weights.push(e.name);
  if (weights.length === 0 && await isFile(join(dir, SERVING_ONNX_FILE))) weights.push(SERVING_ONNX_FILE);
  const SAMPLES = 16, CHUNK = 64 * 1024;
  for (const w of weights.sort()) {
    using f = await Deno.open(join(dir, w));
    const size = (await f.stat()).size;
    hash.update(`${w}\0${size}\0`);
    const buf = new Uint8Array(CHUNK);
    for (let s = 0; s < SAMPLES; s++) {
      const at = Math.floor(((size - Math.min(size, CHUNK)) * s) / (SAMPLES - 1));
      await f.seek(at, Deno.SeekMode.Start);
      let n = 0;
      while (n < Math.min(CHUNK, size)) {
        const r = await f.read(buf.subarray(n));
        if (r === null) break;
        n += r;
      }
      hash.update(buf.subarray(0, n));
    }
  }
  return `sha256:${hash.digest("hex")}`;
}
