/**
 * `deno task train --nproc N`: N ranks on this machine without writing the launcher's command line. The
 * entry runs itself again as the ranks: on the CPU under `mpirun -np N --oversubscribe` (the ranks' Open MPI
 * needs processes mpirun started); on CUDA as N processes with torchrun's variables (RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT a free port), device = local rank. The
 * ranks get `--nproc 1` after the user's arguments (flags win over a `--config` file), so none starts
 * ranks again. Rank 0's output passes through; the other ranks print only their errors.
 * @module
 */
import { MPI_AS_ROOT_ENV } from "../runtime/comm/mpi.ts";
import type { Device } from "../runtime/tensor.ts";

/** One process to start: the command, its arguments and the variables added to the environment. */
export type RankProcess = {
  command: string;
  args: string[];
  env: Record<string, string>;
  /** The rank it is (torchrun-style), or undefined for mpirun, which starts all of them. */
  rank?: number;
};

/** The permissions and V8 flags of `deno task train` (deno.json), which each rank runs with. */
export const TRAIN_RUN_FLAGS: readonly string[] = [
  "--v8-flags=--expose-gc",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-ffi",
  "--allow-sys",
  "--allow-run",
  "--allow-net",
];

/** The train entry's path (train/main.ts). */
export const TRAIN_MAIN = new URL("../../train/main.ts", import.meta.url).pathname;

/**
 * The arguments without `--nproc` (`--nproc N`, `--nproc=N`), followed by `--nproc 1`; and `--device`
 * replaced by the device resolved once here (so that `auto` does not resolve differently per rank).
 */
export function rankArgs(argv: readonly string[], device: Device): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--nproc" || a === "--device") i++;
    else if (a.startsWith("--nproc=") || a.startsWith("--device=")) continue;
    else out.push(a);
  }
  return [...out, "--device", device, "--nproc", "1"];
}

/** What {@link nprocCommands} needs. */
export type NprocOptions = {
  nproc: number;
  device: Device;
  /** The command line given to `deno task train`. */
  argv: readonly string[];
  /** The Deno executable (default: this one). */
  deno?: string;
  /** The train entry (default {@link TRAIN_MAIN}). */
  main?: string;
  /** mpirun's path, for the CPU. */
  mpirun?: string;
  /** Whether this process runs as root: Open MPI then needs its consent variables. */
  root?: boolean;
  /** The environment now: variables the user set are not overridden. */
  env?: Record<string, string | undefined>;
  /** MASTER_PORT for CUDA ranks (its next port is NCCL's). */
  port?: number;
};

/** The processes `--nproc N` starts (see the module's note). Throws naming what is missing. */
export function nprocCommands(o: NprocOptions): RankProcess[] {
  if (!Number.isSafeInteger(o.nproc) || o.nproc < 2) {
    throw new Error(`--nproc: starting ranks needs N ≥ 2, got ${o.nproc}`);
  }
  const deno = o.deno ?? Deno.execPath(), env = o.env ?? {};
  const rank = [...TRAIN_RUN_FLAGS, o.main ?? TRAIN_MAIN, ...rankArgs(o.argv, o.device)];
  if (o.device === "cpu") {
    if (!o.mpirun) {
      throw new Error(
        `--nproc ${o.nproc} on the CPU runs the ranks over Open MPI, and mpirun is not on PATH: install Open ` +
          "MPI (Debian/Ubuntu: apt-get install openmpi-bin), or train on CUDA",
      );
    }
    // as root (a container), Open MPI refuses to start without consent, and its shared-memory transport's
    // single-copy mechanism (CMA) is usually not permitted there
    const rootEnv: Record<string, string> = o.root ? { ...MPI_AS_ROOT_ENV } : {};
    const added = Object.fromEntries(Object.entries(rootEnv).filter(([k]) => env[k] === undefined));
    return [{
      command: o.mpirun,
      // --bind-to none: each rank runs ONNX Runtime's thread pool, which binding to one core would starve
      args: ["-np", String(o.nproc), "--oversubscribe", "--bind-to", "none", deno, "run", ...rank],
      env: added,
    }];
  }
  if (o.device !== "cuda") {
    throw new Error(`--nproc: device must be cpu or cuda, got ${JSON.stringify(o.device)}`);
  }
  if (o.port === undefined) throw new Error("--nproc on CUDA needs a MASTER_PORT");
  return Array.from({ length: o.nproc }, (_, r) => ({
    command: deno,
    args: ["run", ...rank],
    env: {
      RANK: String(r),
      WORLD_SIZE: String(o.nproc),
      LOCAL_RANK: String(r),
      LOCAL_WORLD_SIZE: String(o.nproc),
      MASTER_ADDR: "127.0.0.1",
      MASTER_PORT: String(o.port),
    },
    rank: r,
  }));
}

/** A free port on 127.0.0.1 whose next port is free too (NCCL's rank 0 listens on MASTER_PORT + 1). */
export function freePortPair(): number {
  for (let tries = 0; tries < 50; tries++) {
    const a = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (a.addr as Deno.NetAddr).port;
    try {
      if (port >= 65535) continue;
      const b = Deno.listen({ hostname: "127.0.0.1", port: port + 1 });
      b.close();
      return port;
    } catch {
      // the next port is taken: try another pair
    } finally {
      a.close();
    }
  }
  throw new Error("--nproc: found no two free consecutive ports on 127.0.0.1 for MASTER_PORT");
}

/** How long the other ranks get to end after one failed, before they are killed (ms). */
const GRACE_MS = 10_000;

/**
 * Starts the ranks of {@link nprocCommands} and waits for them: rank 0 (or mpirun) with this process's
 * streams, the others with stderr only. SIGTERM is passed on to them; Ctrl-C reaches them from the terminal
 * itself, so this process only waits. When a rank fails, the others are ended (SIGTERM, then SIGKILL after
 * 10 s), and its exit status is returned.
 */
export async function runRanks(procs: readonly RankProcess[]): Promise<number> {
  const children = procs.map((p) =>
    new Deno.Command(p.command, {
      args: p.args,
      env: p.env,
      stdin: "null",
      stdout: p.rank === undefined || p.rank === 0 ? "inherit" : "null",
      stderr: "inherit",
    }).spawn()
  );
  const kill = (sig: Deno.Signal) => {
    for (const c of children) {
      try {
        c.kill(sig);
      } catch { /* already ended */ }
    }
  };
  const onTerm = () => kill("SIGTERM");
  const onInt = () => {}; // the terminal sends Ctrl-C to the ranks too: they save and end, this waits
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGINT", onInt);
  let failed: number | undefined, timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.all(children.map(async (c, i) => {
      const { code } = await c.status;
      if (code !== 0 && failed === undefined) {
        failed = code;
        if (children.length > 1) {
          console.error(
            `--nproc: rank ${procs[i].rank ?? i} exited with status ${code}: ending the other ranks`,
          );
          kill("SIGTERM");
          timer = setTimeout(() => kill("SIGKILL"), GRACE_MS);
        }
      }
    }));
  } finally {
    clearTimeout(timer);
    Deno.removeSignalListener("SIGTERM", onTerm);
    Deno.removeSignalListener("SIGINT", onInt);
  }
  return failed ?? 0;
}
