/**
 * Text ↔ token ids for generation (the server, `sample`, `eval`), with the training code's own functions
 * (tokenize.ts), so a prompt is tokenized exactly as the trainer tokenized it: the chat template through `renderChat`, BOS
 * first, responses as the template renders them after the prompt, then their end (the template's
 * end-of-turn token, else EOS). Lives on the HTTP thread: transformers.js does not load in a Worker.
 * @module
 */
import { join } from "node:path";
import {
  checkSpecialIdsInVocab,
  endOfTurnToken,
  loadTokenizer,
  responseEndId,
  tokenizePrompt,
  type Tokenizer,
  tokenizeResponses,
} from "./tokenize.ts";
import type { Message } from "./types.ts";
import { IncrementalDetokenizer } from "./detokenizer.ts";

/** Token ids the model treats specially. */
export type SpecialIds = {
  /**
   * Ids that end generation: config.json's and generation_config.json's `eos_token_id`, the tokenizer's EOS
   * and the chat template's end-of-turn token (what training appends to a response).
   */
  eos: number[];
  /** The id used for padding (masked out): the tokenizer's pad, else its EOS, else 0. */
  pad: number;
  bos: number | null;
};

/** The tokenizer of the served model, with what the routes need from it. */
export class TextCodec {
  private constructor(readonly tokenizer: Tokenizer, readonly special: SpecialIds) {}

  /**
   * Loads the tokenizer of a model folder. `generationEos`: the EOS id(s) from generation_config.json or
   * config.json, which may list more than the tokenizer's one (Llama 3's `<|eot_id|>`). `log` gets the
   * notice of a model without a chat template (default: `console.warn`).
   */
  static async load(
    folder: string,
    generationEos: number[] = [],
    opts: { log?: (line: string) => void; vocabSize?: number } = {},
  ): Promise<TextCodec> {
    const tokenizer = await loadTokenizer(folder, { log: opts.log });
    // a special id past the embedding would index out of it, or as a stop id never be sampled
    if (opts.vocabSize !== undefined) {
      checkSpecialIdsInVocab(tokenizer, opts.vocabSize, folder, join(folder, "config.json"));
    }
    const eos = new Set(generationEos);
    const tokEos = tokenizer.eos_token_id;
    if (typeof tokEos === "number") eos.add(tokEos);
    const eot = endOfTurnToken(tokenizer);
    if (eot) eos.add(eot.id);
    const pad = tokenizer.pad_token_id ?? tokEos ?? 0;
    const bos = tokenizer.bos_token_id;
    return new TextCodec(tokenizer, {
      eos: [...eos],
      pad: typeof pad === "number" ? pad : 0,
      bos: typeof bos === "number" ? bos : null,
    });
  }

  /**
   * A chat prompt through the model's chat template, ending with the assistant header (as in training);
   * `templateKwargs`: extra template variables (`chat_template_kwargs`).
   */
  chatPromptIds(messages: Message[], templateKwargs?: Record<string, unknown>): number[] {
    return tokenizePrompt(this.tokenizer, messages, { templateKwargs });
  }

  /** A plain-text prompt: its tokens, BOS first when the tokenizer has one (as for a chat prompt). */
  textPromptIds(text: string): number[] {
    const ids = this.tokenizer.encode(text, { add_special_tokens: false });
    const bos = this.special.bos;
    if (bos !== null && ids[0] !== bos) ids.unshift(bos);
    return ids;
  }

  /**
   * Candidate responses to `messages` as the trainer scores them: each as the chat template renders it
   * after the prompt (Qwen3's thinking block included; `templateKwargs` as for the prompt), then its end
   * (end-of-turn, else EOS).
   */
  candidateIds(
    messages: Message[],
    texts: readonly string[],
    templateKwargs?: Record<string, unknown>,
  ): number[][] {
    return tokenizeResponses(this.tokenizer, messages, texts, { templateKwargs });
  }

  /** A text's tokens then a response's end (end-of-turn, else EOS), with no template around it. */
  responseIds(text: string): number[] {
    return [...this.tokenizer.encode(text, { add_special_tokens: false }), responseEndId(this.tokenizer)];
  }

  /** Text of token ids (special tokens dropped unless `keepSpecial`). */
  decode(ids: number[], keepSpecial = false): string {
    return ids.length ? this.tokenizer.decode(ids, { skip_special_tokens: !keepSpecial }) : "";
  }

  /** An incremental decoder that continues after `context` (the prompt's ids). */
  detokenizer(context: readonly number[] = [], keepSpecial = false): IncrementalDetokenizer {
    return new IncrementalDetokenizer((ids) => this.decode(ids, keepSpecial), context);
  }
}
