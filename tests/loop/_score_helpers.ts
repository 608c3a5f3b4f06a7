/** What the score tests share: sample files in `deno task sample`'s format, and reading JSONL back. */

/** Rows as `deno task sample` writes them (plus an `answer` for the exact-answer reward), and odd ones. */
export const SAMPLE_ROWS: Record<string, unknown>[] = [
  {
    id: 0,
    prompt: "what is 2 + 2 ?",
    answer: "4",
    responses: [
      { content: "4", tokens: 1, finish_reason: "stop" },
      { content: "it is 4 .", tokens: 4, finish_reason: "stop" },
      { content: "5", tokens: 1, finish_reason: "length" },
    ],
  },
  {
    id: 1,
    prompt: [{ role: "system", content: "be brief" }, { role: "user", content: "what is 3 + 4 ?" }],
    answer: "7",
    responses: [{ content: "7" }, { content: "8" }],
  },
  { id: 2, messages: [{ role: "user", content: "one plus one" }], answer: "2", responses: ["2", "two"] },
  { id: 3, prompt: "say yes", chosen: "yes", rejected: "no", answer: "yes" },
];

/** What the exact-answer reward gives SAMPLE_ROWS. */
export const EXACT_REWARDS = [[1, 0.5, 0], [1, 0], [1, 0], [1, 0]];

/** Rows as JSONL. */
export function jsonl(rows: unknown[]): string {
  return rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
}

/** A JSONL file's rows. */
export async function readRows(path: string): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(path);
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/** The rewards of each scored row. */
export function rewardsOf(rows: Record<string, unknown>[]): number[][] {
  return rows.map((r) => (r.responses as { reward: number }[]).map((x) => x.reward));
}

/** The command line of a deno.json task, with `deno` as this Deno's executable, plus `args`. */
export async function taskCommand(
  task: string,
  args: string[],
): Promise<{ cmd: string; args: string[]; cwd: string }> {
  const root = new URL("../../", import.meta.url).pathname;
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  const [deno, ...rest] = String(config.tasks[task]).split(/\s+/);
  if (deno !== "deno") throw new Error(`task ${task} does not start with deno`);
  return { cmd: Deno.execPath(), args: [...rest, ...args], cwd: root };
}
