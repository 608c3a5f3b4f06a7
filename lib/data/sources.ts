/**
 * From the path a user passes to the list of files to read: a file, a folder of files, a glob
 * (`data/*.parquet`, `shards/**\/*.jsonl.gz`), or a dataset folder in the Hugging Face Hub's split layout
 * (`data/train-00000-of-00002.parquet`, `data/test_prefs-00000-of-00001.parquet`, or `train/…` folders),
 * where the training (or evaluation) split is picked and the others are named, never mixed in. Files are
 * always in one order (natural sort: `shard-2` before `shard-10`), so a run reads its data the same way
 * every time, and its cached reference log-probs stay valid.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { DATA_EXTENSIONS, dataExtension } from "./records.ts";

/** Which split of a Hub layout folder a caller wants. */
export type SplitRole = "train" | "eval";

/** Options for {@link resolveDataFiles}. */
export type DataResolveOptions = {
  /** `train` (default) picks `train`, `train_prefs`…; `eval` picks `test`, `validation`, `test_prefs`…. */
  role?: SplitRole;
};

/** One split of a Hub layout folder. */
export type SplitFiles = {
  name: string;
  files: string[];
  /** A glob (or the file) that names just this split, for messages. */
  pattern: string;
};

/** What a data path stands for. */
export type DataFiles = {
  /** The path as given. */
  source: string;
  /** The files to read, in order. */
  files: string[];
  /** The split read, when the path is a folder in the Hub's split layout. */
  split?: string;
  /** That folder's other splits, not read. */
  otherSplits: SplitFiles[];
  /** Data files in that folder that belong to no split, not read. */
  unsplit: string[];
};

/** Hub metadata that sits beside the data files and is not data. */
const METADATA_FILES = new Set([
  "dataset_infos.json",
  "dataset_info.json",
  "dataset_dict.json",
  "state.json",
]);

/** `<split>-00000-of-00002`: the Hub's (and `datasets`' `push_to_hub`) shard names. */
const SHARD = /^(.+?)-\d+-of-\d+$/;
/** Folder and file names the Hub reads as splits (`train`, `test_prefs`, `validation`…). */
const SPLIT_WORD = /^(?:train|training|test|testing|eval|evaluation|valid|validation|val|dev)(?:[_-]\w+)?$/i;
const TRAIN_EXACT = /^train(?:ing)?$/i;
const TRAIN_PREFIX = /^train/i;
const EVAL_EXACT = /^(?:test|testing|eval|evaluation|valid|validation|val|dev)$/i;
const EVAL_PREFIX = /^(?:test|eval|valid|val|dev)/i;

const GLOB_CHARS = /[*?]/;

/**
 * Expand a data path into files. A file is taken as it is (its extension is checked when it is read); a
 * folder gives its data files (recursively, hidden entries and Hub metadata left out), or one split of
 * them when it has the Hub's split layout; a glob gives the data files it matches (`*` and `?` within a
 * name, `**` across folders; hidden names only when the pattern spells the dot).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * const root = await Deno.makeTempDir(); // a folder in the Hub's layout, as ultrafeedback_binarized has
 * await Deno.mkdir(join(root, "data"));
 * for (const name of ["train_prefs-00000-of-00001", "test_prefs-00000-of-00001"]) {
 *   await Deno.writeTextFile(join(root, "data", `${name}.jsonl`), "{}\n");
 * }
 * const { files, split } = await resolveDataFiles(root);
 * assert.equal(split, "train_prefs"); // the one train* split; test_prefs is named in otherSplits, not read
 * assert.equal(files.length, 1);
 * assert.equal((await resolveDataFiles(join(root, "data/*.jsonl"))).files.length, 2); // a glob: both
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function resolveDataFiles(path: string, opts: DataResolveOptions = {}): Promise<DataFiles> {
  const none = { source: path, otherSplits: [], unsplit: [] };
  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (info === undefined) {
    // a name that exists is taken as it is, even with a `?` in it
    if (GLOB_CHARS.test(path)) return { ...none, files: await expandGlob(path) };
    throw new Error(`${path}: no such file or folder`);
  }
  if (!info.isDirectory) return { ...none, files: [path] };
  return await folderFiles(path, opts.role ?? "train");
}

/** A natural order: digit runs compare as numbers, so `shard-2` sorts before `shard-10`. */
export function naturalCompare(a: string, b: string): number {
  const x = a.split(/(\d+)/), y = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] === y[i]) continue;
    if (i % 2 === 1) {
      const d = Number(x[i]) - Number(y[i]);
      if (d !== 0) return d;
    }
    return x[i] < y[i] ? -1 : 1;
  }
  return x.length - y.length;
}

