/**
 * Digests of what a run trains on, stored with every checkpoint so that `--resume` notices when the data or
 * a model changed since: a resumed run on shuffled rows or edited rewards would otherwise continue silently
 * on other examples, in another order, against log-probs of another reference.
 *
 * The data's digest is over the examples as the loss sees them (token ids, rewards, soft labels; after
 * shaping, the held-out split and tokenization), so a field the run does not read may change freely. It
 * has three parts that tell what changed: the examples in order, the same without their order, and the same
 * without their rewards. A model's digest is the SHA-256 of its config.json and weight files, each file's
 * hash kept with its size, modification time and inode so a resume hashes only files that changed.
 *
 * ```ts
 * import { compareData, dataDigest } from "./inputs_digest.ts";
 * const ex = { promptIds: [1, 2], responseIds: [[3], [4]], rewards: [1, 0], labels: [0.73, 0.27] };
 * const a = dataDigest([ex], []), b = dataDigest([{ ...ex, rewards: [2, 0] }], []);
 * console.log(compareData(a, b)); // ["rewards edited: the same prompts and responses with other rewards"]
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { basename, join, resolve } from "node:path";
import { sha256File } from "./checkpoint.ts";
import type { PreparedExample } from "./prepare.ts";

/** The digest of a run's examples. */
export type DataDigest = {
  /** Prompts in each split. */
  train: number;
  eval: number;
  /** The training examples in order, then the held-out ones: equal means the run sees the same data. */
  ordered: string;
  /** Every example (both splits) without its order: equal while `ordered` differs means rows moved. */
  unordered: string;
  /** {@link unordered} without rewards and labels: equal while that differs means rewards were edited. */
  texts: string;
};

/** The digest of a model folder: its config and weight files. */
export type FolderDigest = {
  /** The folder, resolved. */
  path: string;
  /** SHA-256 over the files' names and hashes. */
  sha256: string;
  /** Each file's hash, with what tells that it has not changed since. */
  files: Record<string, FileDigest>;
};

/** A file's hash and its size, modification time and inode when hashed. */
export type FileDigest = { bytes: number; mtimeMs: number; ino: number; sha256: string };

/** What a checkpoint records of its run's inputs. */
export type InputsDigest = { data: DataDigest; model: FolderDigest; reference?: FolderDigest };

const hex = (h: ReturnType<typeof createHash>) => h.digest("hex");

function exampleHash(ex: PreparedExample, withRewards: boolean): bigint {
  const h = createHash("sha256");
  const ints = (xs: readonly number[]) => h.update(new Uint8Array(Int32Array.from(xs).buffer));
  ints([ex.promptIds.length]);
  ints(ex.promptIds);
  // without rewards the responses' order (best first) means nothing: each response is hashed apart and
  // the hashes are sorted
  const responses = ex.responseIds.map((r) => {
    const rh = createHash("sha256");
    rh.update(new Uint8Array(Int32Array.from([r.length, ...r]).buffer));
    return rh.digest("hex");
  });
  h.update((withRewards ? responses : [...responses].sort()).join(","));
  if (withRewards) {
    h.update(new Uint8Array(Float64Array.from(ex.rewards ?? []).buffer));
    h.update(new Uint8Array(Float64Array.from(ex.labels ?? []).buffer));
  }
  return BigInt(`0x${h.digest("hex").slice(0, 16)}`);
}

/** Sums of 64-bit example hashes: the same whatever the order. */
function multiset(hashes: bigint[]): string {
  let sum = 0n;
  for (const x of hashes) sum = (sum + x) & 0xffffffffffffffffn;
  return `${hashes.length}:${sum.toString(16).padStart(16, "0")}`;
}

/** The digest of a run's training and held-out examples. */
export function dataDigest(train: readonly PreparedExample[], held: readonly PreparedExample[]): DataDigest {
  const all = [...train, ...held];
  const full = all.map((ex) => exampleHash(ex, true));
  const ordered = createHash("sha256");
  ordered.update(`${train.length}/${held.length}:`);
  for (const x of full) ordered.update(x.toString(16));
  return {
    train: train.length,
    eval: held.length,
    ordered: hex(ordered),
    unordered: multiset(full),
    texts: multiset(all.map((ex) => exampleHash(ex, false))),
  };
}

/** How the data changed from `then` to `now`, in words; empty when it did not. */
export function compareData(then: DataDigest, now: DataDigest): string[] {
  if (then.ordered === now.ordered) return [];
  const counts = then.train === now.train && then.eval === now.eval
    ? ""
    : ` (${then.train} training / ${then.eval} held-out prompts then, ${now.train} / ${now.eval} now)`;
  if (then.unordered === now.unordered) {
    return [`rows reordered: the same examples in another order, so other batches${counts}`];
  }
  if (then.texts === now.texts) {
    return [`rewards edited: the same prompts and responses with other rewards${counts}`];
  }
  return [`other examples: prompts or responses added, removed or edited${counts}`];
}

/** How a model folder changed from `then` to `now`, in words (`what`: "the model"); empty when it did not. */
export function compareFolder(what: string, then: FolderDigest, now: FolderDigest): string[] {
  if (then.sha256 === now.sha256) return [];
  const names = [...new Set([...Object.keys(then.files), ...Object.keys(now.files)])].sort();
  const changed = names.filter((n) => then.files[n]?.sha256 !== now.files[n]?.sha256);
  const moved = resolve(then.path) === resolve(now.path) ? "" : ` (it was ${then.path}, it is ${now.path})`;
  return [`${what}'s files changed: ${changed.join(", ")}${moved}`];
}

/**
 * The digest of a model folder's `config.json` and `weightFiles` (paths inside it). `known` is an earlier
 * digest: a file whose size, modification time and inode are unchanged keeps its recorded hash.
 */
export async function folderDigest(
  dir: string,
  weightFiles: Iterable<string>,
  known?: FolderDigest,
): Promise<FolderDigest> {
  const paths = [join(dir, "config.json"), ...new Set(weightFiles)];
  const files: Record<string, FileDigest> = {};
  for (const path of paths.sort()) {
    const name = basename(path);
    const st = await Deno.stat(path);
    const stat = { bytes: st.size, mtimeMs: st.mtime?.getTime() ?? 0, ino: st.ino ?? 0 };
    const old = known?.files[name];
    const same = old && old.bytes === stat.bytes && old.mtimeMs === stat.mtimeMs && old.ino === stat.ino;
    files[name] = { ...stat, sha256: same ? old.sha256 : await sha256File(path) };
  }
  const h = createHash("sha256");
  for (const [name, f] of Object.entries(files)) h.update(`${name}\u0000${f.sha256}\n`);
  return { path: resolve(dir), sha256: hex(h), files };
}
