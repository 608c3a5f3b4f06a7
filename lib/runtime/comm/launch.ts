/**
 * The world a process belongs to, read from its launcher's environment, and the communicator for it.
 *
 * Launchers, in the order they are recognized (the first whose variables are set wins; an mpirun or
 * torchrun inside a SLURM allocation still sees the allocation's SLURM_* variables, so SLURM comes last):
 * - torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
 * - mpirun (Open MPI): OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE. MASTER_ADDR/MASTER_PORT
 *   where set, else 127.0.0.1:29500 when every rank runs on this machine (NCCL needs rank 0's address).
 * - SLURM (srun): SLURM_PROCID, SLURM_STEP_NUM_TASKS (the step's task count, which srun sets; else
 *   SLURM_NTASKS), SLURM_LOCALID. The master is MASTER_ADDR where set, else the first host of the step's
 *   node list (SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST): srun places rank 0 on the first node of the
 *   step, and NCCL's rank 0 listens there. SLURM_LAUNCH_NODE_IPADDR (where srun ran) is the last resort
 *   only, because srun may run on a login node that holds no rank. The port is MASTER_PORT where set, else
 *   29500 + (SLURM_JOB_ID mod 1000), so that two jobs sharing a node do not collide.
 * - none of them: a world of one.
 *
 * The communicator: the world of one needs none ({@link singleCommunicator}); on the CPU, Open MPI, which
 * only works in processes mpirun started; on CUDA, NCCL, with rank 0 listening at MASTER_ADDR and
 * MASTER_PORT + 1 (torchrun's own store holds MASTER_PORT). Every collective is under the watchdog.
 * @module
 */
import type { Device } from "../tensor.ts";
import { CommError, type Communicator, singleCommunicator } from "./communicator.ts";
import { type MpiOptions, openMpi, startedByMpirun } from "./mpi.ts";
import { type NcclOptions, openNccl } from "./nccl.ts";
import { checkTimeoutMs, DEFAULT_COMM_TIMEOUT_MS, type WatchdogOptions, withWatchdog } from "./watchdog.ts";

/** Who started the process. */
export type Launcher = "torchrun" | "mpirun" | "slurm" | "none";

/** A process's place in the world. */
export type World = {
  launcher: Launcher;
  rank: number;
  size: number;
  /** The rank among this machine's processes. */
  localRank: number;
  /** How many processes run on this machine (undefined where the launcher does not say). */
  localSize?: number;
  /** Rank 0's host, where known. */
  masterAddr?: string;
  /** The launcher's port on rank 0's host (NCCL takes the next one). */
  masterPort?: number;
};

type Env = Record<string, string | undefined>;

/** The default MASTER_PORT, torchrun's. */
export const DEFAULT_MASTER_PORT = 29500;

function wholeNumber(env: Env, name: string, min = 0): number | undefined {
  const v = env[name];
  if (v === undefined) return undefined;
  if (!/^\s*\d+\s*$/.test(v) || Number(v) < min || !Number.isSafeInteger(Number(v))) {
    throw new Error(`launch: ${name}=${JSON.stringify(v)} is not a whole number${min ? ` ≥ ${min}` : ""}`);
  }
  return Number(v);
}

function port(env: Env, name: string): number | undefined {
  const p = wholeNumber(env, name);
  if (p !== undefined && (p < 1 || p > 65534)) {
    throw new Error(`launch: ${name}=${p} is not a port in [1, 65534] (NCCL takes the next one)`);
  }
  return p;
}

/**
 * The first host of a SLURM node list in its compressed form: `gpu[03-05,07],cpu1` → `gpu03`,
 * `rack[1-2]-n[4-5]` → `rack1-n4`.
 */
export function firstHost(nodelist: string): string {
  let depth = 0, end = nodelist.length;
  for (let i = 0; i < nodelist.length; i++) {
    const c = nodelist[i];
    if (c === "[") depth++;
    else if (c === "]") depth--;
    else if (c === "," && depth === 0) {
      end = i;
      break;
    }
  }
  const first = nodelist.slice(0, end).trim();
  const host = first.replace(/\[([^\]]*)\]/g, (_, inner: string) => inner.split(",")[0].split("-")[0]);
  if (!host || /[\[\]]/.test(host)) {
    throw new Error(`launch: cannot read a host from the node list ${JSON.stringify(nodelist)}`);
  }
  return host;
}

