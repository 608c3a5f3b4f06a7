/**
 * Incremental detokenization: the text each new token adds, in O(1) per token. Decoding a token on its own
 * is wrong for most tokenizers (WordPiece's `##s`, SentencePiece's leading `▁`, byte-level BPE's split UTF-8
 * characters), and decoding the whole sequence every step is quadratic. Like vLLM and TGI, this decodes a
 * short window twice — the tokens already shown, and the same plus the new ones — and emits the difference,
 * holding it back while it ends in U+FFFD (an incomplete UTF-8 character).
 * @module
 */

/** Turns token ids into text (a transformers.js tokenizer's `decode`, special tokens skipped or not). */
export type DecodeFn = (ids: number[]) => string;

/** How many prompt tokens give the first generated token its context (spaces, word pieces). */
const CONTEXT_TOKENS = 6;

/** Text of a growing token sequence, one token at a time. */
export class IncrementalDetokenizer {
  #ids: number[];
  /** Start of the window: tokens before it never change the text again. */
  #prefix = 0;
  /** Tokens before this index have had their text emitted. */
  #read: number;

  /** `context`: the prompt's ids, whose last few tokens are decoded along (never emitted). */
  constructor(private readonly decode: DecodeFn, context: readonly number[] = []) {
    this.#ids = context.slice(-CONTEXT_TOKENS);
    this.#read = this.#ids.length;
  }

  /** Adds a token; returns the text it completes ("" while the text is held back). */
  push(id: number): string {
    this.#ids.push(id);
    const before = this.#text(this.#prefix, this.#read);
    const after = this.#text(this.#prefix, this.#ids.length);
    if (after.length <= before.length || after.endsWith("\uFFFD")) return "";
    this.#ids = this.#ids.slice(this.#read);
    this.#prefix = 0;
    this.#read = this.#ids.length;
    return after.slice(before.length);
  }

  /** The text `id` would add now, without adding it (for the alternatives of `top_logprobs`). */
  peek(id: number): string {
    const before = this.#text(this.#prefix, this.#read);
    const after = this.#text(this.#prefix, this.#ids.length, id);
    return after.slice(before.length);
  }

  /** Text still held back (an incomplete character at the end), emitted as it is. */
  flush(): string {
    if (this.#read === this.#ids.length) return "";
    const before = this.#text(this.#prefix, this.#read);
    const after = this.#text(this.#prefix, this.#ids.length);
    this.#prefix = this.#read = this.#ids.length;
    return after.slice(before.length);
  }

  #text(from: number, to: number, extra?: number): string {
    const ids = this.#ids.slice(from, to);
    if (extra !== undefined) ids.push(extra);
    return ids.length ? this.decode(ids) : "";
  }
}
