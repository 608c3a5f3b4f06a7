/**
 * How much memory a device can give a run: the system's available memory for the CPU, the GPU's free
 * memory (from `nvidia-smi`) for CUDA. Undefined when it cannot be told.
 * @module
 */
import type { Device } from "./tensor.ts";

/** Free and total bytes of a device's memory. */
export type DeviceMemory = { free: number; total: number };

/** The memory of `device` (CUDA device `deviceId`), or undefined when unknown. */
export async function deviceMemory(device: Device, deviceId = 0): Promise<DeviceMemory | undefined> {
  if (device === "cpu") {
    try {
      const m = Deno.systemMemoryInfo();
      return { free: m.available, total: m.total };
    } catch {
      return undefined;
    }
  }
  const out = await nvidiaSmi([
    "--query-gpu=memory.free,memory.total",
    "--format=csv,noheader,nounits",
    "-i",
    String(deviceId),
  ]);
  return out === undefined ? undefined : parseNvidiaSmi(out);
}

/** What `nvidia-smi` prints with `args`, or undefined (no nvidia-smi, no permission to run it, a failure). */
export async function nvidiaSmi(args: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("nvidia-smi", { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

/** The GPU memory process `pid` holds (all its CUDA allocations, ONNX Runtime's arena included), or undefined. */
export async function gpuProcessMemory(pid = Deno.pid): Promise<number | undefined> {
  const out = await nvidiaSmi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]);
  for (const line of out?.split("\n") ?? []) {
    const [p, mib] = line.split(",").map((x) => Number(x.trim()));
    if (p === pid && Number.isFinite(mib)) return mib * 2 ** 20;
  }
  return undefined;
}

/**
 * Whether casting `elements` bf16/fp16 weights to fp32 once, when a session loads, pays: 2.4–3.3× the CPU
 * decode speed (BENCHMARKS.md) for an fp32 copy held while the session lives. Taken when that copy is at most
 * an eighth of the device's free memory, so a big model on a small machine keeps its stored size.
 */
export async function foldingPays(elements: number, device: Device): Promise<boolean> {
  if (elements === 0) return false;
  const free = (await deviceMemory(device))?.free;
  return free !== undefined && elements * 4 <= free / 8;
}

/** `nvidia-smi --query-gpu=memory.free,memory.total --format=csv,noheader,nounits` (MiB) → bytes. */
export function parseNvidiaSmi(text: string): DeviceMemory | undefined {
  const m = text.trim().split("\n")[0]?.match(/^\s*(\d+)\s*,\s*(\d+)\s*$/);
  return m ? { free: Number(m[1]) * 2 ** 20, total: Number(m[2]) * 2 ** 20 } : undefined;
}

/**
 * The process's resident memory now and its peak, in bytes: Linux's VmRSS and VmHWM (mapped model files
 * count once touched); elsewhere the current RSS for both. The peak is since the process started or the
 * last {@link resetPeakMemory}.
 */
export function processMemory(): { rss: number; peak: number } {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const kib = (key: string) =>
      Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN) * 1024;
    const rss = kib("VmRSS"), peak = kib("VmHWM");
    if (Number.isFinite(rss) && Number.isFinite(peak)) return { rss, peak };
  } catch { /* not Linux, or no permission */ }
  const rss = Deno.memoryUsage().rss;
  return { rss, peak: rss };
}

/**
 * Starts a new peak for {@link processMemory} (Linux: "5" into /proc/self/clear_refs). Whether it could. This
 * resets the kernel's own record: VmHWM, and the maximum resident size that `/usr/bin/time -v` and
 * `getrusage` report afterwards, then count from the reset only. {@link PhasePeaks} does not use it.
 */
