/**
 * The model worker: runs generation and log-prob scoring off the HTTP thread. onnxruntime-node's
 * `session.run` blocks the thread that calls it for the whole run, so the server keeps its event loop free
 * (health checks, new connections, streaming writes) by running every session here.
 *
 * Jobs interleave: each generation step is one awaited `run`, so the messages that arrive between steps
 * (a new job, a stop, an abort) are handled at the next step boundary: an abort sets the job's cancel flag,
 * the generation loop sees it before its next decode step, and the job's "done" is the acknowledgement the
 * HTTP thread waits for before it gives the request's slot to the next one. The generation session is loaded at
 * start (lib/model/open.ts' `openGenerator`: the exported decoder, or a plain folder's built at load), with
 * the small graph that chooses tokens inside ONNX Runtime (lib/model/graph_sampler.ts: only token ids come
 * back per step; a request with a repetition penalty or top_logprobs is sampled in JavaScript, which needs
 * the logits); the scoring graphs (policy and reference, `openScorer`) are built on first use, so a server
 * that only chats never holds a second copy of the weights.
 *
 * Started by engine.ts as `new Worker(new URL("./worker.ts", import.meta.url), {type: "module"})`.
 * @module
 */
import { resolve } from "node:path";
import { makeBatch } from "../data/batch.ts";
import { generate } from "../model/generate.ts";
import { GraphSampler } from "../model/graph_sampler.ts";
import { loadModelFolder } from "../model/model_folder.ts";
import { type Generator, openGenerator, openScorer, type ScoringModel } from "../model/open.ts";
import { GraphFolder } from "../runtime/graph_folder.ts";
import { headChunk } from "../train/memory.ts";
import type {
  FromWorker,
  GenerateRequest,
  LoadRequest,
  RowFinish,
  ScoreRequest,
  ScoringModel as ScoringModelName,
  ToWorker,
} from "./protocol.ts";

type WorkerScope = {
  postMessage(message: FromWorker): void;
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
};
const scope = self as unknown as WorkerScope;
const post = (m: FromWorker) => scope.postMessage(m);

let config: LoadRequest | undefined;
let generator: Generator | undefined;
let sampler: GraphSampler | undefined;
let graphs: GraphFolder | undefined;
const scorers = new Map<string, Promise<ScoringModel>>();
const jobs = new Map<number, { abort: AbortController; stopped: Set<number> }>();

scope.onmessage = (e) => {
  const m = e.data;
  switch (m.type) {
    case "load":
      load(m).catch((err) => post({ type: "load-failed", message: messageOf(err) }));
      break;
    case "generate":
      runGeneration(m).catch((err) => post({ type: "failed", id: m.id, message: messageOf(err) }));
      break;
    case "score":
      runScoring(m).catch((err) => post({ type: "failed", id: m.id, message: messageOf(err) }));
      break;
    case "stop-row":
      jobs.get(m.id)?.stopped.add(m.row);
      break;
    case "abort":
      jobs.get(m.id)?.abort.abort();
      break;
  }
};

async function load(m: LoadRequest): Promise<void> {
  config = m;
  graphs = await GraphFolder.open(m.graphDir);
  const t0 = performance.now();
  // bf16/fp16 weights are cast to fp32 once at load when that copy fits (see `foldingPays`)
  generator = await openGenerator(m.policyDir, {
    device: m.device,
    threads: m.threads,
    foldWeights: "auto",
    // a plain folder's decoder graph goes in the engine's graph folder, which the engine removes at close
    graphParents: [m.graphDir],
  });
  sampler = await GraphSampler.beside(generator.session);
  post({ type: "loaded", generationMs: performance.now() - t0 });
}

async function runGeneration(m: GenerateRequest): Promise<void> {
  if (!generator) throw new Error("the model worker has not loaded a model yet");
  const session = generator.session;
  const job = { abort: new AbortController(), stopped: new Set<number>() };
  jobs.set(m.id, job);
  // every row in one batch (the `n` choices, a list of prompts): one decode step serves them all; each row
  // samples from its own seed, so it draws what it would alone
  const done = new Set<number>();
  try {
    const { rows } = await generate(session, m.prompts, {
      maxNewTokens: m.maxNewTokens,
      eosTokenIds: m.eosTokenIds,
      temperature: m.temperature,
      topP: m.topP,
      topK: m.topK,
      repetitionPenalty: m.repetitionPenalty,
      seeds: m.seeds,
      topLogprobs: m.topLogprobs,
      padTokenId: m.padTokenId,
      sampler,
      signal: job.abort.signal,
      stop: (_tokens, row) => job.stopped.has(row),
      onToken: (_step, _tokens, choices, finished) => {
        choices.forEach((c, row) => {
          if (!c) return;
          post({
            type: "token",
            id: m.id,
            row,
            token: c.token,
            logprob: c.logprob,
            ...(c.top ? { top: c.top.map((t) => [t.token, t.logprob] as [number, number]) } : {}),
          });
        });
        finished.forEach((f, row) => {
          if (!f) return;
          done.add(row);
          post({ type: "row-done", id: m.id, row, finishReason: f as RowFinish });
        });
      },
    });
    rows.forEach((r, row) => {
      if (!done.has(row)) {
        post({ type: "row-done", id: m.id, row, finishReason: r.stopReason as RowFinish });
      }
    });
    post({ type: "done", id: m.id });
  } finally {
    jobs.delete(m.id);
  }
}

/** The scoring session of a model folder, built once (the policy and reference share it when the same). */
function scorer(which: ScoringModelName): Promise<ScoringModel> {
  if (!config) throw new Error("the model worker has not loaded a model yet");
  const dir = which === "policy" ? config.policyDir : config.referenceDir;
  if (!dir) throw new Error("the server has no reference model (start it with --reference <folder>)");
  const key = resolve(dir);
  let s = scorers.get(key);
  if (!s) {
    const { device, threads } = config;
    s = (async () => {
      const folder = await loadModelFolder(key);
      return await openScorer(folder, {
        device,
        threads,
        graphs,
        graphName: which,
        // scoring requests are one prompt with up to 16 candidates: the head in blocks past a 4k-token batch
        chunk: headChunk(folder.config, 4096),
        // a forward pass per request: the arena would keep each scorer's peak for the server's lifetime
        // (TinyLlama-1.1B, policy and reference scorers: 9.7 GiB peak with it, 7.0 without)
        memoryArena: false,
      });
    })();
    s.catch(() => scorers.delete(key)); // a failed load is retried by the next request
    scorers.set(key, s);
  }
  return s;
}

async function runScoring(m: ScoreRequest): Promise<void> {
  const session = await scorer(m.model);
  const batch = makeBatch([{ promptIds: m.promptIds, responseIds: m.responseIds }], {
    padId: m.padTokenId,
  });
  const dims = [batch.prompts * batch.k, batch.width];
  const out = await session.run({
    input_ids: { dtype: "int32", dims, data: batch.inputIds },
    attention_mask: { dtype: "int32", dims, data: batch.attentionMask },
    labels: { dtype: "int32", dims, data: batch.labels },
  }, ["logps", "token_logps"]);
  const tokenLogps = out.token_logps.data as Float32Array;
  const sums = out.logps.data as Float32Array;
  const cols = batch.width - 1;
  const p = m.promptIds.length;
  // token_logps[row, t] is the log-prob of the token at t + 1: response token j sits at p + j.
  const tokenLogprobs = m.responseIds.map((r, row) => r.map((_, j) => tokenLogps[row * cols + p + j - 1]));
  post({ type: "scored", id: m.id, tokenLogprobs, sums: [...sums] });
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
