/**
 * One rank of the Open MPI tests (mpi_test.ts starts it under `mpirun -np 2`). It starts no subprocess:
 * after MPI_Init that is unsafe. Modes (first argument):
 * - `collectives [maxCount]`: every collective over several types, printed as one `RESULT {json}` line per
 *   rank for the test to check (BigInts as strings); `maxCount` forces MPI calls to be cut into pieces.
 * - `hang`: both ranks print `READY rank pid` after a barrier, then rank 0 all-reduces while rank 1 sleeps
 *   (the test kills rank 1).
 * - `watchdog`: rank 0 all-reduces with a 3 s watchdog while rank 1 sleeps 60 s.
 * @module
 */
import {
  allGatherPadded,
  type Communicator,
  openCommunicator,
  openMpi,
  reduceScatterPadded,
  withWatchdog,
  worldFromEnv,
} from "../../../lib/runtime/comm/mod.ts";

const mode = Deno.args[0];

const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));

if (mode === "collectives") {
  const maxCount = Deno.args[1] ? Number(Deno.args[1]) : undefined;
  const world = worldFromEnv();
  const mpi = await openMpi({ maxCount, expect: { rank: world.rank, size: world.size } });
  await using comm = withWatchdog(mpi, { timeoutMs: 60_000 });
  const { rank, size } = comm;
  const r: Record<string, unknown> = {};

  const f32 = Float32Array.from({ length: 10 }, (_, i) => (rank + 1) * (i + 0.5));
  await comm.allReduce(f32);
  r.allReduceSumF32 = Array.from(f32);

  const i32 = Int32Array.from({ length: 7 }, (_, i) => (rank === 0 ? i : 6 - i) * 3);
  await comm.allReduce(i32, "max");
  r.allReduceMaxI32 = Array.from(i32);

  const f64 = Float64Array.from({ length: 5 }, (_, i) => 0.1 * (i + 1) * (rank + 1));
  await comm.allReduce(f64);
  r.allReduceSumF64 = Array.from(f64);

  const i64 = BigInt64Array.from({ length: 4 }, (_, i) => 2n ** 40n * BigInt(rank + 1) + BigInt(i));
  await comm.allReduce(i64);
  r.allReduceSumI64 = Array.from(i64);

  const u8 = Uint8Array.from({ length: 6 }, (_, i) => 125 + i + rank);
  await comm.allReduce(u8);
  r.allReduceSumU8 = Array.from(u8); // wraps mod 256

  const send = Float32Array.from({ length: 5 * size }, (_, i) => i + 100 * rank);
  const recv = new Float32Array(5);
  await comm.reduceScatter(send, recv);
  r.reduceScatterSum = Array.from(recv);

  const sendMax = Int32Array.from({ length: 3 * size }, (_, i) => (i % 2 === rank ? 50 + i : -i));
  const recvMax = new Int32Array(3);
  await comm.reduceScatter(sendMax, recvMax, "max");
  r.reduceScatterMax = Array.from(recvMax);

  const mine = Float64Array.from({ length: 5 }, (_, i) => rank * 10 + i);
  const all = new Float64Array(5 * size);
  await comm.allGather(mine, all);
  r.allGatherF64 = Array.from(all);

  const mine64 = BigInt64Array.from({ length: 3 }, (_, i) => BigInt(rank) * 1000n - BigInt(i));
  const all64 = new BigInt64Array(3 * size);
  await comm.allGather(mine64, all64);
  r.allGatherI64 = Array.from(all64);

  const b = rank === 1 ? Float32Array.from({ length: 9 }, (_, i) => i * 1.5) : new Float32Array(9);
  await comm.broadcast(b, 1);
  r.broadcastFrom1 = Array.from(b);

  await comm.barrier();

  const vec = Float32Array.from({ length: 7 }, (_, i) => i + rank);
  const { shard, start, end } = await reduceScatterPadded(comm, vec);
  r.paddedShard = { shard: Array.from(shard), start, end };
  r.paddedBack = Array.from(await allGatherPadded(comm, shard, 7));

  await comm.allReduce(new Float32Array(0));
  r.deviceRefused = await comm.allReduce({ pointer: null, length: 4, dtype: "float32", device: "cuda" }).then(
    () => "accepted",
    (e: Error) => e.message,
  );
  r.calls = mpi.stats.calls;
  console.log(`RESULT ${json({ rank, size, world, threadLevel: mpi.threadLevel, results: r })}`);
} else if (mode === "hang" || mode === "watchdog") {
  const comm: Communicator = await openCommunicator({
    device: "cpu",
    timeoutMs: mode === "watchdog" ? 3_000 : 20_000,
  });
  await comm.barrier();
  console.log(`READY ${comm.rank} ${Deno.pid}`);
  if (comm.rank === 0) {
    for (;;) await comm.allReduce(new Float32Array(4));
  } else {
    await new Promise((r) => setTimeout(r, 60_000));
  }
} else {
  console.error(`_mpi_rank.ts: unknown mode ${mode}`);
  Deno.exit(2);
}
