/**
 * Exclusive output locks (lib/lock.ts): a second holder is refused naming the first's pid, in this process
 * and from another; release removes the file; a lock left by a process killed with SIGKILL is taken over,
 * and the taking over is said.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Lock, LockedError, lockFile, lockFolder } from "../lib/lock.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "lock_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A child process holding `lockFile(path)` until killed; resolves once it holds it. */
async function holder(path: string): Promise<Deno.ChildProcess> {
  const code = `import { lockFile } from ${JSON.stringify(new URL("../lib/lock.ts", import.meta.url).href)};
const lock = await lockFile(${JSON.stringify(path)}, { command: "the holder" });
console.log("held");
await new Promise(() => setInterval(() => {}, 1000));`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  assert.match(new TextDecoder().decode(value), /held/);
  return child;
}

Deno.test("lock: a second holder is refused naming the first; release removes the file", async () => {
  await withDir(async (dir) => {
    const out = join(dir, "samples.jsonl");
    const first = await lockFile(out, { command: "deno task sample --out samples.jsonl" });
    assert.ok(first.held);
    const holderFile = JSON.parse(await Deno.readTextFile(`${out}.lock`));
    assert.equal(holderFile.pid, Deno.pid);
    const e = await lockFile(out).then(() => null, (e) => e);
    assert.ok(e instanceof LockedError, String(e));
    assert.equal(e.holder?.pid, Deno.pid);
    assert.match(e.message, new RegExp(`samples\\.jsonl is in use by another run \\(pid ${Deno.pid}\\b`));
    assert.match(e.message, /deno task sample --out samples\.jsonl/);
    await first.release();
    assert.equal(first.held, false);
    await assert.rejects(Deno.stat(`${out}.lock`), Deno.errors.NotFound);
    await first.release(); // twice is harmless
    {
      await using again = await lockFile(out);
      assert.ok(again instanceof Lock);
    }
    await assert.rejects(Deno.stat(`${out}.lock`), Deno.errors.NotFound, "await using released it");
  });
});

Deno.test("lock: a folder's lock is inside it", async () => {
  await withDir(async (dir) => {
    const lock = await lockFolder(dir);
    assert.equal(lock.path, join(dir, ".lock"));
    await assert.rejects(lockFolder(`${dir}/`), LockedError);
    await lock.release();
  });
});

Deno.test("lock: another process's lock is refused with its pid; once it is killed, the lock is taken over", async () => {
  await withDir(async (dir) => {
    const out = join(dir, "scored.jsonl");
    const child = await holder(out);
    try {
      const e = await lockFile(out).then(() => null, (e) => e);
      assert.ok(e instanceof LockedError, String(e));
      assert.equal(e.holder?.pid, child.pid);
      assert.match(e.message, new RegExp(`pid ${child.pid}, \`the holder\``));
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
    // the file is still there, with the dead process's pid; the kernel let go of its lock
    assert.equal(JSON.parse(await Deno.readTextFile(`${out}.lock`)).pid, child.pid);
    const said: string[] = [];
    const lock = await lockFile(out, { log: (l) => said.push(l) });
    assert.equal(said.length, 1);
    assert.match(said[0], new RegExp(`took over the lock of .*scored\\.jsonl left by pid ${child.pid}`));
    assert.equal(JSON.parse(await Deno.readTextFile(`${out}.lock`)).pid, Deno.pid);
    await lock.release();
  });
});