/**
 * A glob as a regular expression over `/`-separated relative paths. `*` and `?` stay within a name and
 * do not match a leading dot; a `**` segment matches any number of folders.
 */
export function globRegExp(pattern: string): RegExp {
  const segments = pattern.split("/");
  const body = segments.map((seg, i) => {
    const last = i === segments.length - 1;
    if (seg === "**") return last ? ".*" : "(?:[^/]*/)*";
    const re = seg.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", "[^/]*").replaceAll("?", "[^/]");
    return (/^[*?]/.test(seg) ? "(?!\\.)" : "") + re + (last ? "" : "/");
  });
  return new RegExp(`^${body.join("")}$`);
}

async function expandGlob(pattern: string): Promise<string[]> {
  const normalized = Deno.build.os === "windows" ? pattern.replaceAll("\\", "/") : pattern;
  const segments = normalized.split("/");
  const firstGlob = segments.findIndex((s) => GLOB_CHARS.test(s));
  const base = segments.slice(0, firstGlob).join("/") || (normalized.startsWith("/") ? "/" : ".");
  const rest = segments.slice(firstGlob);
  const re = globRegExp(rest.join("/"));
  const depth = rest.includes("**") ? Infinity : rest.length;
  const matched: string[] = [];
  const other: string[] = [];
  for (const rel of await walk(base, depth, rest.some((s) => s.startsWith(".")))) {
    if (!re.test(rel)) continue;
    (dataExtension(rel) ? matched : other).push(base === "." ? rel : join(base, rel));
  }
  if (matched.length === 0) {
    const others = other.length
      ? ` (it matches ${other.length} file(s) of other types, e.g. ${other[0]}; ` +
        `data files end in ${DATA_EXTENSIONS.join(", ")})`
      : "";
    throw new Error(`${pattern}: no data files match${others}`);
  }
  return matched.sort(naturalCompare);
}

/**
 * Files under `dir` (following symbolic links, as a Hugging Face cache's snapshot folders need), as
 * `/`-separated paths relative to it, at most `depth` names deep. Hidden names are left out unless asked.
 */
async function walk(dir: string, depth: number, hidden = false): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string, level: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(rel ? join(dir, rel) : dir));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound && rel === "") return;
      throw e;
    }
    for (const entry of entries) {
      if (entry.name.startsWith(".") && !hidden) continue;
      const childRel = rel ? `${rel}/${entry.name}` : entry.name;
      let { isFile, isDirectory } = entry;
      if (entry.isSymlink) {
        try {
          ({ isFile, isDirectory } = await Deno.stat(join(dir, childRel)));
        } catch {
          continue; // a broken link
        }
      }
      if (isFile) out.push(childRel);
      else if (isDirectory && level + 1 < Math.min(depth, 32)) await visit(childRel, level + 1);
    }
  };
  await visit("", 0);
  return out;
}

/** The split a file belongs to (by shard name, split folder or split-named file), or undefined. */
function splitOf(rel: string): { name: string; home: string } | undefined {
  const parts = rel.split("/");
  const file = parts.pop()!;
  const stem = file.slice(0, file.length - (dataExtension(file)?.length ?? 0));
  const shard = SHARD.exec(stem);
  if (shard) return { name: shard[1], home: parts.join("/") };
  for (let i = parts.length - 1; i >= 0; i--) {
    if (SPLIT_WORD.test(parts[i])) return { name: parts[i], home: parts.slice(0, i).join("/") };
  }
  if (SPLIT_WORD.test(stem)) return { name: stem, home: parts.join("/") };
  return undefined;
}

