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
import { basename, join, resolve } from "node:path";
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
