/** Shared fixtures of the sampling tests: a tiny random Llama folder with a chat template, and prompt files. */
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveModelFolder } from "../../lib/model/model_folder.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";

export const WORDS = ["one", "two", "three", "four", "five", "cat", "dog", "red", "blue", "good"];

/** A prompt of `i`'s own length and words, so a batch mixes lengths. */
export function promptText(i: number): string {
  return Array.from({ length: 1 + (i * 7) % 9 }, (_, t) => WORDS[(i + 3 * t) % WORDS.length]).join(" ");
}

/** A temp folder with `model/` (tiny random Llama, 128-token vocabulary, Zephyr-style template). */
export async function loopSetup(): Promise<{ dir: string; model: string }> {
  const dir = await Deno.makeTempDir({ prefix: "loop-test-" });
  await writeTinyTokenizer(join(dir, "tok"), { chatTemplate: true });
  const cfg = tinyConfig("llama", { vocabSize: 128 });
  const model = join(dir, "model");
  await saveModelFolder(model, cfg, initWeights(cfg, { seed: 1, std: 0.08 }), {
    tokenizerFrom: join(dir, "tok"),
  });
  return { dir, model };
}

/** Runs `fn` over {@link loopSetup} with 11 prompts in `prompts.jsonl`, then removes the folder. */
export async function withSetup(
  fn: (s: { dir: string; model: string; prompts: string }) => Promise<void>,
): Promise<void> {
  const s = await loopSetup();
  try {
    await fn({ ...s, prompts: await writePrompts(s.dir, 11) });
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
}

/** Writes `n` plain prompt rows (`{"prompt": …}`) to `dir/name`; returns the path. */
export async function writePrompts(dir: string, n: number, name = "prompts.jsonl"): Promise<string> {
  const path = join(dir, name);
  const rows = Array.from({ length: n }, (_, i) => JSON.stringify({ prompt: promptText(i) }));
  await Deno.writeTextFile(path, rows.join("\n") + "\n");
  return path;
}

/** Writes JSON rows to `dir/name`; returns the path. */
export async function writeRows(dir: string, name: string, rows: unknown[]): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  return path;
}

/** Runs `deno task sample`'s entry with `args`; its status and output. */
export async function sampleCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../sample/main.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

/** An entry (`sample/main.ts`, `score/main.ts`) run with `args` under `env` (a launcher's variables), spawned. */
export function spawnEntry(main: string, args: string[], env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** A spawned process's exit status and everything it printed (stdout, then stderr). */
export async function finished(p: Deno.ChildProcess): Promise<{ code: number; text: string }> {
  const o = await p.output();
  return { code: o.code, text: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}
