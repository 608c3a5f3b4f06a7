/**
 * What `--device auto` says about CUDA. Before, every CPU command printed a line naming the six CUDA
 * libraries it had not found. Now: nothing on a machine without a GPU, one short line (once per process)
 * where a GPU is there but CUDA cannot start, and `--device cuda` still fails naming every missing library.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CUDA_LIBRARIES, CudaUnavailableError } from "../../lib/runtime/cuda.ts";
import { autoFallback, nvidiaGpuVisible, resolveDevice } from "../../lib/runtime/device.ts";
import { loopSetup, sampleCli, writePrompts } from "../loop/_fixtures.ts";

const ALL_MISSING = new CudaUnavailableError(
  "CUDA libraries not found: …",
  CUDA_LIBRARIES.map((l) => l.soname),
);

Deno.test("device notice: a GPU is seen from its device files or nvidia-smi on PATH", () => {
  const only = (...paths: string[]) => (p: string) => paths.includes(p);
  assert.equal(nvidiaGpuVisible(only(), "/usr/bin:/bin"), false);
  assert.equal(nvidiaGpuVisible(only("/dev/nvidiactl"), ""), true);
  assert.equal(nvidiaGpuVisible(only("/dev/nvidia0"), ""), true);
  assert.equal(nvidiaGpuVisible(only("/opt/nv/bin/nvidia-smi"), "/usr/bin:/opt/nv/bin"), true);
  assert.equal(nvidiaGpuVisible(only("/opt/nv/bin/nvidia-smi"), "/usr/bin"), false);
});

Deno.test("device notice: no GPU, nothing to say; a GPU without CUDA, one short line", () => {
  const none = autoFallback(false, ALL_MISSING);
  assert.equal(none.device, "cpu");
  assert.equal(none.notice, undefined);
  assert.equal(none.fallback, "CUDA is not available (no NVIDIA GPU found)");

  const gpu = autoFallback(true, ALL_MISSING);
  assert.equal(gpu.device, "cpu");
  assert.equal(
    gpu.notice,
    "CUDA is not available (missing libcuda.so.1, libcudart.so.13 and 5 more), although a GPU is there; " +
      "running on the CPU (--device cuda says what to install)",
  );
  const probe = autoFallback(true, new Error(`ONNX Runtime could not start CUDA: ${"x".repeat(300)}\nmore`));
  assert.ok(!probe.notice!.includes("\n") && probe.notice!.length < 220, String(probe.notice));
});

Deno.test("device notice: auto without a GPU does not look for CUDA; with one, the notice is said once", async () => {
  let probed = 0;
  const probe = () => {
    probed++;
    return Promise.resolve();
  };
  const none = await resolveDevice("auto", { gpu: false, probe, said: new Set() });
  assert.deepEqual(none, { device: "cpu", fallback: "CUDA is not available (no NVIDIA GPU found)" });
  assert.equal(probed, 0);

  const empty = await Deno.makeTempDir();
  try {
    const said = new Set<string>();
    const o = { gpu: true, searchDirs: [empty], download: false, said };
    const first = await resolveDevice("auto", o);
    assert.equal(first.device, "cpu");
    assert.match(first.notice!, /^CUDA is not available \(missing libcuda\.so\.1/);
    const second = await resolveDevice("auto", o);
    assert.equal(second.device, "cpu");
    assert.equal(second.notice, undefined, "said once per process");
    assert.match(second.fallback!, /although a GPU is there/);
    // asked for by name, CUDA's absence is an error naming every missing library, GPU or not
    for (const gpu of [true, false]) {
      await assert.rejects(
        resolveDevice("cuda", { gpu, searchDirs: [empty], download: false }),
        (e: Error) =>
          e instanceof CudaUnavailableError && CUDA_LIBRARIES.every((l) => e.message.includes(l.soname)),
      );
    }
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("device notice: a CPU command with the default --device auto prints no CUDA line", async () => {
  const s = await loopSetup();
  try {
    const prompts = await writePrompts(s.dir, 1);
    const out = join(s.dir, "samples.jsonl");
    const r = await sampleCli([
      ...["--model", s.model, "--prompts", prompts, "--out", out, "--k", "1", "--max-new-tokens", "2"],
    ]);
    assert.equal(r.code, 0, r.err);
    const cudaLines = (r.out + r.err).split("\n").filter((l) => /CUDA/.test(l));
    if (nvidiaGpuVisible()) assert.ok(cudaLines.length <= 1, cudaLines.join("\n"));
    else assert.deepEqual(cudaLines, [], "no GPU here: nothing about CUDA");
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
