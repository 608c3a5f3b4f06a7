/**
 * Writes a small word-level Hugging Face tokenizer folder (tokenizer.json + tokenizer_config.json) that
 * `@huggingface/transformers` loads offline: for tiny models made from scratch (the demo, tests).
 *
 * Why WordPiece: the tokenizer runtime of transformers.js 4.x implements BPE, WordPiece and Unigram but
 * not WordLevel. A WordPiece model over whole words (plus `##`-letters where spelling is wanted) behaves
 * as a word-level tokenizer for its words. Text is lowercased; punctuation and digits are split one
 * character per token.
 * @module
 */
import { join } from "node:path";

/** The tokenizer to write. Ids follow the order: `specials`, then `tokens`. */
export type WordPieceSpec = {
  /** Special tokens (never split, e.g. "<pad>", "<eos>", "<unk>", chat markers). */
  specials: string[];
  /** Ordinary tokens: words, digits, punctuation, letters and `##letters`. */
  tokens: string[];
  eos: string;
  pad: string;
  unk: string;
  bos?: string;
  /** A Jinja chat template for tokenizer_config.json. */
  chatTemplate?: string;
};

/** Writes the folder; returns the vocabulary by id and the ids of the special roles. */
export async function writeWordPieceTokenizer(
  dir: string,
  spec: WordPieceSpec,
): Promise<{ vocab: string[]; eosId: number; padId: number; unkId: number; bosId?: number }> {
  const vocab = [...spec.specials];
  for (const t of spec.tokens) if (!vocab.includes(t)) vocab.push(t);
  const ids: Record<string, number> = {};
  vocab.forEach((t, i) => ids[t] = i);
  for (const role of [spec.eos, spec.pad, spec.unk, spec.bos]) {
    if (role !== undefined && !(role in ids)) {
      throw new RangeError(`the special token ${role} is not in the vocabulary`);
    }
  }
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: spec.specials.map((content) => ({
      id: ids[content],
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: "Lowercase" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "BertPreTokenizer" }, { type: "Digits", individual_digits: true }],
    },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: spec.unk,
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab: ids,
    },
  };
  const config: Record<string, unknown> = {
    tokenizer_class: "PreTrainedTokenizerFast",
    eos_token: spec.eos,
    pad_token: spec.pad,
    unk_token: spec.unk,
    model_max_length: 4096,
    clean_up_tokenization_spaces: false,
  };
  if (spec.bos) config.bos_token = spec.bos;
  if (spec.chatTemplate) config.chat_template = spec.chatTemplate;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson, null, 1));
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config, null, 1));
  return {
    vocab,
    eosId: ids[spec.eos],
    padId: ids[spec.pad],
    unkId: ids[spec.unk],
    bosId: spec.bos ? ids[spec.bos] : undefined,
  };
}
