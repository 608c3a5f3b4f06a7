/**
 * Tokenizer folders for the chat-template tests, written in the files' real formats: a small WordPiece
 * tokenizer with Llama 3's special tokens (`<|begin_of_text|>`, `<|end_of_text|>` as EOS, `<|eot_id|>`,
 * the header tokens) whose chat template sits where a model folder may keep it — `chat_template.jinja`
 * (current transformers), `chat_template.json`, `tokenizer_config.json` as a string or as the list of named
 * templates — or nowhere. The template is Llama 3's, plus Qwen3's `enable_thinking` switch in the
 * generation prompt.
 * @module
 */
import { join } from "node:path";
import { writeWordPieceTokenizer } from "../../lib/data/wordpiece.ts";
import { tinyVocab } from "../fixtures/tokenizer.ts";

export const LLAMA3_SPECIALS = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|eot_id|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<think>",
  "</think>",
  "<pad>",
  "<unk>",
];

/**
 * Llama 3's chat template (each turn `<|start_header_id|>role<|end_header_id|>\n\n{content}<|eot_id|>`),
 * with an `add_generation_prompt` check and, as Qwen3's, an empty thinking block when `enable_thinking` is
 * false.
 */
export const LLAMA3_STYLE_TEMPLATE = "{{ bos_token }}{% for message in messages %}" +
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + " +
  "'<|eot_id|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}" +
  "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}" +
  "{% endif %}";

/** Where the template is written. */
export type TemplatePlace = "jinja" | "json" | "config" | "list" | "none";

/** What a test needs to know about the written folder. */
export type ChatFolder = {
  vocab: string[];
  id(token: string): number;
  eosId: number;
  eotId: number;
  bosId: number;
};

/**
 * Writes the tokenizer into `dir` with its template at `place` (the list form: "default" is
 * {@link LLAMA3_STYLE_TEMPLATE}, "tool_use" a different one).
 */
export async function writeLlama3StyleTokenizer(
  dir: string,
  place: TemplatePlace,
  template = LLAMA3_STYLE_TEMPLATE,
): Promise<ChatFolder> {
  const info = await writeWordPieceTokenizer(dir, {
    specials: LLAMA3_SPECIALS,
    tokens: tinyVocab().slice(6),
    eos: "<|end_of_text|>",
    bos: "<|begin_of_text|>",
    pad: "<pad>",
    unk: "<unk>",
    chatTemplate: place === "config" ? template : undefined,
  });
  if (place === "jinja") await Deno.writeTextFile(join(dir, "chat_template.jinja"), template);
  if (place === "json") {
    await Deno.writeTextFile(
      join(dir, "chat_template.json"),
      JSON.stringify({ chat_template: template }, null, 2),
    );
  }
  if (place === "list") {
    const path = join(dir, "tokenizer_config.json");
    const config = JSON.parse(await Deno.readTextFile(path));
    config.chat_template = [
      { name: "tool_use", template: "{{ 'TOOLS' }}" },
      { name: "default", template },
    ];
    await Deno.writeTextFile(path, JSON.stringify(config, null, 2));
  }
  const id = (t: string) => {
    const i = info.vocab.indexOf(t);
    if (i < 0) throw new Error(`not in vocab: ${t}`);
    return i;
  };
  return { vocab: info.vocab, id, eosId: info.eosId, eotId: id("<|eot_id|>"), bosId: info.bosId! };
}
