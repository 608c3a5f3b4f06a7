/**
 * The tokenizer worker: turns request text into token ids off the HTTP thread. Tokenizing is synchronous
 * and takes about half a second per megabyte of text, so four large requests tokenized on the HTTP thread
 * held /health for seconds; here they only wait for each other. Runs the same {@link TextCodec} as the
 * HTTP thread (the training code's tokenization), one job at a time (tokens.ts sends them in turn).
 *
 * transformers.js decides at import whether it runs in a browser from `location`, which a Deno worker has
 * (with origin "null", which then fails to parse): the worker hides it before the library is first
 * imported (lazily, by `loadTokenizer`).
 *
 * Started by tokens.ts as `new Worker(new URL("./tokenizer_worker.ts", import.meta.url), {type: "module"})`.
 * @module
 */
import { TextCodec } from "../data/codec.ts";
import type { FromTokenizer, ToTokenizer } from "./tokens.ts";

Object.defineProperty(globalThis, "location", { value: undefined, configurable: true, writable: true });

type WorkerScope = {
  postMessage(message: FromTokenizer): void;
  onmessage: ((e: MessageEvent<ToTokenizer>) => void) | null;
};
const scope = self as unknown as WorkerScope;
const post = (m: FromTokenizer) => scope.postMessage(m);
let codec: TextCodec | undefined;

scope.onmessage = (e) => {
  const m = e.data;
  if (m.type === "load") {
    TextCodec.load(m.folder, m.generationEos, { log: () => {} }).then(
      (c) => {
        codec = c;
        post({ type: "loaded" });
      },
      (err) => post({ type: "load-failed", message: messageOf(err) }),
    );
    return;
  }
  if (!codec) {
    post({ type: "error", id: m.id, message: "the tokenizer is not loaded", template: false });
    return;
  }
  const job = m.job;
  let template = job.kind !== "texts";
  try {
    let ids: number[][];
    if (job.kind === "texts") ids = job.texts.map((t) => codec!.textPromptIds(t));
    else {
      const prompt = codec.chatPromptIds(job.messages, job.templateKwargs);
      template = false;
      ids = [prompt, ...codec.candidateIds(job.messages, job.candidates ?? [], job.templateKwargs)];
    }
    post({ type: "result", id: m.id, ids });
  } catch (err) {
    post({ type: "error", id: m.id, message: messageOf(err), template });
  }
};

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
