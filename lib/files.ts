/**
 * File helpers shared by every module that writes results a crash must not corrupt (checkpoints, model
 * folders, run folders, logs) or looks for files: atomic writes (temporary sibling, fsync, rename) and
 * existence checks that tell "missing" from other errors.
 * @module
 */

/** A temporary sibling path, so a rename can publish the file atomically on the same filesystem. */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Write bytes produced by `fill` to `path` atomically: into `path.tmp-<random>`, fsync, then rename, so a
 * crash never leaves a half-written file under the real name.
 */
export async function writeFileAtomic(path: string, fill: (f: Deno.FsFile) => Promise<void>): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    {
      using f = await Deno.open(tmp, { write: true, createNew: true });
      await fill(f);
      await f.sync();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw withPath(e, path);
  }
}

/**
 * The error with the path it concerns in its message: Deno's I/O errors ("No space left on device (os
 * error 28)") name none. Keeps the error's class, so callers can still test for `Deno.errors.…`.
 */
export function withPath(e: unknown, path: string): unknown {
  if (!(e instanceof Error) || e.message.includes(path)) return e;
  e.message = `${path}: ${e.message}`;
  return e;
}

/**
 * Publishes a folder atomically: `fill(tmp)` writes it as a temporary sibling, which then replaces `path`
 * (the old folder, if any, moved aside and removed), so a crash or a full disk leaves either the old
 * folder or the new one, never a half-written one under the real name.
 */
export async function writeFolderAtomic(path: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    await Deno.mkdir(tmp, { recursive: true });
    await fill(tmp);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  const old = (await exists(path)) ? tempPathFor(`${path}.old`) : undefined;
  if (old) await Deno.rename(path, old);
  await Deno.rename(tmp, path);
  if (old) await Deno.remove(old, { recursive: true }).catch(() => {});
}

/** Writes a text file atomically. */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await writeFileAtomic(path, async (f) => {
    let off = 0;
    while (off < bytes.length) off += await f.write(bytes.subarray(off));
  });
}

/** Writes `value` as indented JSON (with a final newline) atomically. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeTextAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

/**
 * A JSON object file, or null when the file does not exist; invalid JSON or another kind of value is an
 * error naming the file.
 */
export async function readJsonObject(path: string): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw withPath(e, path);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${path}: not a JSON object`);
  return v as Record<string, unknown>;
}

/** Whether `path` exists; errors other than "not found" (permissions, …) are thrown. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Whether `path` is a regular file; errors other than "not found" are thrown. */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Whether `path` exists (synchronous, any error counts as missing: for probing library folders). */
export function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes `to` a hard link of `from` (free on the same filesystem), or a copy where no link can be made
 * (another filesystem, or one without links). Says which.
 */
export async function linkOrCopy(from: string, to: string): Promise<"linked" | "copied"> {
  try {
    await Deno.link(from, to);
    return "linked";
  } catch {
    await Deno.copyFile(from, to);
    return "copied";
  }
}
