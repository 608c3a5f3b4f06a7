import assert from "node:assert/strict";
import {
  checkTimeoutMs,
  localWorld,
  WATCHDOG_EXIT_CODE,
  withWatchdog,
} from "../../../lib/runtime/comm/mod.ts";

Deno.test("watchdog: a collective a rank never joins aborts the world, names the rank and the collective, and exits", async () => {
  const [a, b] = localWorld(2);
  const reports: string[] = [], exits: number[] = [];
  const wa = withWatchdog(a, { timeoutMs: 50, report: (m) => reports.push(m), exit: (c) => exits.push(c) });
  const wb = withWatchdog(b, { timeoutMs: 60_000 });
  await Promise.all([wa.barrier(), wb.barrier()]); // completed collectives leave no timer behind
  const t0 = Date.now();
  await assert.rejects(
    wa.allReduce(new Float32Array(3)),
    /^CommError: rank 0\/2: allReduce: aborted by rank 0: allReduce did not complete within 50 ms \(local, 2 ranks\)/,
  );
  assert.ok(Date.now() - t0 < 5_000);
  assert.deepEqual(exits, [WATCHDOG_EXIT_CODE]);
  assert.equal(reports.length, 1);
  assert.match(
    reports[0],
    /^rank 0\/2: allReduce did not complete within 50 ms \(local, 2 ranks\): another rank died, hangs, or made a different collective; aborting the communicator$/,
  );
  // the peer learns it at its next collective instead of waiting for ever
  await assert.rejects(wb.allReduce(new Float32Array(3)), /rank 1\/2: allReduce: aborted by rank 0/);
});

Deno.test("watchdog: passes results and errors through, and keeps the communicator's identity", async () => {
  const world = localWorld(2).map((c) => withWatchdog(c, { timeoutMs: 10_000 }));
  assert.deepEqual(world.map((c) => [c.rank, c.size, c.localRank, c.backend]), [[0, 2, 0, "local"], [
    1,
    2,
    1,
    "local",
  ]]);
  const bufs = [Float32Array.of(1, 2), Float32Array.of(3, 4)];
  await Promise.all(world.map((c, r) => c.allReduce(bufs[r])));
  assert.deepEqual(Array.from(bufs[1]), [4, 6]);
  await assert.rejects(
    world[0].broadcast(new Float32Array(1), 5),
    /rank 0\/2: broadcast: root must be a rank in \[0, 2\)/,
  );
  world[1].abort("done");
  await assert.rejects(world[0].barrier(), /aborted by rank 1: done/);
});

Deno.test("watchdog: timeouts past setTimeout's range or not positive are refused; Infinity turns it off", () => {
  assert.equal(checkTimeoutMs(Infinity), Infinity);
  assert.equal(checkTimeoutMs(1000), 1000);
  for (const bad of [0, -5, NaN, 2 ** 31]) {
    assert.throws(() => checkTimeoutMs(bad), /timeoutMs must be > 0 and at most 2147483647 ms/);
  }
  const [a] = localWorld(1);
  assert.throws(() => withWatchdog(a, { timeoutMs: 2 ** 40 }), /got 1099511627776/);
});
