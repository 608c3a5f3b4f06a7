/**
 * The report of a GPU check script: one JSON line per result on stdout, kept to be written to
 * `$OUT/<name>.jsonl` at the end (the device tool brings `$OUT` back), failures collected for the summary
 * line and the exit status.
 * @module
 */

/** A check report: `emit` results, push to `failures`, then `finish` (exits 1 on any failure, else 0). */
export type CheckReport = {
  emit: (o: Record<string, unknown>) => void;
  failures: string[];
  finish: (summary?: Record<string, unknown>) => Promise<never>;
};

/**
 * Where a check's results go: a {@link CheckReport}, a rank's stdout (a child process of a check), or a
 * test's collector, so that one check function serves all three.
 */
export type CheckSink = Pick<CheckReport, "emit" | "failures">;

/** A report whose lines go to `$OUT/<name>.jsonl` when OUT is set. */
export function checkReport(name: string): CheckReport {
  const out = Deno.env.get("OUT");
  const lines: string[] = [];
  const failures: string[] = [];
  const emit = (o: Record<string, unknown>) => {
    const line = JSON.stringify(o);
    console.log(line);
    lines.push(line);
  };
  return {
    emit,
    failures,
    async finish(summary = {}) {
      emit({ check: "summary", ...summary, ok: failures.length === 0, failures });
      if (out) await Deno.writeTextFile(`${out}/${name}.jsonl`, lines.join("\n") + "\n");
      Deno.exit(failures.length ? 1 : 0);
    },
  };
}

/** torchrun's variables for rank `rank` of two on this machine (the checks' two-GPU parts start them so). */
export function twoRankEnv(rank: number, port: number): Record<string, string> {
  return {
    RANK: String(rank),
    WORLD_SIZE: "2",
    LOCAL_RANK: String(rank),
    LOCAL_WORLD_SIZE: "2",
    MASTER_ADDR: "127.0.0.1",
    MASTER_PORT: String(port),
  };
}
