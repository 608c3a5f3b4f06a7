import assert from "node:assert/strict";
import {
  CUDA_LIBRARIES,
  CUDA_PROVIDER_PACKAGE,
  CudaUnavailableError,
  downloadProvider,
  ensureCudaProvider,
  extractTarFiles,
  findLibraries,
} from "../../lib/runtime/cuda.ts";
import { parseDevice, prepareCuda, resolveDevice } from "../../lib/runtime/device.ts";

const { files, dir: pkgDir } = CUDA_PROVIDER_PACKAGE;

async function fakeLibDir(names: string[]): Promise<string> {
  const dir = await Deno.makeTempDir();
  for (const n of names) await Deno.writeTextFile(`${dir}/${n}`, "");
  return dir;
}

/** A gzipped tar shaped like the provider package, made with the system's tar. */
async function fakeProviderTgz(): Promise<Uint8Array> {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(`${root}/${pkgDir}`, { recursive: true });
  await Deno.writeTextFile(`${root}/package/package.json`, "{}");
  await Deno.writeTextFile(`${root}/package/Plugins/Linux/x64/libonnxruntime.so`, "other");
  for (const f of files) await Deno.writeTextFile(`${root}/${pkgDir}/${f}`, `contents of ${f}\n`.repeat(100));
  const out = await new Deno.Command("tar", { args: ["-czf", "-", "-C", root, "package"], stdout: "piped" })
    .output();
  await Deno.remove(root, { recursive: true });
  return out.stdout;
}

Deno.test("device: parseDevice accepts cpu, cuda, auto and names the flag otherwise", () => {
  assert.equal(parseDevice("auto"), "auto");
  assert.throws(() => parseDevice("gpu"), /--device must be cpu, cuda or auto, got "gpu"/);
});

Deno.test("device: cpu needs nothing", async () => {
  assert.deepEqual(await resolveDevice("cpu"), { device: "cpu" });
});

