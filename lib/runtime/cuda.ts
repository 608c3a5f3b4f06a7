/**
 * CUDA for onnxruntime-node: which NVIDIA libraries ONNX Runtime's CUDA provider needs, where they are,
 * and the provider itself. onnxruntime-node ships CPU-only binaries; the CUDA 13 provider for ONNX
 * Runtime 1.29.0 comes from the npm package `com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9` (230 MB),
 * fetched only when CUDA is asked for and copied beside onnxruntime-node's `libonnxruntime.so.1`, where
 * ONNX Runtime looks for its providers.
 * @module
 */
import { createRequire } from "node:module";
import { existsSync } from "../files.ts";

/** The provider package and the files taken from it. */
export const CUDA_PROVIDER_PACKAGE = {
  name: "com.github.asus4.onnxruntime.linux-x64-gpu",
  version: "0.4.9",
  dir: "package/Plugins/Linux/x64",
  files: ["libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"],
} as const;

/** Shared libraries the CUDA provider loads, with what provides them. */
export const CUDA_LIBRARIES: readonly { soname: string; what: string }[] = [
  { soname: "libcuda.so.1", what: "the NVIDIA driver" },
  { soname: "libcudart.so.13", what: "CUDA 13 runtime (nvidia-cuda-runtime-cu13)" },
  { soname: "libcublas.so.13", what: "cuBLAS 13 (nvidia-cublas-cu13)" },
  { soname: "libcublasLt.so.13", what: "cuBLASLt 13 (nvidia-cublas-cu13)" },
  { soname: "libcurand.so.10", what: "cuRAND 10 (nvidia-curand-cu13)" },
  { soname: "libcufft.so.12", what: "cuFFT 12 (nvidia-cufft-cu13)" },
  { soname: "libcudnn.so.9", what: "cuDNN 9 (nvidia-cudnn-cu13)" },
];

/** How to provide missing libraries, for error messages. */
export const CUDA_HELP =
  "Install the CUDA 13 toolkit and cuDNN 9, or the nvidia-* Python wheels (e.g. `pip install nvidia-cuda-runtime-cu13 " +
  "nvidia-cublas-cu13 nvidia-curand-cu13 nvidia-cufft-cu13 nvidia-cudnn-cu13`), and put their lib folders on " +
  "LD_LIBRARY_PATH.";

/** Raised when CUDA was asked for and cannot be used; the message says why and what to do. */
export class CudaUnavailableError extends Error {
  constructor(message: string, readonly missing: string[] = []) {
    super(message);
    this.name = "CudaUnavailableError";
  }
}

/** Folders the dynamic loader searches: LD_LIBRARY_PATH, the ldconfig cache's folders, the usual places. */
export function librarySearchDirs(): string[] {
  const dirs: string[] = [];
  const ld = Deno.env.get("LD_LIBRARY_PATH");
  if (ld) dirs.push(...ld.split(":").filter(Boolean));
  try {
    const out = new Deno.Command("ldconfig", { args: ["-p"], stdout: "piped", stderr: "null" }).outputSync();
    for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
      const m = line.match(/=>\s*(\/\S+)\/[^/]+$/);
      if (m) dirs.push(m[1]);
    }
  } catch { /* no ldconfig, or no permission to run it */ }
  dirs.push("/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64");
  return [...new Set(dirs)];
}

/** Which of `libs` exist in `dirs` (first hit wins). */
export function findLibraries(
  libs: readonly { soname: string; what: string }[],
  dirs: readonly string[],
): { found: Map<string, string>; missing: { soname: string; what: string }[] } {
  const found = new Map<string, string>();
  const missing: { soname: string; what: string }[] = [];
  for (const lib of libs) {
    const hit = dirs.map((d) => `${d}/${lib.soname}`).find(existsSync);
    if (hit) found.set(lib.soname, hit);
    else missing.push(lib);
  }
  return { found, missing };
}

/** onnxruntime-node's native folder (where libonnxruntime.so.1 is). */
export function ortNativeDir(): string {
  const require = createRequire(import.meta.url);
  let entry: string;
  try {
    entry = require.resolve("onnxruntime-node");
  } catch {
    throw new Error("onnxruntime-node is not installed: run `deno install` in the project");
  }
  const root = entry.slice(0, entry.lastIndexOf("/onnxruntime-node/") + "/onnxruntime-node".length);
  return `${root}/bin/napi-v6/linux/x64`;
}

/** Options for {@link ensureCudaProvider}. */
export type ProviderOptions = {
  /** onnxruntime-node's native folder; found by default. */
  ortDir?: string;
  /** A folder already holding the provider files (ORT_CUDA_PROVIDER_DIR by default). */
  providerDir?: string;
  /** Where a downloaded provider is kept. Default ~/.cache/nca-align/<package>-<version>. */
  cacheDir?: string;
  /** Fetch the provider package from the npm registry when it is nowhere else. Default true. */
  download?: boolean;
  /** npm registry base URL (NPM_CONFIG_REGISTRY, else registry.npmjs.org). */
  registry?: string;
  /** Called with progress lines (download). */
  log?: (line: string) => void;
};

/**
 * Makes sure the CUDA provider libraries sit beside libonnxruntime.so.1: already there, copied from a
 * provider folder or the cache, or downloaded once from the npm registry. Returns the folder they are in.
 */
