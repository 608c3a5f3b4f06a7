/**
 * Run by peak_memory_test.ts in a process of its own, with `--v8-flags=--expose-gc` (so that freed buffers
 * leave at once). `train`: a tiny training run whose first chunk holds a 300 MiB buffer for a moment and frees
 * it, as a step's working memory comes and goes. `phases`: two phases, the second peaking below the first
 * while the main thread is blocked. Prints the peaks and the kernel's own record of the process's peak (VmHWM)
 * read at the end, as JSON.
 */
import { PhasePeaks, processMemory } from "../../lib/runtime/device_memory.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

const MiB = 2 ** 20;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");

/** Holds `mib` MiB resident for `ms` milliseconds of a blocked main thread, then frees them; the RSS then. */
function spike(mib: number, ms = 0): number {
  let held: Uint8Array | null = new Uint8Array(mib * MiB).fill(1);
  const rss = processMemory().rss;
  for (const until = performance.now() + ms; performance.now() < until;) held[0] ^= 1;
  held = null;
  gc!();
  return rss;
}

/** Until V8 has given a freed spike back (it frees large buffers on another thread): RSS below `rss`. */
async function settle(rss: number): Promise<void> {
  for (let i = 0; i < 100 && processMemory().rss >= rss; i++) {
    await new Promise((ok) => setTimeout(ok, 20));
    gc!();
  }
}

const vmHWM = async () =>
  Number((await Deno.readTextFile("/proc/self/status")).match(/^VmHWM:\s+(\d+) kB/m)![1]) * 1024;

if (Deno.args[0] === "train") {
  const s = await tinySetup();
  let held = 0;
  const res = await train(tinyConfigFor(s, { stepsPerRun: 3 }), {
    log: () => {},
    onChunk: () => {
      if (!held) held = spike(300);
    },
  });
  console.log(JSON.stringify({ peaks: res.summary!.peak_memory_gib, held, vmHWM: await vmHWM() }));
  await Deno.remove(s.dir, { recursive: true });
} else {
  using phases = new PhasePeaks({ intervalMs: 5 });
  await phases.started;
  phases.enter("big");
  const base = processMemory().rss;
  spike(400);
  await settle(base + 50 * MiB);
  const before = processMemory().rss;
  phases.enter("small");
  const held = spike(150, 150); // as an ONNX Runtime session run: the main thread busy meanwhile
  await settle(before + 50 * MiB);
  const after = processMemory().rss;
  phases.enter();
  console.log(
    JSON.stringify({
      peaks: phases.peaks,
      process: phases.process,
      before,
      held,
      after,
      vmHWM: await vmHWM(),
    }),
  );
}