/** SLURM's tasks-per-node list, `2(x3),1` → [2, 2, 2, 1]. */
function tasksPerNode(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(",")) {
    const m = part.trim().match(/^(\d+)(?:\(x(\d+)\))?$/);
    if (!m) return [];
    for (let i = 0; i < Number(m[2] ?? 1); i++) out.push(Number(m[1]));
  }
  return out;
}

/** Reads the world from a launcher's environment (see the module's note); throws naming a bad variable. */
export function worldFromEnv(env: Env = Deno.env.toObject()): World {
  let w: World;
  if (env.RANK !== undefined || env.WORLD_SIZE !== undefined) {
    if (env.RANK === undefined || env.WORLD_SIZE === undefined) {
      throw new Error(
        `launch: RANK and WORLD_SIZE go together (torchrun sets both); only ${
          env.RANK === undefined ? "WORLD_SIZE" : "RANK"
        } is set`,
      );
    }
    const rank = wholeNumber(env, "RANK")!, size = wholeNumber(env, "WORLD_SIZE", 1)!;
    w = {
      launcher: "torchrun",
      rank,
      size,
      localRank: wholeNumber(env, "LOCAL_RANK") ?? rank,
      localSize: wholeNumber(env, "LOCAL_WORLD_SIZE", 1) ?? (env.LOCAL_RANK === undefined ? size : undefined),
      masterAddr: env.MASTER_ADDR || undefined,
      masterPort: port(env, "MASTER_PORT"),
    };
  } else if (startedByMpirun(env)) {
    const size = wholeNumber(env, "OMPI_COMM_WORLD_SIZE", 1)!;
    const localSize = wholeNumber(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 1);
    const allHere = localSize === size;
    w = {
      launcher: "mpirun",
      rank: wholeNumber(env, "OMPI_COMM_WORLD_RANK")!,
      size,
      localRank: wholeNumber(env, "OMPI_COMM_WORLD_LOCAL_RANK") ?? 0,
      localSize,
      masterAddr: env.MASTER_ADDR || (allHere ? "127.0.0.1" : undefined),
      masterPort: port(env, "MASTER_PORT") ?? (allHere || env.MASTER_ADDR ? DEFAULT_MASTER_PORT : undefined),
    };
  } else if (env.SLURM_PROCID !== undefined && (env.SLURM_STEP_NUM_TASKS ?? env.SLURM_NTASKS) !== undefined) {
    const sizeVar = env.SLURM_STEP_NUM_TASKS !== undefined ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
    const nodes = env.SLURM_STEP_NODELIST ?? env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST;
    const jobId = wholeNumber(env, "SLURM_JOB_ID");
    const perNode = tasksPerNode(env.SLURM_STEP_TASKS_PER_NODE ?? env.SLURM_TASKS_PER_NODE ?? "");
    const nodeId = wholeNumber(env, "SLURM_NODEID") ?? 0;
    w = {
      launcher: "slurm",
      rank: wholeNumber(env, "SLURM_PROCID")!,
      size: wholeNumber(env, sizeVar, 1)!,
      localRank: wholeNumber(env, "SLURM_LOCALID") ?? 0,
      localSize: perNode[nodeId],
      masterAddr: env.MASTER_ADDR || (nodes ? firstHost(nodes) : env.SLURM_LAUNCH_NODE_IPADDR || undefined),
      masterPort: port(env, "MASTER_PORT") ?? DEFAULT_MASTER_PORT + (jobId ?? 0) % 1000,
    };
  } else {
    return { launcher: "none", rank: 0, size: 1, localRank: 0, localSize: 1 };
  }
  if (w.rank >= w.size) {
    throw new Error(`launch (${w.launcher}): rank ${w.rank} is not below the world size ${w.size}`);
  }
  if (w.localSize !== undefined && w.localRank >= w.localSize) {
    throw new Error(
      `launch (${w.launcher}): local rank ${w.localRank} is not below the local world size ${w.localSize}`,
    );
  }
  return w;
}