Deno.test("device: cuda without the NVIDIA libraries fails, naming each missing one and how to get it", async () => {
  const dir = await fakeLibDir(["libcudart.so.13"]);
  await assert.rejects(() => resolveDevice("cuda", { searchDirs: [dir], download: false }), (e: Error) => {
    assert.ok(e instanceof CudaUnavailableError);
    for (
      const lib of [
        "libcuda.so.1",
        "libcublas.so.13",
        "libcublasLt.so.13",
        "libcurand.so.10",
        "libcufft.so.12",
        "libcudnn.so.9",
      ]
    ) {
      assert.ok(e.message.includes(lib), `names ${lib}`);
      assert.ok((e as CudaUnavailableError).missing.includes(lib));
    }
    assert.ok(!e.message.includes("libcudart.so.13 ("), "a library that is there is not named");
    assert.match(e.message, /LD_LIBRARY_PATH/);
    assert.match(e.message, /cuDNN 9/);
    return true;
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("device: cuda on this machine's real library paths fails clearly or works", async () => {
  const r = await resolveDevice("auto", { download: false, said: new Set() });
  if (r.device === "cpu") assert.match(r.fallback!, /^CUDA is not available \(.+\)/);
  if (r.notice) {
    assert.match(r.notice, /^CUDA is not available \(.+\), although a GPU is there; running on the CPU/);
  }
});

Deno.test("device: auto with a GPU but no libraries falls back to the CPU with a one-line notice", async () => {
  const dir = await fakeLibDir([]);
  const r = await resolveDevice("auto", { searchDirs: [dir], download: false, gpu: true, said: new Set() });
  assert.equal(r.device, "cpu");
  assert.match(r.notice!, /^CUDA is not available \(missing libcuda\.so\.1, libcudart\.so\.13 and 5 more\)/);
  assert.ok(!r.notice!.includes("\n"));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("device: a provider that cannot load a library names it", async () => {
  const libs = await fakeLibDir(CUDA_LIBRARIES.map((l) => l.soname));
  const ort = await fakeLibDir(files as unknown as string[]);
  await assert.rejects(
    () =>
      prepareCuda({
        searchDirs: [libs],
        ortDir: ort,
        probe: () =>
          Promise.reject(
            new Error("Failed to load: libcublasLt.so.13: cannot open shared object file: No such file"),
          ),
      }),
    (e: Error) => e instanceof CudaUnavailableError && /could not load libcublasLt\.so\.13/.test(e.message),
  );
  // and with everything in place and a working probe, CUDA resolves
  assert.deepEqual(
    await resolveDevice("cuda", { searchDirs: [libs], ortDir: ort, probe: () => Promise.resolve() }),
    {
      device: "cuda",
    },
  );
  await Deno.remove(libs, { recursive: true });
  await Deno.remove(ort, { recursive: true });
});

Deno.test("device: the provider is copied beside libonnxruntime.so.1 from a provider folder", async () => {
  const ort = await fakeLibDir(["libonnxruntime.so.1"]);
  const provider = await fakeLibDir(files as unknown as string[]);
  const cache = await Deno.makeTempDir();
  for (const f of files) await Deno.writeTextFile(`${provider}/${f}`, `real ${f}`);
  assert.equal(
    await ensureCudaProvider({ ortDir: ort, providerDir: provider, cacheDir: cache, download: false }),
    ort,
  );
  for (const f of files) assert.equal(await Deno.readTextFile(`${ort}/${f}`), `real ${f}`);
  // already in place: nothing to do, even with no source
  await Deno.remove(provider, { recursive: true });
  assert.equal(
    await ensureCudaProvider({ ortDir: ort, providerDir: "/nonexistent", cacheDir: cache, download: false }),
    ort,
  );
  await Deno.remove(ort, { recursive: true });
  await Deno.remove(cache, { recursive: true });
});

Deno.test("device: without a provider and with downloads off, the error says where it looked", async () => {
  const ort = await fakeLibDir(["libonnxruntime.so.1"]);
  await assert.rejects(
    () =>
      ensureCudaProvider({
        ortDir: ort,
        providerDir: "/nonexistent",
        cacheDir: "/nonexistent-cache",
        download: false,
      }),
    /CUDA provider is not installed \(looked in .*nonexistent-cache\), and downloading it is turned off/,
  );
  await Deno.remove(ort, { recursive: true });
});

Deno.test("device: provider files are extracted from the package tarball", async () => {
  const tgz = await fakeProviderTgz();
  const out = await Deno.makeTempDir();
  const stream = new Blob([tgz as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip"));
  await extractTarFiles(stream, files.map((f) => `${pkgDir}/${f}`), out);
  for (const f of files) {
    assert.equal(await Deno.readTextFile(`${out}/${f}`), `contents of ${f}\n`.repeat(100));
  }
  const listing = [...Deno.readDirSync(out)].map((e) => e.name).sort();
  assert.deepEqual(listing, [...files].sort());
  await assert.rejects(
    () =>
      extractTarFiles(new Blob([tgz as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip")), [
        "package/missing.so",
      ], out),
    /not in the archive: package\/missing\.so/,
  );
  await Deno.remove(out, { recursive: true });
});

Deno.test("device: the provider is downloaded from the npm registry's tarball URL", async () => {
  const tgz = await fakeProviderTgz();
  const { name, version } = CUDA_PROVIDER_PACKAGE;
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const path = new URL(req.url).pathname;
    seen.push(path);
    return path === `/${name}/-/${name}-${version}.tgz`
      ? new Response(tgz as BodyInit)
      : new Response("no", { status: 404 });
  });
  const cache = await Deno.makeTempDir();
  const ort = await fakeLibDir(["libonnxruntime.so.1"]);
  const registry = `http://127.0.0.1:${server.addr.port}/`;
  await ensureCudaProvider({ ortDir: ort, providerDir: "/nonexistent", cacheDir: cache, registry });
  for (const f of files) {
    assert.equal(await Deno.readTextFile(`${ort}/${f}`), `contents of ${f}\n`.repeat(100));
    assert.ok((await Deno.stat(`${cache}/${f}`)).isFile, "kept in the cache");
  }
  await assert.rejects(
    () => downloadProvider(cache, `http://127.0.0.1:${server.addr.port}/nothing`),
    /answered 404/,
  );
  await server.shutdown();
  await Deno.remove(cache, { recursive: true });
  await Deno.remove(ort, { recursive: true });
});

Deno.test("device: findLibraries reports found paths", async () => {
  const dir = await fakeLibDir(["libcudnn.so.9"]);
  const r = findLibraries([{ soname: "libcudnn.so.9", what: "cuDNN" }], ["/nonexistent", dir]);
  assert.equal(r.found.get("libcudnn.so.9"), `${dir}/libcudnn.so.9`);
  assert.equal(r.missing.length, 0);
  await Deno.remove(dir, { recursive: true });
});
