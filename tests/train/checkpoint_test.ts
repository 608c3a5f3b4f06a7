import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CheckpointMeta,
  hashConfig,
  LATEST_FILE,
  listCheckpoints,
  loadCheckpoint,
  loadLatestCheckpoint,
  saveCheckpoint,
  STATE_FILE,
  TENSORS_FILE,
} from "../../lib/train/checkpoint.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(join(dir, "checkpoints"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const meta = (step: number, extra: Partial<CheckpointMeta> = {}): CheckpointMeta => ({
  step,
  epoch: step / 100,
  dataPosition: step * 8,
  rngState: [step, 7],
  schedule: { kind: "cosine", lr: 5e-6, warmupRatio: 0.1, totalSteps: 100 },
  configHash: "abc",
  ...extra,
});

const tensors = (step: number) => ({
  "lora.q.A": { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, step]) },
  "adam.m.lora.q.A": new Float32Array([0.5, -0.25, step]),
});

const names = async (dir: string) => (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();

function collect(): { warn: (m: string) => void; messages: string[] } {
  const messages: string[] = [];
  return { warn: (m) => messages.push(m), messages };
}

Deno.test("round trip: tensors (with shapes) and meta come back exactly", async () => {
  await withDir(async (dir) => {
    const path = await saveCheckpoint(dir, { tensors: tensors(10), meta: meta(10) });
    assert.equal(path, join(dir, "checkpoint-10"));
    assert.deepEqual(await names(path), [STATE_FILE, TENSORS_FILE]);
    const got = await loadLatestCheckpoint(dir, { warn: () => assert.fail("no warning expected") });
    assert.ok(got);
    assert.equal(got.step, 10);
    assert.equal(got.path, path);
    assert.deepEqual(got.meta, meta(10));
    assert.deepEqual(got.tensors["lora.q.A"], Float32Array.from([1, 2, 3, 4, 5, 10]));
    assert.deepEqual(got.shapes["lora.q.A"], [2, 3]);
    assert.deepEqual(got.tensors["adam.m.lora.q.A"], new Float32Array([0.5, -0.25, 10]));
    assert.deepEqual(got.shapes["adam.m.lora.q.A"], [3]);
  });
});

Deno.test("no checkpoints: undefined, for a missing or an empty folder", async () => {
  await withDir(async (dir) => {
    assert.equal(await loadLatestCheckpoint(dir), undefined);
    await Deno.mkdir(dir);
    assert.equal(await loadLatestCheckpoint(dir), undefined);
    assert.deepEqual(await listCheckpoints(dir), []);
  });
});

Deno.test("the latest pointer names the newest checkpoint and is replaced atomically", async () => {
  await withDir(async (dir) => {
    await saveCheckpoint(dir, { tensors: tensors(1), meta: meta(1) });
    assert.equal(await Deno.readTextFile(join(dir, LATEST_FILE)), "checkpoint-1\n");
    await saveCheckpoint(dir, { tensors: tensors(2), meta: meta(2) });
    assert.equal(await Deno.readTextFile(join(dir, LATEST_FILE)), "checkpoint-2\n");
    assert.deepEqual(await names(dir), ["checkpoint-1", "checkpoint-2", LATEST_FILE]); // no temp files
  });
});

Deno.test("pruning keeps the newest N checkpoints", async () => {
  await withDir(async (dir) => {
    for (const s of [10, 20, 30, 40]) await saveCheckpoint(dir, { tensors: tensors(s), meta: meta(s) });
    assert.deepEqual((await listCheckpoints(dir)).map((c) => c.step), [30, 40]);
    await saveCheckpoint(dir, { tensors: tensors(50), meta: meta(50) }, { keep: 3 });
    assert.deepEqual((await listCheckpoints(dir)).map((c) => c.step), [30, 40, 50]);
    await saveCheckpoint(dir, { tensors: tensors(60), meta: meta(60) }, { keep: 1 });
    assert.deepEqual((await listCheckpoints(dir)).map((c) => c.step), [60]);
    await assert.rejects(
      () => saveCheckpoint(dir, { tensors: tensors(70), meta: meta(70) }, { keep: 0 }),
      /keep/,
    );
  });
});

Deno.test("steps sort numerically, not as text (checkpoint-100 is newer than checkpoint-99)", async () => {
  await withDir(async (dir) => {
    await saveCheckpoint(dir, { tensors: tensors(99), meta: meta(99) });
    await saveCheckpoint(dir, { tensors: tensors(100), meta: meta(100) });
    assert.equal((await loadLatestCheckpoint(dir))?.step, 100);
  });
});

Deno.test("a crash mid-save (leftover temp folder) is ignored and cleaned by the next save", async () => {
  await withDir(async (dir) => {
    await saveCheckpoint(dir, { tensors: tensors(5), meta: meta(5) });
    // What a crash between writing files and the rename leaves behind: a half-written hidden folder.
    const leftover = join(dir, ".tmp-checkpoint-6-deadbeef");
    await Deno.mkdir(leftover);
    await Deno.writeFile(join(leftover, TENSORS_FILE), new Uint8Array([1, 2, 3]));
    const { warn, messages } = collect();
    const got = await loadLatestCheckpoint(dir, { warn });
    assert.equal(got?.step, 5);
    assert.deepEqual(messages, []);
    await saveCheckpoint(dir, { tensors: tensors(7), meta: meta(7) });
    assert.ok(!(await names(dir)).some((n) => n.startsWith(".tmp-")));
  });
});

Deno.test("corrupt or partial checkpoints are skipped with a warning; the previous one is used", async () => {
  await withDir(async (dir) => {
    await saveCheckpoint(dir, { tensors: tensors(1), meta: meta(1) }, { keep: 5 });
    await saveCheckpoint(dir, { tensors: tensors(2), meta: meta(2) }, { keep: 5 });
    await saveCheckpoint(dir, { tensors: tensors(3), meta: meta(3) }, { keep: 5 });
    // checkpoint-3: tensors truncated; checkpoint-2: state.json missing.
    const t3 = join(dir, "checkpoint-3", TENSORS_FILE);
    const bytes = await Deno.readFile(t3);
    await Deno.writeFile(t3, bytes.subarray(0, bytes.length - 4));
    await Deno.remove(join(dir, "checkpoint-2", STATE_FILE));
    const { warn, messages } = collect();
    const got = await loadLatestCheckpoint(dir, { warn });
    assert.equal(got?.step, 1);
    assert.deepEqual(got?.tensors["lora.q.A"], Float32Array.from([1, 2, 3, 4, 5, 1]));
    assert.equal(messages.length, 3);
    assert.match(messages[0], /checkpoint-3: .*bytes/);
    assert.match(messages[1], /checkpoint-2: state\.json is missing/);
    assert.match(messages[2], /names "checkpoint-3"; resuming from checkpoint-1/);
  });
});

Deno.test("a damaged safetensors header or a mismatched step is detected", async () => {
  await withDir(async (dir) => {
    const path = await saveCheckpoint(dir, { tensors: tensors(4), meta: meta(4) });
    const file = join(path, TENSORS_FILE);
    const bytes = await Deno.readFile(file);
    bytes[9] = 0x00; // inside the JSON header, same size
    await Deno.writeFile(file, bytes);
    await assert.rejects(() => loadCheckpoint(path), /tensors\.safetensors does not match its checksum/);
    const other = await saveCheckpoint(dir, { tensors: tensors(8), meta: meta(8) });
    await Deno.rename(other, join(dir, "checkpoint-9"));
    await assert.rejects(() => loadCheckpoint(join(dir, "checkpoint-9")), /folder says step 9/);
  });
});

Deno.test("a newer complete checkpoint wins over a stale pointer (crash before the pointer update)", async () => {
  await withDir(async (dir) => {
    await saveCheckpoint(dir, { tensors: tensors(1), meta: meta(1) });
    await saveCheckpoint(dir, { tensors: tensors(2), meta: meta(2) });
    await Deno.writeTextFile(join(dir, LATEST_FILE), "checkpoint-1\n");
    const { warn, messages } = collect();
    assert.equal((await loadLatestCheckpoint(dir, { warn }))?.step, 2);
    assert.equal(messages.length, 1);
  });
});

Deno.test("re-saving a step replaces it; saving an earlier step drops the abandoned later ones", async () => {
  await withDir(async (dir) => {
    for (const s of [1, 2, 3]) await saveCheckpoint(dir, { tensors: tensors(s), meta: meta(s) }, { keep: 5 });
    await saveCheckpoint(dir, { tensors: tensors(42), meta: meta(3, { note: "again" }) }, { keep: 5 });
    let got = await loadLatestCheckpoint(dir);
    assert.equal(got?.meta.note, "again");
    assert.equal(got?.tensors["adam.m.lora.q.A"][2], 42);
    await saveCheckpoint(dir, { tensors: tensors(2), meta: meta(2) }, { keep: 5 });
    assert.deepEqual((await listCheckpoints(dir)).map((c) => c.step), [1, 2]);
    got = await loadLatestCheckpoint(dir);
    assert.equal(got?.step, 2);
  });
});

Deno.test("a checkpoint from another config is refused, not silently used", async () => {
  await withDir(async (dir) => {
    await saveCheckpoint(dir, { tensors: tensors(1), meta: meta(1, { configHash: "aaa" }) });
    assert.equal((await loadLatestCheckpoint(dir, { configHash: "aaa" }))?.step, 1);
    await assert.rejects(() => loadLatestCheckpoint(dir, { configHash: "bbb" }), /config hash aaa .* bbb/);
  });
});

Deno.test("invalid meta is rejected before anything is written", async () => {
  await withDir(async (dir) => {
    await assert.rejects(() => saveCheckpoint(dir, { tensors: {}, meta: meta(-1) }), /meta\.step/);
    await assert.rejects(() => saveCheckpoint(dir, { tensors: {}, meta: meta(1.5) }), /meta\.step/);
    await assert.rejects(
      () => saveCheckpoint(dir, { tensors: { x: { shape: [2], data: new Float32Array(3) } }, meta: meta(1) }),
      /elements/,
    );
    assert.deepEqual(await listCheckpoints(dir), []);
    assert.ok(!(await names(dir)).some((n) => n.startsWith(".tmp-")));
  });
});

Deno.test("hashConfig is stable under key order and sensitive to values", async () => {
  const a = await hashConfig({ lr: 5e-6, loss: "nca", lora: { r: 16, alpha: 16 } });
  const b = await hashConfig({ lora: { alpha: 16, r: 16 }, loss: "nca", lr: 5e-6 });
  const c = await hashConfig({ lr: 5e-6, loss: "dpo", lora: { r: 16, alpha: 16 } });
  assert.equal(a, b);
  assert.notEqual(a, c);
  assert.match(a, /^[0-9a-f]{16}$/);
});

Deno.test("same-size damage to the tensor data is caught by the checksum; the previous checkpoint is used", async () => {
  await withDir(async (dir) => {
    await saveCheckpoint(dir, { tensors: tensors(1), meta: meta(1), scalars: { step: 1 } }, { keep: 3 });
    const path = await saveCheckpoint(dir, { tensors: tensors(2), meta: meta(2), scalars: { step: 2 } }, {
      keep: 3,
    });
    const file = join(path, TENSORS_FILE);
    const bytes = await Deno.readFile(file);
    bytes[bytes.length - 3] ^= 0xff; // a float's bytes, after the header: still a valid safetensors file
    await Deno.writeFile(file, bytes);
    const { warn, messages } = collect();
    const got = await loadLatestCheckpoint(dir, { warn });
    assert.equal(got?.step, 1);
    assert.deepEqual(got?.scalars, { step: 1 });
    assert.match(messages[0], /checkpoint-2: tensors\.safetensors does not match its checksum/);
  });
});

Deno.test("when every checkpoint is damaged the load stops with an error and deletes nothing", async () => {
  await withDir(async (dir) => {
    for (const step of [1, 2]) {
      const path = await saveCheckpoint(dir, { tensors: tensors(step), meta: meta(step) }, { keep: 3 });
      const file = join(path, TENSORS_FILE);
      const bytes = await Deno.readFile(file);
      bytes[bytes.length - 1] ^= 0x01;
      await Deno.writeFile(file, bytes);
    }
    const { warn, messages } = collect();
    await assert.rejects(
      () => loadLatestCheckpoint(dir, { warn }),
      /none of the 2 checkpoint\(s\) is intact .*nothing was deleted/,
    );
    assert.equal(messages.length, 2);
    assert.deepEqual((await listCheckpoints(dir)).map((c) => c.step), [1, 2]);
  });
});

Deno.test("state.json records every file's size and SHA-256 and the scalar state", async () => {
  await withDir(async (dir) => {
    const path = await saveCheckpoint(dir, {
      tensors: tensors(3),
      meta: meta(3),
      scalars: { step: 3, loss_scale: 512 },
    });
    const state = JSON.parse(await Deno.readTextFile(join(path, STATE_FILE)));
    assert.equal(state.version, 2);
    const bytes = await Deno.readFile(join(path, TENSORS_FILE));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
    assert.deepEqual(state.files, { [TENSORS_FILE]: { bytes: bytes.length, sha256: hex } });
    assert.deepEqual(state.scalars, { step: 3, loss_scale: 512 });
    // a version-1 checkpoint (no checksums, no scalars) still loads
    delete state.files;
    delete state.scalars;
    state.version = 1;
    await Deno.writeTextFile(join(path, STATE_FILE), JSON.stringify(state));
    const v1 = await loadCheckpoint(path);
    assert.equal(v1.version, 1);
    assert.deepEqual(v1.scalars, {});
  });
});