/**
 * The CUDA device of a rank: its local rank (torchrun and mpirun start one process per device and leave all
 * visible), or 0 where CUDA_VISIBLE_DEVICES names a single device (SLURM's `--gpus-per-task`, or a launcher
 * that gives each process its own). Training, sampling, scoring and evaluation under a launcher all use it.
 */
export function rankCudaDevice(
  world: { localRank: number },
  cudaVisibleDevices: string | undefined = Deno.env.get("CUDA_VISIBLE_DEVICES"),
): number {
  const listed = cudaVisibleDevices?.split(",").filter((d) => d.trim() !== "").length;
  return listed === 1 ? 0 : world.localRank;
}

/**
 * The `host:port` NCCL's rank 0 listens on: MASTER_ADDR and MASTER_PORT + 1 (torchrun's store holds
 * MASTER_PORT). An IPv6 address is bracketed.
 */
export function ncclAddress(world: World): string {
  const who = `rank ${world.rank}/${world.size}`;
  if (!world.masterAddr || world.masterPort === undefined) {
    throw new Error(
      `${who}: NCCL needs rank 0's address: set MASTER_ADDR and MASTER_PORT (${world.launcher} did not say, and ` +
        "the ranks are not all on this machine)",
    );
  }
  const host = world.masterAddr.includes(":") && !world.masterAddr.startsWith("[")
    ? `[${world.masterAddr}]`
    : world.masterAddr;
  return `${host}:${world.masterPort + 1}`;
}

/** Options for {@link openCommunicator}. */
export type OpenOptions = {
  /** Where the data the collectives carry lives: the CPU (Open MPI) or CUDA (NCCL). */
  device: Device;
  /** How long one collective may take before the watchdog ends the process (ms; default 600 000). */
  timeoutMs?: number;
  /** The world (default: read from the environment by {@link worldFromEnv}). */
  world?: World;
  /** The environment the launcher is recognized from (default: this process's). */
  env?: Env;
  /** The CUDA stream NCCL issues collectives on (default the legacy default stream). */
  stream?: Deno.PointerValue;
  /** The watchdog's report and exit (tests). */
  watchdog?: Omit<WatchdogOptions, "timeoutMs">;
  /** More options for Open MPI (tests set maxCount). */
  mpi?: Omit<MpiOptions, "expect" | "localRank">;
  /** More options for NCCL. */
  nccl?: Partial<Omit<NcclOptions, "rank" | "size" | "localRank">>;
};

/**
 * The communicator of this process's world (see the module's note), its collectives under the watchdog.
 * Errors name the rank (`rank 1/2: …`).
 */
export async function openCommunicator(o: OpenOptions): Promise<Communicator> {
  const env = o.env ?? Deno.env.toObject();
  const world = o.world ?? worldFromEnv(env);
  const timeoutMs = checkTimeoutMs(o.timeoutMs ?? DEFAULT_COMM_TIMEOUT_MS);
  if (world.size === 1) return singleCommunicator();
  const { rank, size } = world;
  const fail = (detail: string): never => {
    throw new CommError(rank, size, "open", detail);
  };
  let comm: Communicator;
  try {
    if (o.device === "cpu") {
      if (!startedByMpirun(env)) {
        fail(
          `training on the CPU with ${size} processes runs over Open MPI, which needs processes started by ` +
            `mpirun; this one was started by ${world.launcher}: launch with \`mpirun -np ${size} deno task train …\` ` +
            "(or train on CUDA, where torchrun and srun work)",
        );
      }
      comm = await openMpi({ ...o.mpi, expect: { rank, size }, localRank: world.localRank });
    } else if (o.device === "cuda") {
      comm = await openNccl({
        commId: ncclAddress(world),
        timeoutMs,
        stream: o.stream,
        ...o.nccl,
        rank,
        size,
        localRank: world.localRank,
      });
    } else {
      return fail(`device must be "cpu" or "cuda", got ${JSON.stringify(o.device)}`);
    }
  } catch (e) {
    if (e instanceof CommError) throw e;
    const m = (e as Error).message, prefix = `rank ${rank}/${size}: `;
    throw new CommError(rank, size, "open", m.startsWith(prefix) ? m.slice(prefix.length) : m);
  }
  return withWatchdog(comm, { ...o.watchdog, timeoutMs });
}
