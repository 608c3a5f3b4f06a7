/**
 * A Hugging Face reward model (`…ForSequenceClassification`, one label; lib/model/reward_head.ts) as a
 * scorer. Each (prompt, response) is rendered with the reward model's OWN chat template as the
 * conversation [prompt messages…, assistant response] without a generation prompt, and tokenized as
 * `apply_chat_template(conversation, tokenize=True)` tokenizes it: no special tokens added beyond what the
 * template writes (`templateKwargs` are its variables). A folder without a template renders the plain
 * `User:/Assistant:` fallback.
 *
 * Truncation (`maxLength`, default the model's longest exact length) keeps the END of the sequence: the
 * head reads the last token, which must stay the response's end (its end-of-turn token) as in the model's
 * training; the start of the prompt goes first. transformers' tokenizers truncate on the right by default
 * (`truncation_side="right"`), which would cut the response's end instead. Cut sequences are counted.
 *
 * Sequences run `batch` at a time, longest with longest (less padding), right-padded.
 * @module
 */
import { resolve } from "node:path";
import { renderChat } from "../../data/chat.ts";
import { loadTokenizer, type Tokenizer } from "../../data/tokenize.ts";
import { maxSupportedLength } from "../../model/config.ts";
import { buildRewardGraph, loadRewardModelFolder } from "../../model/reward_head.ts";
import { storedWeights } from "../../model/stored_weights.ts";
import { type DeviceRequest, resolveDevice } from "../../runtime/device.ts";
import { deviceMemory } from "../../runtime/device_memory.ts";
import { type Device, ModelSession } from "../../runtime/session.ts";
import { failItem, type ScoreItem, type Scorer, type SkipOptions } from "./types.ts";

/** Options of {@link rewardModelScorer} (`skipErrors`: a sequence that renders to nothing or scores NaN). */
export type RewardModelOptions = SkipOptions & {
  /** Where the model runs (default cpu). */
  device?: DeviceRequest;
  /** Which CUDA device (default 0; a rank under a launcher passes its local rank's, rankCudaDevice). */
  deviceId?: number;
  /** ONNX Runtime threads inside an operator (CPU; default all cores). */
  threads?: number;
  /** Sequences per forward pass (default 8). */
  batch?: number;
  /** Longest sequence in tokens; longer ones keep their end (default: the model's longest exact length). */
  maxLength?: number;
  /** Variables for the reward model's chat template (`--chat-template-kwargs`). */
  templateKwargs?: Record<string, unknown>;
  /** Where notices go (a CUDA fallback); default console.error. */
  log?: (line: string) => void;
};

/** A reward model scorer, with what it did. */
export type RewardModelScorer = Scorer & {
  readonly device: Device;
  readonly maxLength: number;
  /** Sequences cut to `maxLength` so far. */
  readonly truncated: number;
  /** Sequences scored so far. */
  readonly sequences: number;
};

/** What a reward model tokenizes: the template's text, the ids, and whether they were cut. */
export function rewardModelIds(
  tokenizer: Tokenizer,
  item: Pick<ScoreItem, "prompt" | "response">,
  maxLength: number,
  templateKwargs?: Record<string, unknown>,
): { ids: number[]; cut: boolean } {
  const text = renderChat(tokenizer, [...item.prompt, { role: "assistant", content: item.response }], {
    addGenerationPrompt: false,
    templateKwargs,
  });
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  if (ids.length <= maxLength) return { ids, cut: false };
  return { ids: ids.slice(ids.length - maxLength), cut: true };
}

/**
 * Whether to cast bf16/fp16 weights to fp32 once at load (as the server does): every forward pass reads
 * every weight, so casting at each use costs time, and the copy is taken when it is at most a quarter of
 * the device's free memory (scoring is the run's only work).
 */
async function foldsWeights(
  stored: Iterable<{ dtype: string; shape: number[] }>,
  device: Device,
  deviceId?: number,
) {
  let narrow = 0;
  for (const t of stored) {
    if (t.dtype === "BF16" || t.dtype === "F16") narrow += t.shape.reduce((a, b) => a * b, 1);
  }
  if (narrow === 0) return false;
  const free = (await deviceMemory(device, deviceId))?.free;
  return free !== undefined && narrow * 4 <= free / 4;
}