export function resetPeakMemory(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * The sampler thread of {@link PhasePeaks}: the process's resident memory (KiB) every `intervalMs`, folded into
 * a running maximum in slot 0 of a shared Int32Array, which the owner takes (and zeroes) at each phase's end.
 * A thread of its own, because ONNX Runtime's session runs block the main thread for their whole length.
 */
const SAMPLER_SOURCE = `
const kib = () => {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/^VmRSS:\\s+(\\d+) kB/m);
    if (m) return Number(m[1]);
  } catch { /* not Linux, or no permission */ }
  return Math.round(Deno.memoryUsage().rss / 1024);
};
self.onmessage = (e) => {
  const max = new Int32Array(e.data.buffer);
  const sample = () => {
    const v = kib();
    for (;;) {
      const old = Atomics.load(max, 0);
      if (v <= old || Atomics.compareExchange(max, 0, old, v) === old) break;
    }
  };
  sample();
  setInterval(sample, e.data.intervalMs);
  self.postMessage("started");
};
`;

/**
 * The resident peak of each phase of a long job (loading, scoring, training, export), for its summary, and of
 * the whole process: {@link PhasePeaks.enter} closes the current phase with its peak and starts the next.
 *
 * The kernel's peak (VmHWM) is never reset, so it, `/usr/bin/time -v` and the summary keep agreeing. A phase
 * during which the process's peak rose holds that peak, exactly; any other phase peaked below an earlier one,
 * and its peak is the highest resident size a sampler thread saw during it (every `intervalMs`, 10 ms by
 * default) or at its ends: what lasts less than that between samples can be missed there. Dispose of it (or
 * call {@link PhasePeaks.close}) to stop the thread.
 */
export class PhasePeaks {
  readonly peaks: Record<string, number> = {};
  #current?: string;
  #start = { rss: 0, peak: 0 };
  #highest = 0;
  readonly #sampled = new Int32Array(new SharedArrayBuffer(4));
  #worker?: Worker;
  /** Settles when the sampler has taken its first sample (at once when there is none). */
  readonly started: Promise<void>;

  constructor(o: { intervalMs?: number } = {}) {
    const intervalMs = o.intervalMs ?? 10;
    let url: string | undefined;
    try {
      url = URL.createObjectURL(new Blob([SAMPLER_SOURCE], { type: "application/javascript" }));
      this.#worker = new Worker(url, { type: "module", name: "resident memory sampler" });
      const w = this.#worker;
      this.started = new Promise<void>((ok) => {
        w.onmessage = () => ok();
        w.onerror = (e) => {
          e.preventDefault(); // no sampler: the phases' ends and the kernel's peak still count
          ok();
        };
      });
      w.postMessage({ buffer: this.#sampled.buffer, intervalMs });
    } catch {
      this.#worker = undefined;
      this.started = Promise.resolve();
    } finally {
      if (url) URL.revokeObjectURL(url);
    }
  }

  /** Closes the current phase (its peak recorded) and starts `name` (undefined: only close). */
  enter(name?: string): void {
    const now = processMemory();
    const sampled = Atomics.exchange(this.#sampled, 0, 0) * 1024;
    this.#highest = Math.max(this.#highest, now.rss, now.peak, sampled);
    if (this.#current) {
      const rose = now.peak > this.#start.peak ? now.peak : 0;
      const peak = Math.max(rose, this.#start.rss, now.rss, sampled);
      this.peaks[this.#current] = Math.max(this.peaks[this.#current] ?? 0, peak);
    }
    this.#current = name;
    this.#start = now;
  }

  /** The process's resident peak since it started (Linux: VmHWM), startup and the time between phases included. */
  get process(): number {
    const now = processMemory();
    return Math.max(this.#highest, now.peak, now.rss);
  }

  /** Closes the current phase and stops the sampler thread. */
  close(): void {
    this.enter();
    this.#worker?.terminate();
    this.#worker = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

let libc: { symbols: { malloc_trim: (pad: bigint) => number } } | null | undefined;

/**
 * Gives memory that is free but still held back to the system, after work that dropped large buffers (a
 * training run replacing a full model's state): V8 collects big ArrayBuffers only at its next major
 * collection, so one is asked for when the runtime exposes `gc` (`--v8-flags=--expose-gc`, as the tasks
 * run), and glibc keeps the native heap's freed chunks, which `malloc_trim` returns (Linux, with FFI
 * allowed). Measured on SmolLM-135M full fine-tuning: 5.1 GB resident between runs without, 2.4 with.
 */
export function releaseFreeMemory(): void {
  (globalThis as { gc?: () => void }).gc?.();
  if (libc === undefined) {
    try {
      libc = Deno.build.os === "linux"
        ? Deno.dlopen("libc.so.6", { malloc_trim: { parameters: ["usize"], result: "i32" } })
        : null;
    } catch {
      libc = null;
    }
  }
  libc?.symbols.malloc_trim(0n);
}
