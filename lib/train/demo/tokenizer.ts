/**
 * The demo's tokenizer: one token per word of the task ("sort", the digits, "="), with a chat template
 * that renders a prompt as `sort 3 1 4 1 =`.
 * @module
 */
import { writeWordPieceTokenizer } from "../../data/wordpiece.ts";

/** The template: the user's text, then " =" where the answer starts. */
export const DEMO_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ ' =' }}{% endif %}";

/** Writes the demo tokenizer into `dir`; returns its vocabulary size and special ids. */
export async function writeDemoTokenizer(dir: string) {
  const info = await writeWordPieceTokenizer(dir, {
    specials: ["<pad>", "<eos>", "<unk>"],
    tokens: ["sort", "=", ..."0123456789".split("")],
    eos: "<eos>",
    pad: "<pad>",
    unk: "<unk>",
    chatTemplate: DEMO_CHAT_TEMPLATE,
  });
  return { ...info, vocabSize: info.vocab.length };
}