export async function ensureCudaProvider(o: ProviderOptions = {}): Promise<string> {
  const ortDir = o.ortDir ?? ortNativeDir();
  const { files } = CUDA_PROVIDER_PACKAGE;
  if (files.every((f) => existsSync(`${ortDir}/${f}`))) return ortDir;
  const cacheDir = o.cacheDir ?? defaultCacheDir();
  const sources = [o.providerDir ?? Deno.env.get("ORT_CUDA_PROVIDER_DIR"), cacheDir].filter((
    d,
  ): d is string => !!d);
  let from = sources.find((d) => files.every((f) => existsSync(`${d}/${f}`)));
  if (!from) {
    if (o.download === false) {
      throw new CudaUnavailableError(
        `the ONNX Runtime CUDA provider is not installed (looked in ${[ortDir, ...sources].join(", ")}), ` +
          `and downloading it is turned off`,
      );
    }
    await downloadProvider(cacheDir, o.registry, o.log);
    from = cacheDir;
  }
  for (const f of files) {
    const tmp = `${ortDir}/${f}.tmp-${crypto.randomUUID()}`;
    await Deno.copyFile(`${from}/${f}`, tmp);
    await Deno.rename(tmp, `${ortDir}/${f}`);
  }
  return ortDir;
}

function defaultCacheDir(): string {
  const base = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/tmp"}/.cache`;
  return `${base}/nca-align/${CUDA_PROVIDER_PACKAGE.name}-${CUDA_PROVIDER_PACKAGE.version}`;
}

/** Downloads the provider package tarball and extracts the provider files into `dir`. */
export async function downloadProvider(
  dir: string,
  registry?: string,
  log?: (line: string) => void,
): Promise<void> {
  const { name, version } = CUDA_PROVIDER_PACKAGE;
  const base = (registry ?? Deno.env.get("NPM_CONFIG_REGISTRY") ?? "https://registry.npmjs.org").replace(
    /\/$/,
    "",
  );
  const url = `${base}/${name}/-/${name}-${version}.tgz`;
  log?.(`fetching the ONNX Runtime CUDA provider (${name}@${version}, ~230 MB) from ${base} …`);
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new CudaUnavailableError(
      `could not download the CUDA provider from ${url}: ${(e as Error).message}`,
    );
  }
  if (!res.ok || !res.body) {
    throw new CudaUnavailableError(`could not download the CUDA provider: ${url} answered ${res.status}`);
  }
  const tar = res.body.pipeThrough(new DecompressionStream("gzip"));
  await extractTarFiles(
    tar,
    CUDA_PROVIDER_PACKAGE.files.map((f) => `${CUDA_PROVIDER_PACKAGE.dir}/${f}`),
    dir,
  );
}

/**
 * Streams a tar archive and writes the wanted members (by path) into `dir` under their base names,
 * atomically. Throws when one is missing.
 */
export async function extractTarFiles(
  stream: ReadableStream<Uint8Array>,
  wanted: readonly string[],
  dir: string,
) {
  await Deno.mkdir(dir, { recursive: true });
  const left = new Set(wanted);
  const reader = stream.getReader();
  let buf = new Uint8Array(0);
  let done = false;
  const need = async (n: number): Promise<boolean> => {
    while (buf.length < n && !done) {
      const r = await reader.read();
      if (r.done) done = true;
      else {
        const next = new Uint8Array(buf.length + r.value.length);
        next.set(buf);
        next.set(r.value, buf.length);
        buf = next;
      }
    }
    return buf.length >= n;
  };
  const dec = new TextDecoder();
  let longName: string | undefined;
  while (left.size && (await need(512))) {
    const header = buf.subarray(0, 512);
    if (header.every((b) => b === 0)) break;
    const field = (a: number, b: number) => dec.decode(header.subarray(a, b)).replace(/\0.*$/s, "");
    const size = parseInt(field(124, 136).trim() || "0", 8);
    const type = field(156, 157);
    const prefix = field(345, 500);
    let path = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    longName = undefined;
    buf = buf.slice(512);
    const padded = Math.ceil(size / 512) * 512;
    if (type === "L") { // GNU long name
      await need(padded);
      longName = dec.decode(buf.subarray(0, size)).replace(/\0.*$/s, "");
      buf = buf.slice(padded);
      continue;
    }
    path = path.replace(/^\.\//, "");
    if (left.has(path)) {
      const base = path.slice(path.lastIndexOf("/") + 1);
      const tmp = `${dir}/${base}.tmp-${crypto.randomUUID()}`;
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
      let remaining = size;
      while (remaining > 0) {
        if (!(await need(Math.min(remaining, 1 << 20)))) throw new Error(`tar: ${path} is truncated`);
        const chunk = buf.subarray(0, Math.min(remaining, buf.length));
        await file.write(chunk);
        remaining -= chunk.length;
        buf = buf.slice(chunk.length);
      }
      file.close();
      await Deno.rename(tmp, `${dir}/${base}`);
      left.delete(path);
      await need(padded - size);
      buf = buf.slice(padded - size);
    } else {
      // skip this member
      let skip = padded;
      while (skip > 0) {
        if (!(await need(1))) break;
        const n = Math.min(skip, buf.length);
        buf = buf.slice(n);
        skip -= n;
      }
    }
  }
  await reader.cancel().catch(() => {});
  if (left.size) throw new Error(`tar: not in the archive: ${[...left].join(", ")}`);
}
