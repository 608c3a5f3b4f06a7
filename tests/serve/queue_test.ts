/** The admission queue: slots, FIFO waiting, 429 beyond the queue, waiters that leave, release twice. */
import assert from "node:assert/strict";
import { AdmissionQueue, QueueFullError } from "../../lib/serve/queue.ts";

Deno.test("queue: at most maxConcurrent run, maxQueue wait in order, the rest are refused", async () => {
  const q = new AdmissionQueue({ maxConcurrent: 2, maxQueue: 1 });
  const a = await q.acquire();
  const b = await q.acquire();
  assert.deepEqual(q.stats(), { maxConcurrent: 2, maxQueue: 1, running: 2, waiting: 0 });
  let cGranted = false;
  const c = q.acquire().then((r) => (cGranted = true, r));
  assert.equal(q.stats().waiting, 1);
  await assert.rejects(q.acquire(), (e) => e instanceof QueueFullError && e.status === 429);
  a();
  a(); // twice is harmless
  const releaseC = await c;
  assert.ok(cGranted);
  assert.deepEqual(q.stats(), { maxConcurrent: 2, maxQueue: 1, running: 2, waiting: 0 });
  b();
  releaseC();
  assert.equal(q.stats().running, 0);
});

Deno.test("queue: a waiter whose client leaves is removed; the next one gets the slot", async () => {
  const q = new AdmissionQueue({ maxConcurrent: 1, maxQueue: 2 });
  const first = await q.acquire();
  const leaving = new AbortController();
  const gone = q.acquire(leaving.signal);
  const staying = q.acquire();
  leaving.abort(new Error("client left"));
  await assert.rejects(gone, /client left/);
  assert.equal(q.stats().waiting, 1);
  first();
  const second = await staying;
  assert.equal(q.stats().running, 1);
  second();
  assert.equal(q.stats().running, 0);
});

Deno.test("queue: zero queue length refuses as soon as the slots are taken; limits are checked", async () => {
  const q = new AdmissionQueue({ maxConcurrent: 1, maxQueue: 0 });
  const r = await q.acquire();
  const err = await q.acquire().catch((e) => e);
  assert.ok(err instanceof QueueFullError);
  assert.deepEqual(err.toJSON().error.code, "queue_full");
  r();
  (await q.acquire())();
  assert.throws(() => new AdmissionQueue({ maxConcurrent: 0, maxQueue: 0 }), /maxConcurrent/);
  assert.throws(() => new AdmissionQueue({ maxConcurrent: 1, maxQueue: -1 }), /maxQueue/);
});

Deno.test("queue: rejectWaiting fails every waiter (shutdown)", async () => {
  const q = new AdmissionQueue({ maxConcurrent: 1, maxQueue: 3 });
  await q.acquire();
  const waiting = [q.acquire(), q.acquire()];
  q.rejectWaiting(new Error("shutting down"));
  for (const w of waiting) await assert.rejects(w, /shutting down/);
  assert.equal(q.stats().waiting, 0);
});
