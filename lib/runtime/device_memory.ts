/**
 * How much memory a device can give a run: the system's available memory for the CPU, the GPU's free
 * memory (from `nvidia-smi`) for CUDA. Undefined when it cannot be told.
 * @module
 */
import type { Device } from "./session.ts";

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

/** Starts a new peak for {@link processMemory} (Linux: "5" into /proc/self/clear_refs). Whether it could. */
export function resetPeakMemory(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * The peak memory of each phase of a long job (loading, scoring, training, export), for its summary:
 * {@link PhasePeaks.enter} closes the current phase with its peak and starts the next.
 */
export class PhasePeaks {
  readonly peaks: Record<string, number> = {};
  #current?: string;

  /** Closes the current phase (its peak recorded) and starts `name` (undefined: only close). */
  enter(name?: string): void {
    if (this.#current) {
      this.peaks[this.#current] = Math.max(this.peaks[this.#current] ?? 0, processMemory().peak);
    }
    this.#current = name;
    if (name) resetPeakMemory();
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
