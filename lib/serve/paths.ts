/**
 * How the server names folders in what it sends: a web page or a client has no use for the machine's
 * absolute paths (they tell who runs it and how its disk is laid out), so by default a folder is shown
 * relative to the working directory when it lies inside it, else by its base name. `--expose-paths`
 * shows them as they are. Also scrubs absolute paths out of server-error messages.
 * @module
 */
import { basename, isAbsolute, relative, resolve } from "node:path";

/** Folder names as responses show them. */
export type PathView = {
  /** A folder as responses show it. */
  show(path: string): string;
  /** {@link show}, passing null through. */
  showOrNull(path: string | null): string | null;
  /** A JSON value (a run's config.json) with every absolute-path string shown as {@link show} does. */
  redact(value: unknown): unknown;
  /** A message with every absolute path in it replaced (known folders by their shown name). */
  scrub(text: string): string;
};

/** An absolute path of three segments or more in a message ("/home/me/runs"; not "/v1/chat/completions"). */
const ABSOLUTE_IN_TEXT = /(?<![\w.:/~-])\/(?!v1\/)(?:[^\s/'"`()<>,;]+\/){2,}[^\s/'"`()<>,;]*/g;

/**
 * The view for a server. `known`: folders whose shown names are worth keeping in scrubbed messages (the
 * model, run and reference folders); `cwd`: what paths are shown relative to.
 */
export function pathView(exposePaths: boolean, known: (string | null)[] = [], cwd = Deno.cwd()): PathView {
  const show = (path: string): string => {
    if (exposePaths) return path;
    const abs = resolve(cwd, path);
    const rel = relative(cwd, abs);
    if (rel === "") return ".";
    return rel.startsWith("..") || isAbsolute(rel) ? basename(abs) : rel;
  };
  const folders = known.filter((p): p is string => p !== null).map((p) => resolve(cwd, p))
    .sort((a, b) => b.length - a.length);
  const redact = (v: unknown): unknown => {
    if (exposePaths) return v;
    if (typeof v === "string") return isAbsolute(v) ? show(v) : v;
    if (Array.isArray(v)) return v.map(redact);
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redact(x)]));
    }
    return v;
  };
  return {
    show,
    showOrNull: (path) => path === null ? null : show(path),
    redact,
    scrub(text) {
      if (exposePaths) return text;
      let out = text;
      for (const f of folders) out = out.replaceAll(f, show(f));
      return out.replace(ABSOLUTE_IN_TEXT, (p) => `…/${basename(p)}`);
    },
  };
}
