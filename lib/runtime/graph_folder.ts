/**
 * Folders ONNX Runtime loads graphs from when their weights stay in the model's own files.
 *
 * A frozen weight is an ONNX external-data entry (location, offset, length) pointing straight into a
 * safetensors file, so neither JavaScript nor the protobuf (which stops at 2 GB) ever holds it. ONNX Runtime
 * resolves a location relative to the model file's folder and refuses one that leaves it, symbolic links
 * included (it resolves their targets; measured with 1.29). So each weight file is hard-linked into the
 * graph folder, which costs nothing on the same filesystem, and copied only where no link can be made
 * (another filesystem), with a notice. Several graphs of a run share one folder and one set of links.
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import type { Graph } from "../graph/ir.ts";
import { serializeModel, type SerializeOptions } from "../graph/serialize.ts";
import { linkOrCopy } from "../files.ts";

/** A folder holding graph files and links to the weight files they read. */
export class GraphFolder {
  /** Link name by the real path of each weight file linked so far. */
  readonly #links = new Map<string, string>();
  /** Graph files written here. */
  readonly #graphs = new Set<string>();

  private constructor(
    /** The folder, absolute. */
    readonly dir: string,
    /** Whether {@link remove} deletes the folder itself (it was made for this use). */
    private readonly owned: boolean,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Opens (creating it when missing) a graph folder at `dir`, or a fresh temporary one. `log` receives the
   * notice when a weight file has to be copied rather than linked.
   */
  static async open(dir?: string, log: (line: string) => void = console.error): Promise<GraphFolder> {
    if (dir === undefined) {
      return new GraphFolder(await Deno.makeTempDir({ prefix: "nca-graphs-" }), true, log);
    }
    const abs = resolve(dir);
    const made = !(await Deno.stat(abs).then(() => true, () => false));
    await Deno.mkdir(abs, { recursive: true });
    return new GraphFolder(abs, made, log);
  }

  /**
   * A fresh folder of its own (removed with {@link remove}) for graphs reading `weightFile` (any of a
   * model's weight files): under the first of `parents`, the system's temporary folder and the weight file's
   * own folder that is on that file's filesystem (a hard link cannot cross filesystems, and a copy of big
   * weights would be slow); the system's temporary folder when none is. Its name carries this process's id,
   * so a folder a killed run left behind (SIGKILL runs no cleanup) is removed by the next run that looks
   * there.
   */
  static async temporary(
    o: { weightFile?: string; parents?: readonly string[]; log?: (line: string) => void } = {},
  ): Promise<GraphFolder> {
    const weightDev = o.weightFile ? (await Deno.stat(await Deno.realPath(o.weightFile))).dev : undefined;
    const name = `${GRAPHS_PREFIX}${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    const probe = await Deno.makeTempDir({ prefix: "nca-probe-" });
    await Deno.remove(probe);
    const system = dirname(probe);
    const candidates = [...(o.parents ?? []), system, ...(o.weightFile ? [dirname(o.weightFile)] : [])];
    let path = join(system, name);
    for (const parent of candidates) {
      try {
        const st = await Deno.stat(parent);
        if (!st.isDirectory || (weightDev !== undefined && st.dev !== weightDev)) continue;
        await removeStaleGraphFolders(parent);
        const p = join(parent, name);
        await Deno.mkdir(p); // writable?
        await Deno.remove(p);
        path = p;
        break;
      } catch {
        // not writable, or gone: the next one
      }
    }
    return await GraphFolder.open(path, o.log);
  }

  /** The location under which graphs in this folder reach `file` (linked or copied in on first use). */
  async locate(file: string): Promise<string> {
    const real = await Deno.realPath(file);
    const known = this.#links.get(real);
    if (known) return known;
    const name = `w${this.#links.size}-${basename(real)}`;
    const target = join(this.dir, name);
    await Deno.remove(target).catch(() => {});
    if (await linkOrCopy(real, target) === "copied") {
      const size = (await Deno.stat(real)).size;
      this.log(
        `${real} cannot be hard-linked into ${this.dir}: copied it (${(size / 2 ** 30).toFixed(2)} GiB). ` +
          `A run folder on the model's filesystem avoids the copy.`,
      );
    }
    this.#links.set(real, name);
    return name;
  }

  /** Writes `graph` as `<name>.onnx`, its external tensors located through this folder. Returns the path. */
  async write(name: string, graph: Graph, opts: SerializeOptions = {}): Promise<string> {
    const locations = new Map<string, string>();
    for (const file of externalFiles(graph)) locations.set(file, await this.locate(file));
    const model = serializeModel(graph, { ...opts, locate: (f) => locations.get(f)! });
    const path = join(this.dir, `${name}.onnx`);
    if (model.externalData) {
      const blob = join(this.dir, model.externalData.path);
      await Deno.writeFile(blob, model.externalData.data);
      this.#graphs.add(blob);
    }
    await Deno.writeFile(path, model.model);
    this.#graphs.add(path);
    return path;
  }

  /**
   * Deletes what was written here: the graphs and the links (the folder too when it was made here). The
   * weight files themselves stay where they are.
   */
  async remove(): Promise<void> {
    if (this.owned) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    else {
      const names = [...this.#graphs, ...[...this.#links.values()].map((n) => join(this.dir, n))];
      for (const path of names) await Deno.remove(path).catch(() => {});
    }
    this.#links.clear();
    this.#graphs.clear();
  }
}

/** Temporary graph folders are named `<prefix><pid>-<random>`, so a later run can tell dead ones. */
export const GRAPHS_PREFIX = ".nca-graphs-";

/**
 * Removes the graph folders in `parent` whose process is gone (a run killed with SIGKILL leaves its folder of
 * hard links behind). A folder whose process cannot be looked up is kept; nothing here stops a run.
 */
export async function removeStaleGraphFolders(parent: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(parent)) {
      const pid = e.isDirectory && e.name.startsWith(GRAPHS_PREFIX)
        ? Number(e.name.slice(GRAPHS_PREFIX.length).split("-")[0])
        : NaN;
      if (!Number.isSafeInteger(pid) || pid === Deno.pid || await processAlive(pid) !== false) continue;
      await Deno.remove(join(parent, e.name), { recursive: true }).catch(() => {});
    }
  } catch {
    // an unreadable folder: nothing to clean
  }
}

/**
 * Whether process `pid` runs: /proc where Deno may read it (it asks for --allow-all there), else `ps -p`;
 * undefined when neither can tell.
 */
export async function processAlive(pid: number): Promise<boolean | undefined> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
  }
  try {
    const r = await new Deno.Command("ps", { args: ["-p", String(pid)], stdout: "null", stderr: "null" })
      .output();
    return r.code === 0;
  } catch {
    return undefined;
  }
}

/** The files a graph's external tensors live in (nested graphs included), each once. */
export function externalFiles(graph: Graph): string[] {
  const files = new Set<string>();
  const visit = (g: Graph) => {
    for (const t of g.initializers) if (t.external) files.add(t.external.file);
    for (const n of g.nodes) {
      for (const a of Object.values(n.attrs)) if (a.type === "graph") visit(a.value);
    }
  };
  visit(graph);
  return [...files];
}
