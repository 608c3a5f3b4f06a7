/**
 * Device selection: `cpu`, `cuda`, or `auto` (CUDA when it works, else the CPU). Asking for CUDA checks the
 * NVIDIA libraries first, so a missing one is named with how to provide it, instead of a loader error from
 * deep inside ONNX Runtime. `auto` says nothing on a machine without a GPU (most CPU runs), and one short
 * line, once per process, where a GPU is there but CUDA cannot start.
 * @module
 */
import {
  CUDA_HELP,
  CUDA_LIBRARIES,
  CudaUnavailableError,
  ensureCudaProvider,
  findLibraries,
  librarySearchDirs,
  type ProviderOptions,
} from "./cuda.ts";
import { existsSync } from "../files.ts";
import type { Device } from "./tensor.ts";

/** What a user may ask for. */
export type DeviceRequest = Device | "auto";

/** Options for {@link resolveDevice}: where to look for libraries and the provider. */
export type ResolveOptions = ProviderOptions & {
  /** Folders to search for the CUDA libraries (default: the loader's). */
  searchDirs?: string[];
  /** Tries a tiny model on the device (default true). */
  probe?: (device: Device) => Promise<void>;
  /** Whether an NVIDIA GPU is visible (default: {@link nvidiaGpuVisible}). */
  gpu?: boolean;
  /** Notices already printed, so each is said once (default: this process's). */
  said?: Set<string>;
};

/**
 * The device a run will use. `notice`: a line to print, where `auto` fell back to the CPU although a GPU is
 * there (once per process). `fallback`: why `auto` chose the CPU, always (for an error that depends on the
 * device, as fp16 training's does).
 */
export type ResolvedDevice = { device: Device; notice?: string; fallback?: string };

/** The notices this process has printed. */
const SAID = new Set<string>();

/**
 * Whether an NVIDIA GPU is visible without CUDA's libraries: its device files (`/dev/nvidiactl`,
 * `/dev/nvidia0`; `/dev/dxg` under WSL) or `nvidia-smi` on PATH. `exists` is injectable for tests.
 */
export function nvidiaGpuVisible(
  exists: (path: string) => boolean = existsSync,
  path: string = Deno.env.get("PATH") ?? "",
): boolean {
  if (["/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"].some(exists)) return true;
  return path.split(":").filter(Boolean).some((dir) => exists(`${dir}/nvidia-smi`));
}

/**
 * What `auto` does where CUDA did not start (`error`), given whether a GPU is visible: the CPU, with a
 * short notice only when there is a GPU that could have been used (a CPU-only machine is no news), and the
 * reason either way.
 */
export function autoFallback(gpu: boolean, error?: unknown): ResolvedDevice {
  if (!gpu) return { device: "cpu", fallback: "CUDA is not available (no NVIDIA GPU found)" };
  let why: string;
  if (error instanceof CudaUnavailableError && error.missing.length) {
    const m = error.missing;
    why = `missing ${m.slice(0, 2).join(", ")}${m.length > 2 ? ` and ${m.length - 2} more` : ""}`;
  } else {
    why = (error instanceof Error ? error.message : String(error)).split("\n")[0];
    if (why.length > 80) why = why.slice(0, 79) + "…";
  }
  const reason = `CUDA is not available (${why}), although a GPU is there`;
  return {
    device: "cpu",
    notice: `${reason}; running on the CPU (--device cuda says what to install)`,
    fallback: reason,
  };
}

/** Parses a `--device` value. */
export function parseDevice(s: string): DeviceRequest {
  if (s === "cpu" || s === "cuda" || s === "auto") return s;
  throw new RangeError(`--device must be cpu, cuda or auto, got "${s}"`);
}

/**
 * Resolves a device request. `cuda` throws {@link CudaUnavailableError} with the missing libraries named;
 * `auto` is the CPU at once where no GPU is visible, else CUDA when it starts, else the CPU with a notice
 * ({@link autoFallback}) that is given once per process.
 */
export async function resolveDevice(req: DeviceRequest, o: ResolveOptions = {}): Promise<ResolvedDevice> {
  if (req === "cpu") return { device: "cpu" };
  if (req === "auto" && !(o.gpu ?? nvidiaGpuVisible())) return autoFallback(false);
  try {
    await prepareCuda(o);
    return { device: "cuda" };
  } catch (e) {
    if (req === "cuda") throw e;
    const r = autoFallback(true, e);
    const said = o.said ?? SAID;
    if (r.notice && said.has(r.notice)) return { device: r.device, fallback: r.fallback };
    if (r.notice) said.add(r.notice);
    return r;
  }
}

/** Checks the libraries, places the provider and (by default) runs a tiny model on CUDA. */
export async function prepareCuda(o: ResolveOptions = {}): Promise<void> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    throw new CudaUnavailableError(
      `CUDA is supported on Linux x86-64 only (this is ${Deno.build.os} ${Deno.build.arch})`,
    );
  }
  const { missing } = findLibraries(CUDA_LIBRARIES, o.searchDirs ?? librarySearchDirs());
  if (missing.length) {
    throw new CudaUnavailableError(
      `CUDA libraries not found: ${missing.map((m) => `${m.soname} (${m.what})`).join(", ")}.\n${CUDA_HELP}`,
      missing.map((m) => m.soname),
    );
  }
  await ensureCudaProvider(o);
  const probe = o.probe ?? probeDevice;
  try {
    await probe("cuda");
  } catch (e) {
    const msg = (e as Error).message;
    const lib = msg.match(/(lib[\w.+-]+\.so[\d.]*): cannot open shared object file/)?.[1];
    throw new CudaUnavailableError(
      lib
        ? `ONNX Runtime's CUDA provider could not load ${lib}.\n${CUDA_HELP}`
        : `ONNX Runtime could not start CUDA: ${msg}`,
      lib ? [lib] : [],
    );
  }
}

/** Runs a one-node model on a device (it throws when the provider cannot start). */
export async function probeDevice(device: Device): Promise<void> {
  const { GraphBuilder } = await import("../graph/builder.ts");
  const op = await import("../graph/ops.ts");
  const { serializeModel } = await import("../graph/serialize.ts");
  const { ModelSession, f32 } = await import("./session.ts");
  const g = new GraphBuilder("probe");
  g.output(op.add(g.input("x", "float32", [2]), 1), "y");
  await using s = await ModelSession.create(serializeModel(g.build()), { device });
  const out = await s.run({ x: f32([1, 2], [2]) });
  if (out.y.data[1] !== 3) throw new Error(`the ${device} probe computed ${out.y.data[1]} for 2 + 1`);
}
