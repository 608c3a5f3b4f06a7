/**
 * Exclusive locks on what a command writes (a run folder, an output file), so two runs never write the same
 * place: two `sample` runs on one file would interleave their rows, two `train` runs on one `--out` would
 * leave one's config beside the other's checkpoints.
 *
 * A lock is a file (`<output>.lock`, or `<folder>/.lock`) held with an advisory `flock` by an open handle.
 * The kernel releases it when the process ends however it ends (kill -9 included), so a lock left by a dead
 * process is never in force: the next run takes it over, and says whose it was. The file records the
 * holder (pid, host, command, start) so that a refused run can name it.
 *
 * ```ts
 * import { lockFile } from "./lock.ts";
 * const path = await Deno.makeTempFile();
 * await using lock = await lockFile(path);
 * // … write `path` …
 * ```
 * @module
 */
import { hostname } from "node:os";
import { withPath } from "./files.ts";

/** Who holds a lock, as its file records it. */
export type LockHolder = { pid: number; host: string; command: string; since: string };

/** Another process holds the lock: the message names it and what it writes. */
export class LockedError extends Error {
  override name = "LockedError";
  constructor(
    /** What the lock guards (the output file or the run folder). */
    readonly target: string,
    /** The holder, when its file could be read (it may be starting). */
    readonly holder: LockHolder | null,
  ) {
    super(
      `${target} is in use by another run (${describe(holder)}): two runs writing it would mix their ` +
        `results. Wait for it to end, stop it, or choose another output`,
    );
  }
}

function describe(h: LockHolder | null): string {
  if (!h) return "its process id is not recorded yet";
  const where = h.host && h.host !== hostname() ? ` on ${h.host}` : "";
  return `pid ${h.pid}${where}, \`${h.command}\`, since ${h.since}`;
}

/** A held lock: release it (or let `await using` do so) when the writing is done. */
export class Lock {
  #file: Deno.FsFile | null;

  /** @internal Made by {@link lockFile} and {@link lockFolder}. */
  constructor(readonly path: string, readonly target: string, file: Deno.FsFile) {
    this.#file = file;
  }

  /** Whether this lock is still held. */
  get held(): boolean {
    return this.#file !== null;
  }

  /**
   * Removes the lock file and lets go of the lock. The file goes first, while the lock is still held: a
   * process that opened it meanwhile finds, once it has the lock, that its file is no longer the one at the
   * path, and tries again on the new one.
   */
  async release(): Promise<void> {
    const f = this.#file;
    if (!f) return;
    this.#file = null;
    await Deno.remove(this.path).catch(() => {});
    f.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/** The lock of an output file: `<path>.lock` beside it. */
export function lockFile(path: string, o: LockOptions = {}): Promise<Lock> {
  return acquire(`${path}.lock`, path, o);
}

/** The lock of a folder (a run folder): `<dir>/.lock` inside it. The folder must exist. */
export function lockFolder(dir: string, o: LockOptions = {}): Promise<Lock> {
  return acquire(`${dir.replace(/\/+$/, "")}/.lock`, dir, o);
}

/** Options of {@link lockFile} and {@link lockFolder}. */
export type LockOptions = {
  /** Told when a lock left by a process that is gone is taken over. */
  log?: (line: string) => void;
  /** The command recorded as the holder's (default: this process's command line). */
  command?: string;
};

async function acquire(path: string, target: string, o: LockOptions): Promise<Lock> {
  for (let attempt = 0; attempt < 100; attempt++) {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { read: true, write: true, create: true });
    } catch (e) {
      throw withPath(e, path);
    }
    let mine = false;
    try {
      if (!(await f.tryLock(true))) throw new LockedError(target, await holderOf(path));
      // the holder before us may have removed the file between our open and our lock: ours must be the
      // file now at the path, else the lock guards nothing
      const [a, b] = [await f.stat(), await Deno.stat(path).catch(() => null)];
      if (!b || a.ino !== b.ino || a.dev !== b.dev) continue;
      const left = await readHolder(path);
      if (left && left.pid !== Deno.pid && o.log) {
        o.log(
          `note: took over the lock of ${target} left by pid ${left.pid} (${left.command}), no longer running`,
        );
      }
      const holder: LockHolder = {
        pid: Deno.pid,
        host: hostname(),
        command: o.command ?? commandLine(),
        since: new Date().toISOString(),
      };
      const bytes = new TextEncoder().encode(JSON.stringify(holder) + "\n");
      await f.truncate(0);
      await f.seek(0, Deno.SeekMode.Start);
      for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
      mine = true;
      return new Lock(path, target, f);
    } catch (e) {
      throw e instanceof LockedError ? e : withPath(e, path);
    } finally {
      if (!mine) f.close();
    }
  }
  throw new Error(`${path}: the lock file kept changing under this process; is something removing it?`);
}

/** The holder of a held lock: its record, waited for a moment when the holder has only just taken it. */
async function holderOf(path: string): Promise<LockHolder | null> {
  for (let i = 0; i < 50; i++) {
    const h = await readHolder(path);
    if (h) return h;
    await new Promise((r) => setTimeout(r, 20));
  }
  return null;
}

/** The holder a lock file records, or null (empty while its holder starts; not ours to judge otherwise). */
async function readHolder(path: string): Promise<LockHolder | null> {
  try {
    const v = JSON.parse(await Deno.readTextFile(path));
    return typeof v?.pid === "number" ? v as LockHolder : null;
  } catch {
    return null;
  }
}

/** This process's command, as `deno task <name> …` when it runs one of the entries. */
function commandLine(): string {
  const main = Deno.mainModule.match(/\/(train|sample|score|eval|serve)\/main\.ts$/)?.[1];
  const args = Deno.args.join(" ");
  const line = main ? `deno task ${main}${args ? ` ${args}` : ""}` : `deno ${Deno.mainModule}`;
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
