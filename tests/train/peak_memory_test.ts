/**
 * summary.json's `peak_memory_gib`: each phase's resident peak, checked against the kernel's own record of
 * the process's peak (VmHWM, what `/usr/bin/time -v` reports), which the measurement must leave intact. Each
 * case runs in a process of its own (_peak_run.ts), where nothing else moves the process's memory.
 */
import assert from "node:assert/strict";

const GiB = 2 ** 30, MiB = 2 ** 20;

async function peakRun<T>(mode: "train" | "phases"): Promise<T> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", new URL("./_peak_run.ts", import.meta.url).pathname, mode],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr));
  return JSON.parse(dec.decode(out.stdout).trim().split("\n").at(-1)!);
}

Deno.test({
  name: "peak memory: the training phase holds a spike inside it, and VmHWM at the end is the process peak",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const r = await peakRun<{ peaks: Record<string, number>; held: number; vmHWM: number }>("train");
    const { process, ...phases } = r.peaks;
    assert.deepEqual(Object.keys(phases).sort(), ["export", "load", "reference", "session", "train"]);
    const half = 0.005; // the summary rounds to 0.01 GiB
    // the 300 MiB held during a chunk is the train phase's peak, and the process's
    assert.ok(phases.train >= r.held / GiB - half, `train ${phases.train} GiB, held ${r.held / GiB}`);
    // the kernel's peak, read at the very end, is not reset by the measurement: it agrees with the summary
    // (a rounding unit of slack: under load the sampler's last read and the kernel's peak were seen 0.1 MiB
    // apart across a rounding boundary, 0.4549 against a phase of 0.46)
    for (const [k, v] of Object.entries(phases)) {
      assert.ok(r.vmHWM / GiB >= v - 2 * half, `VmHWM ${r.vmHWM / GiB} GiB < ${k} ${v}`);
    }
    assert.equal(process, Math.max(...Object.values(phases)));
    assert.ok(Math.abs(r.vmHWM / GiB - process) <= 0.02, `VmHWM ${r.vmHWM / GiB} GiB, process ${process}`);
    // and the phases after it report their own peak, not the process's
    assert.ok(phases.export < phases.train - 0.2, `export ${phases.export}, train ${phases.train}`);
  },
});

Deno.test({
  name: "peak memory: a phase below an earlier peak gets what it held while the main thread was blocked",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const r = await peakRun<{
      peaks: { big: number; small: number };
      process: number;
      before: number;
      held: number;
      after: number;
      vmHWM: number;
    }>("phases");
    const mib = (b: number) => `${(b / MiB).toFixed(0)} MiB`;
    assert.ok(r.peaks.big >= 400 * MiB, `big ${mib(r.peaks.big)}`);
    // below the first phase's peak, and gone at both its ends: only the sampler saw it
    assert.ok(r.held < r.peaks.big && Math.max(r.before, r.after) < r.held - 100 * MiB, JSON.stringify(r));
    assert.ok(r.peaks.small >= r.held && r.peaks.small < r.peaks.big, JSON.stringify(r));
    assert.ok(r.process >= r.peaks.big && Math.abs(r.vmHWM - r.process) < 8 * MiB, JSON.stringify(r));
  },
});
