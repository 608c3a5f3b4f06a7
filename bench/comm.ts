/**
 * All-reduce throughput of the communicator over Open MPI on this machine's CPU: float32 sums of 1 KiB to
 * 64 MiB on N ranks (default 2), timed on every rank and reduced to the slowest. Prints a markdown table:
 * time per all-reduce, algorithm bandwidth (bytes / time) and bus bandwidth (algbw × 2(N−1)/N, what each
 * rank's link carries in a ring all-reduce, as nccl-tests report it). Beside it, the same MPI_Allreduce as a
 * blocking FFI call on the main thread (what the communicator avoids, since it stalls the event loop and
 * with it the watchdog): the price of running collectives on a worker thread.
 *
 *   deno run -A bench/comm.ts [--np 2] [--max-mib 64] [--min-time 0.5]
 *
 * Run plainly, it starts itself under `mpirun -np N --oversubscribe` (as root in a container, with the
 * variables Open MPI wants there) and prints rank 0's table; under mpirun, it is one rank.
 * @module
 */
import { parseArgs } from "node:util";
import { findMpiLibrary, openCommunicator } from "../lib/runtime/comm/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    np: { type: "string", default: "2" },
    "max-mib": { type: "string", default: "64" },
    "min-time": { type: "string", default: "0.5" },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
});
if (values.help) {
  console.log("deno run -A bench/comm.ts [--np 2] [--max-mib 64] [--min-time 0.5]");
  Deno.exit(0);
}
const np = Number(values.np), maxMib = Number(values["max-mib"]), minTime = Number(values["min-time"]);
for (const [name, v] of [["np", np], ["max-mib", maxMib], ["min-time", minTime]] as const) {
  if (!(v > 0) || (name === "np" && (!Number.isInteger(v) || v < 2))) {
    console.error(`bench/comm.ts: --${name} must be a number > 0${name === "np" ? " (an integer ≥ 2)" : ""}`);
    Deno.exit(2);
  }
}

type Row = { bytes: number; iters: number; us: number; algbw: number; busbw: number; blockingUs: number };

if (Deno.env.get("OMPI_COMM_WORLD_SIZE") === undefined) {
  // the launcher: mpirun, then rank 0's result as a table
  const env: Record<string, string> = { OMPI_MCA_btl_vader_single_copy_mechanism: "none", NO_COLOR: "1" };
  if (Deno.uid() === 0) {
    Object.assign(env, { OMPI_ALLOW_RUN_AS_ROOT: "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1" });
  }
  for (const k of Object.keys(env)) env[k] = Deno.env.get(k) ?? env[k];
  const script = new URL(import.meta.url).pathname;
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("mpirun", {
      args: [
        "-np",
        String(np),
        "--oversubscribe",
        "--bind-to",
        "none",
        Deno.execPath(),
        "run",
        "-A",
        script,
        ...Deno.args,
      ],
      env,
      stdout: "piped",
      stderr: "inherit",
    }).output();
  } catch (e) {
    console.error(
      `bench/comm.ts: could not start mpirun (apt-get install openmpi-bin): ${(e as Error).message}`,
    );
    Deno.exit(1);
  }
  const text = new TextDecoder().decode(out.stdout);
  const line = text.split("\n").find((l) => l.startsWith("COMM "));
  if (out.code !== 0 || !line) {
    console.error(`bench/comm.ts: mpirun exited ${out.code}\n${text}`);
    Deno.exit(1);
  }
  const rows = JSON.parse(line.slice(5)) as Row[];
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(/model name\s*:\s*(.*)/)?.[1];
  const mpi = new TextDecoder().decode(
    (await new Deno.Command("mpirun", { args: ["--version"], stdout: "piped", stderr: "null" }).output())
      .stdout,
  ).split("\n")[0];
  console.log(
    `${new Date().toISOString().slice(0, 10)}, ${
      cpu ?? "CPU"
    } (${navigator.hardwareConcurrency} cores), ${np} ranks, ` +
      `${mpi}, Deno ${Deno.version.deno}\n`,
  );
  const fmtBytes = (b: number) => (b >= 2 ** 20 ? `${b / 2 ** 20} MiB` : `${b / 1024} KiB`);
  console.log(
    "| size | iterations | µs per all-reduce | algbw GB/s | busbw GB/s | blocking call: µs | blocking: algbw GB/s |",
  );
  console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    console.log(
      `| ${fmtBytes(r.bytes)} | ${r.iters} | ${r.us.toFixed(1)} | ${r.algbw.toFixed(3)} | ${
        r.busbw.toFixed(3)
      } | ` +
        `${r.blockingUs.toFixed(1)} | ${(r.bytes / r.blockingUs / 1e3).toFixed(3)} |`,
    );
  }
} else {
  // one rank (nothing here may start a subprocess once MPI is initialized: the library is found before)
  const raw = Deno.dlopen(findMpiLibrary(), {
    MPI_Allreduce: {
      parameters: ["pointer", "pointer", "i32", "pointer", "pointer", "pointer"],
      result: "i32",
    },
    ompi_mpi_comm_world: { type: "pointer" },
    ompi_mpi_float: { type: "pointer" },
    ompi_mpi_op_sum: { type: "pointer" },
  }).symbols;
  const blocking = (buf: Float32Array) => {
    const rc = raw.MPI_Allreduce(
      Deno.UnsafePointer.create(1n),
      Deno.UnsafePointer.of(buf),
      buf.length,
      raw.ompi_mpi_float,
      raw.ompi_mpi_op_sum,
      raw.ompi_mpi_comm_world,
    );
    if (rc !== 0) throw new Error(`MPI_Allreduce: error ${rc}`);
  };
  const comm = await openCommunicator({ device: "cpu", timeoutMs: 300_000 });
  const n = comm.size;
  // a correctness check first: every rank's (rank + 1), summed
  const check = Float32Array.from({ length: 1000 }, (_, i) => (comm.rank + 1) * i);
  await comm.allReduce(check);
  const want = (n * (n + 1)) / 2;
  if (!check.every((x, i) => x === want * i)) {
    throw new Error(`rank ${comm.rank}: the all-reduce summed wrong`);
  }
  const slowest = async (seconds: number) => {
    const t = Float64Array.of(seconds);
    await comm.allReduce(t, "max");
    return t[0];
  };
  const rows: Row[] = [];
  for (let bytes = 1024; bytes <= maxMib * 2 ** 20; bytes *= 4) {
    const buf = new Float32Array(bytes / 4); // zeros stay zeros, however often they are summed
    for (let i = 0; i < 2; i++) await comm.allReduce(buf);
    let t0 = performance.now();
    for (let i = 0; i < 3; i++) await comm.allReduce(buf);
    const per = (await slowest((performance.now() - t0) / 1000)) / 3;
    const iters = Math.max(3, Math.min(100_000, Math.ceil(minTime / per)));
    await comm.barrier();
    t0 = performance.now();
    for (let i = 0; i < iters; i++) await comm.allReduce(buf);
    const seconds = (await slowest((performance.now() - t0) / 1000)) / iters;
    const algbw = bytes / seconds / 1e9;
    await comm.barrier();
    t0 = performance.now();
    for (let i = 0; i < iters; i++) blocking(buf);
    const blockingUs = (await slowest((performance.now() - t0) / 1000)) / iters * 1e6;
    rows.push({ bytes, iters, us: seconds * 1e6, algbw, busbw: (algbw * 2 * (n - 1)) / n, blockingUs });
  }
  if (comm.rank === 0) console.log(`COMM ${JSON.stringify(rows)}`);
  await comm[Symbol.asyncDispose]();
}