async function folderFiles(dir: string, role: SplitRole): Promise<DataFiles> {
  const all = (await walk(dir, Infinity)).sort(naturalCompare);
  const data = all.filter((rel) => dataExtension(rel) && !METADATA_FILES.has(rel.split("/").pop()!));
  if (data.length === 0) {
    const arrow = all.some((rel) => rel.endsWith(".arrow"));
    throw new Error(
      `${dir}: no data files in the folder (expected ${DATA_EXTENSIONS.join(", ")})` +
        (arrow
          ? "; its .arrow files look like `save_to_disk` output: write the data with to_json or to_parquet"
          : ""),
    );
  }
  const path = (rel: string) => join(dir, rel);
  const splits = new Map<string, { files: string[]; homes: Set<string> }>();
  const unsplit: string[] = [];
  for (const rel of data) {
    const s = splitOf(rel);
    if (!s) {
      unsplit.push(path(rel));
      continue;
    }
    const entry = splits.get(s.name) ?? { files: [], homes: new Set() };
    entry.files.push(path(rel));
    entry.homes.add(s.home);
    splits.set(s.name, entry);
  }
  if (splits.size === 0) return { source: dir, files: data.map(path), otherSplits: [], unsplit: [] };

  const list: SplitFiles[] = [...splits].sort(([a], [b]) => naturalCompare(a, b))
    .map(([name, s]) => ({ name, files: s.files, pattern: splitPattern(name, s.files) }));
  const name = pickSplit(list.map((s) => s.name), role);
  if (name === undefined) {
    const which = role === "train" ? "training" : "evaluation";
    const listed = list.map((s) => `${s.name} (${s.files.length} file${s.files.length === 1 ? "" : "s"})`);
    const example = list.find((s) => (role === "train" ? TRAIN_PREFIX : EVAL_PREFIX).test(s.name)) ?? list[0];
    throw new Error(
      `${dir}: cannot tell which split is the ${which} one; the folder has the splits ${
        listed.join(", ")
      }. ` +
        `Pass one split's files, e.g. "${example.pattern}"`,
    );
  }
  const homes = splits.get(name)!.homes;
  if (homes.size > 1) {
    const folders = [...homes].map((h) => join(dir, h)).sort(naturalCompare);
    throw new Error(
      `${dir}: the ${name} split is in several folders (${folders.join(", ")}), ` +
        `which look like separate configurations; pass one of them`,
    );
  }
  return {
    source: dir,
    files: splits.get(name)!.files,
    split: name,
    otherSplits: list.filter((s) => s.name !== name),
    unsplit,
  };
}

/** The split for a role: an exact name (`train`), else the only one with the prefix (`train_prefs`). */
function pickSplit(names: string[], role: SplitRole): string | undefined {
  const [exact, prefix, other] = role === "train"
    ? [TRAIN_EXACT, TRAIN_PREFIX, EVAL_PREFIX]
    : [EVAL_EXACT, EVAL_PREFIX, TRAIN_PREFIX];
  for (const re of [exact, prefix]) {
    const found = names.filter((n) => re.test(n));
    if (found.length === 1) return found[0];
    if (found.length > 1) return undefined;
  }
  // one split with a neutral name is the data; never train on the test split, nor evaluate on train
  return names.length === 1 && !other.test(names[0]) ? names[0] : undefined;
}

/** A glob that names one split's files: `dir/data/train-*.parquet`, or the file when there is one. */
function splitPattern(name: string, files: string[]): string {
  if (files.length === 1) return files[0];
  const dirs = new Set(files.map((f) => dirname(f)));
  const exts = new Set(files.map((f) => dataExtension(f)));
  const ext = exts.size === 1 ? [...exts][0] : "";
  if (dirs.size === 1) {
    const d = [...dirs][0];
    const sharded = files.every((f) =>
      SHARD.test(f.slice(d.length + 1, f.length - (dataExtension(f)?.length ?? 0)))
    );
    return sharded ? join(d, `${name}-*${ext}`) : join(d, `*${ext}`);
  }
  return files[0];
}