/** Loads a reward model folder into a session and returns it as a scorer. */
export async function rewardModelScorer(dir: string, o: RewardModelOptions = {}): Promise<RewardModelScorer> {
  const log = o.log ?? ((line: string) => console.error(line));
  const folder = await loadRewardModelFolder(dir);
  const cfg = folder.config;
  if (!folder.tokenizerDir) {
    throw new Error(`${dir}: no tokenizer.json: the reward model's tokenizer is needed`);
  }
  const tokenizer = await loadTokenizer(folder.tokenizerDir, { log });
  const limit = maxSupportedLength(cfg);
  const maxLength = o.maxLength ?? limit;
  if (!Number.isSafeInteger(maxLength) || maxLength < 1) {
    throw new RangeError(`maxLength must be ≥ 1, got ${maxLength}`);
  }
  if (maxLength > limit) {
    throw new RangeError(`maxLength ${maxLength} is beyond what ${dir} models exactly (${limit} tokens)`);
  }
  const batch = o.batch ?? 8;
  if (!Number.isSafeInteger(batch) || batch < 1) throw new RangeError(`batch must be ≥ 1, got ${batch}`);
  const { device, notice } = await resolveDevice(o.device ?? "cpu");
  if (notice) log(notice.replace("training on", "scoring on"));
  const g = buildRewardGraph(cfg, storedWeights(folder.stored));
  const session = await ModelSession.create(g.build(), {
    device,
    deviceId: o.deviceId,
    intraOpThreads: o.threads,
    describe: (n) => g.describe(n),
    foldWeights: await foldsWeights(folder.stored.values(), device, o.deviceId),
  });
  const padId = cfg.padTokenId ?? tokenizer.pad_token_id ?? 0;
  let truncated = 0, sequences = 0;

  async function run(seqs: number[][]): Promise<Float32Array> {
    const width = Math.max(...seqs.map((s) => s.length));
    const ids = new Int32Array(seqs.length * width).fill(padId), mask = new Int32Array(seqs.length * width);
    seqs.forEach((s, r) => {
      ids.set(s, r * width);
      mask.fill(1, r * width, r * width + s.length);
    });
    const dims = [seqs.length, width];
    const out = await session.run({
      input_ids: { dtype: "int32", dims, data: ids },
      attention_mask: { dtype: "int32", dims, data: mask },
    }, ["rewards"]);
    return out.rewards.data as Float32Array;
  }

  return {
    kind: "reward-model",
    name: dir,
    settings: {
      model: resolve(dir),
      architecture: folder.architecture,
      maxLength,
      ...(o.templateKwargs ? { chat_template_kwargs: o.templateKwargs } : {}),
    },
    device,
    maxLength,
    get truncated() {
      return truncated;
    },
    get sequences() {
      return sequences;
    },
    async score(items: readonly ScoreItem[]): Promise<number[]> {
      const rewards = new Array<number>(items.length);
      const seqs = items.map((item, i) => {
        const { ids, cut } = rewardModelIds(tokenizer, item, maxLength, o.templateKwargs);
        if (ids.length === 0) rewards[i] = failItem(item, i, "the conversation renders to no tokens", o);
        if (cut) truncated++;
        return ids;
      });
      const order = seqs.map((_, i) => i).filter((i) => seqs[i].length > 0)
        .sort((a, b) => seqs[b].length - seqs[a].length);
      for (let at = 0; at < order.length; at += batch) {
        const idx = order.slice(at, at + batch);
        const r = await run(idx.map((i) => seqs[i]));
        idx.forEach((i, k) => {
          rewards[i] = Number.isFinite(r[k])
            ? r[k]
            : failItem(items[i], i, `the reward model gave ${r[k]}`, o);
        });
      }
      sequences += items.length;
      return rewards;
    },
    async release() {
      await session.release();
    },
  };
}
