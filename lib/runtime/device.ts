/**
 * Device selection: `cpu`, `cuda`, or `auto` (CUDA when it works, else CPU with a one-line notice).
 * Asking for CUDA checks the NVIDIA libraries first, so a missing one is named with how to provide it,
 * instead of a loader error from deep inside ONNX Runtime.
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
import type { Device } from "./session.ts";

/** What a user may ask for. */
export type DeviceRequest = Device | "auto";

/** Options for {@link resolveDevice}: where to look for libraries and the provider. */
export type ResolveOptions = ProviderOptions & {
  /** Folders to search for the CUDA libraries (default: the loader's). */
  searchDirs?: string[];
  /** Tries a tiny model on the device (default true). */
  probe?: (device: Device) => Promise<void>;
};

/** The device a run will use, and a notice to print when `auto` fell back. */
export type ResolvedDevice = { device: Device; notice?: string };

/** Parses a `--device` value. */
export function parseDevice(s: string): DeviceRequest {
  if (s === "cpu" || s === "cuda" || s === "auto") return s;
  throw new RangeError(`--device must be cpu, cuda or auto, got "${s}"`);
}

/**
 * Resolves a device request. `cuda` throws {@link CudaUnavailableError} with the missing libraries named;
 * `auto` falls back to CPU with a notice.
 */
export async function resolveDevice(req: DeviceRequest, o: ResolveOptions = {}): Promise<ResolvedDevice> {
  if (req === "cpu") return { device: "cpu" };
  try {
    await prepareCuda(o);
    return { device: "cuda" };
  } catch (e) {
    if (req === "cuda") throw e;
    const why = e instanceof CudaUnavailableError ? e.message.split("\n")[0] : String(e);
    return { device: "cpu", notice: `CUDA is not available (${why}); running on the CPU` };
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
  const s = await ModelSession.create(serializeModel(g.build()), { device });
  const out = await s.run({ x: f32([1, 2], [2]) });
  await s.release();
  if (out.y.data[1] !== 3) throw new Error(`the ${device} probe computed ${out.y.data[1]} for 2 + 1`);
}
