/**
 * `--help` from an option table: sections in the order of their first option, each option's flags (TRL's
 * names too), placeholder, description and default, wrapped to 100 columns.
 * @module
 */
import type { OptionSpec } from "./spec.ts";
import { tableOf, trlNames } from "./options.ts";

/** How a default reads in `--help`: `5e-6` rather than `0.000005`; undefined when none is shown. */
export function formatDefault<O>(spec: OptionSpec<O>): string | undefined {
  if (spec.defaultText !== undefined) return spec.defaultText === "" ? undefined : spec.defaultText;
  const v = spec.default;
  if (v === undefined) return undefined;
  if (typeof v === "number" && v !== 0 && Math.abs(v) < 1e-3) return v.toExponential();
  return Array.isArray(v) ? v.join(",") : String(v);
}

/** Width the help text is wrapped to, and where the descriptions start. */
const HELP_COLUMNS = 100;
const HELP_LEFT = 30;

/** Greedy word wrap of `words` (a word may hold spaces: it is never split); a long word gets its own line. */
function wrap(words: readonly string[], width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of words) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  out.push(line);
  return out;
}

/** What a help text says besides the options. */
export type HelpOptions = {
  /** The usage line(s), after "Usage:". */
  usage: string | readonly string[];
  /** Text between the usage and the options. */
  intro?: string;
  /** Text after the options. */
  outro?: string;
};

/**
 * The `--help` text: the usage, then every option by section with its placeholder, description, other
 * names and default, wrapped to 100 columns, and `-h, --help` last.
 */
export function helpText<O>(specs: readonly OptionSpec<O>[], o: HelpOptions): string {
  tableOf(specs); // a table with a clash fails here too, not only when parsing
  const usage = typeof o.usage === "string" ? [o.usage] : o.usage;
  const lines = usage.length === 1 ? [`Usage: ${usage[0]}`] : ["Usage:", ...usage.map((u) => `  ${u}`)];
  if (o.intro) lines.push("", ...o.intro.split("\n"));
  const groups = new Map<string, { left: string; right: string[] }[]>();
  for (const s of specs) {
    const arg = s.kind === "boolean"
      ? ""
      : s.kind === "enum"
      ? ` ${s.choices!.join("|")}`
      : ` <${s.arg ?? (s.kind === "list" ? "list" : s.kind === "string" ? "text" : s.kind)}>`;
    const trl = trlNames(s).map((t) => t.name);
    const shownDefault = formatDefault(s);
    // a parenthesis stays on one line when it fits one
    const unit = (text: string) => (text.length <= HELP_COLUMNS - HELP_LEFT ? [text] : text.split(" "));
    const row = {
      left: `  --${s.flag}${arg}`,
      right: [
        ...s.help.split(" "),
        ...(s.aliases?.length ? unit(`(alias ${s.aliases.map((a) => `--${a}`).join(", ")})`) : []),
        ...(trl.length ? unit(`(TRL: ${trl.join(", ")})`) : []),
        ...(shownDefault !== undefined ? unit(`(default: ${shownDefault})`) : []),
      ],
    };
    groups.set(s.group, [...(groups.get(s.group) ?? []), row]);
  }
  const last = [...groups.values()].at(-1);
  const helpRow = { left: "  -h, --help", right: ["show", "this", "help"] };
  if (last) last.push(helpRow);
  else groups.set("Options", [helpRow]);
  const textWidth = HELP_COLUMNS - HELP_LEFT;
  for (const [group, rows] of groups) {
    lines.push("", ...wrap(`${group}:`.split(" "), HELP_COLUMNS));
    for (const r of rows) {
      const text = wrap(r.right, textWidth).map((l) => " ".repeat(HELP_LEFT) + l);
      if (r.left.length + 1 > HELP_LEFT) lines.push(r.left, ...text);
      else lines.push(r.left.padEnd(HELP_LEFT) + text[0].trimStart(), ...text.slice(1));
    }
  }
  if (o.outro) lines.push("", ...o.outro.split("\n"));
  return lines.join("\n") + "\n";
}
