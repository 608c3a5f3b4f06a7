/**
 * What the trainer (trainer.ts) does differently when its process is one rank of several: the world from
 * the launcher's environment (torchrun, mpirun, SLURM: lib/runtime/comm/launch.ts) or a communicator given
 * by a test; rank 0 alone prints and writes the run folder (the others write what they must into a private
 * temporary folder, and read checkpoints from the shared one); the ranks agree on when to stop; a resume
 * with another world size keeps the global batch.
 * @module
 */
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Communicator } from "../runtime/comm/communicator.ts";
import { openCommunicator, type OpenOptions, rankCudaDevice, worldFromEnv } from "../runtime/comm/launch.ts";
import type { Device } from "../runtime/tensor.ts";
import type { GraphFolder } from "../runtime/graph_folder.ts";
import { buildGradientGraph } from "../graph/distributed.ts";
import { type RunPaths, runPaths } from "./run_folder.ts";
import { type DistributedOptions, DistributedSession, rankError, type ZeroStage } from "./distributed.ts";
import { type AlignmentGraphSpec, alignmentTrainingSpec } from "./train_graph.ts";

/**
 * A run's place in the world: a communicator where there are several ranks; on CUDA, the device ordinal its
 * sessions and NCCL use (`deviceId`; the local rank where absent).
 */
export type TrainWorld = {
  rank: number;
  size: number;
  localRank: number;
  comm?: Communicator;
  deviceId?: number;
};

/** The world as the launcher (or a test's communicator) says, before any communicator is open. */
export function plannedWorld(comm?: Communicator, env?: Record<string, string | undefined>): TrainWorld {
  if (comm) return { rank: comm.rank, size: comm.size, localRank: comm.localRank, comm };
  const w = worldFromEnv(env);
  return { rank: w.rank, size: w.size, localRank: w.localRank };
}

/**
 * Opens the communicator of a world of several ranks (Open MPI on the CPU, NCCL on CUDA device
 * {@link rankCudaDevice}, each collective under the watchdog), unless a test gave one. On CUDA the step's
 * host arrays are staged through device memory by the NCCL communicator (lib/runtime/comm/nccl.ts). fp16
 * needs nothing here: its overflow skip is decided from the all-reduced gradient norm, alike on every rank
 * (lib/train/distributed.ts). `open`: more for {@link openCommunicator} (tests: the environment, fakes of
 * NCCL).
 */
export async function openTrainWorld(
  world: TrainWorld,
  device: Device,
  o: { timeoutMs?: number; open?: Partial<OpenOptions> } = {},
): Promise<TrainWorld> {
  if (world.size === 1 || world.comm) return world;
  if (device !== "cuda") {
    const comm = await openCommunicator({ device, timeoutMs: o.timeoutMs, ...o.open });
    return { ...world, comm };
  }
  const env = o.open?.env ?? Deno.env.toObject();
  const deviceId = o.open?.nccl?.device ?? rankCudaDevice(world, env.CUDA_VISIBLE_DEVICES);
  const comm = await openCommunicator({
    device,
    timeoutMs: o.timeoutMs,
    ...o.open,
    env,
    nccl: { ...o.open?.nccl, device: deviceId },
  });
  return { ...world, comm, deviceId };
}

/** The hooks of a rank: rank 0's as given; the others print nothing and report no progress. */
export function rankHooks<H extends { log?: (l: string) => void; onChunk?: unknown }>(
  hooks: H,
  world: TrainWorld,
): H {
  return world.rank === 0 ? hooks : { ...hooks, log: () => {}, onChunk: undefined };
}

/**
 * The run folder every rank trains in: rank 0 makes it (`make`) and tells the others its path (so a fresh
 * timestamped folder is the same for all).
 */
export async function sharedRunFolder(world: TrainWorld, make: () => Promise<RunPaths>): Promise<RunPaths> {
  if (world.size === 1 || !world.comm) return await make();
  const bytes = new Uint8Array(4096);
  if (world.rank === 0) {
    const run = await make();
    const path = new TextEncoder().encode(run.dir);
    if (path.length > bytes.length - 4) {
      throw new Error(
        `rank 0/${world.size}: the run folder's path is over ${bytes.length - 4} bytes: ${run.dir}`,
      );
    }
    new DataView(bytes.buffer).setUint32(0, path.length);
    bytes.set(path, 4);
    await world.comm.broadcast(bytes, 0);
    return run;
  }
  await world.comm.broadcast(bytes, 0);
  const n = new DataView(bytes.buffer).getUint32(0);
  return runPaths(new TextDecoder().decode(bytes.subarray(4, 4 + n)));
}

/**
 * Where a rank writes: rank 0 the run folder itself; another rank a private temporary folder (its graphs,
 * its metrics, nothing anyone reads) holding a copy of the run's reference log-prob cache, so that it
 * decides as rank 0 does whether to score (scoring is a collective). Removed by the returned `dispose`.
 */
export async function rankRunFolder(
  world: TrainWorld,
  shared: RunPaths,
): Promise<{ run: RunPaths; [Symbol.asyncDispose](): Promise<void> }> {
  if (world.rank === 0) return { run: shared, [Symbol.asyncDispose]: () => Promise.resolve() };
  const dir = await Deno.makeTempDir({ prefix: `train-rank${world.rank}-` });
  const run = runPaths(dir);
  await mkdir(run.checkpoints, { recursive: true });
  await copyFile(join(shared.dir, "reference_logps.json"), join(dir, "reference_logps.json")).catch(() => {});
  return { run, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}) };
}

/**
 * Whether `flag` holds on any rank (a collective): decisions every rank must take alike, such as stopping at
 * a chunk's boundary (a Ctrl-C reaches the ranks at different moments, and a rank that stopped alone would
 * leave the others waiting in a collective) or what only rank 0's files say.
 */
export async function anyRank(world: TrainWorld, flag: boolean): Promise<boolean> {
  if (world.size === 1 || !world.comm) return flag;
  const flags = Int32Array.of(flag ? 1 : 0);
  await world.comm.allReduce(flags, "max");
  return flags[0] > 0;
}

/**
 * The batch of a run resumed on `world` ranks: its global batch (prompts per micro-batch over all ranks) is the
 * saved one — `globalBatch` where config.json has it, else `--batch-size` × the saved ranks — so the plan of
 * steps stays and the resume is exact; the per-device batch is that over the ranks now, rounded up where it
 * does not divide (the ranks then take parts as even as they go, rank_data.ts).
 */
export function resumedBatch(
  saved: { batchSize: number; worldSize?: number; globalBatch?: number },
  world: number,
  log: (line: string) => void,
): { batchSize: number; globalBatch: number } {
  const savedWorld = saved.worldSize ?? 1;
  const globalBatch = saved.globalBatch ?? saved.batchSize * savedWorld;
  const batchSize = Math.ceil(globalBatch / world);
  if (savedWorld !== world) {
    const parts = globalBatch % world === 0
      ? `--batch-size ${batchSize} per device`
      : `${batchSize} prompts on the first ${
        globalBatch % world > 1 ? `${globalBatch % world} devices` : "device"
      }, ${batchSize - 1} on the others`;
    log(
      `resuming a run of ${savedWorld} rank${savedWorld > 1 ? "s" : ""} on ${world}: ${parts}, the global ` +
        `batch of ${globalBatch} prompts per micro-batch step as saved`,
    );
  }
  return { batchSize, globalBatch };
}

/**
 * The data-parallel session of an alignment run (see distributed.ts), on the world's CUDA device (the one
 * NCCL uses: `deviceId`, else the local rank). `lossScale`: the initial loss scale of an fp16 run (default
 * FP16_LOSS_SCALING's, as one process starts: see {@link DistributedOptions}).
 */
export async function distributedSession(
  spec: AlignmentGraphSpec,
  init: Record<string, Float32Array>,
  world: TrainWorld,
  o: {
    device: Device;
    zero?: ZeroStage;
    graphFolder?: GraphFolder;
    graphName?: string;
    hashEvery?: number;
    lossScale?: DistributedOptions["lossScale"];
  },
): Promise<DistributedSession> {
  if (!world.comm) throw new Error("distributedSession: no communicator");
  try {
    // ZeRO-1: the gradient padded for the ranks, which a device reduce-scatter writes in place
    const built = buildGradientGraph(alignmentTrainingSpec({ ...spec, rowOffset: true }), {
      ranks: o.zero === 1 ? world.size : undefined,
    });
    return await DistributedSession.create(built, init, world.comm, {
      device: o.device,
      deviceId: o.device === "cuda" ? world.deviceId ?? world.localRank : undefined,
      graphFolder: o.graphFolder,
      graphName: o.graphName,
      optimizer: spec.optimizer,
      maxGradNorm: spec.maxGradNorm,
      zero: o.zero,
      hashEvery: o.hashEvery,
      lossScale: o.lossScale,
    });
  } catch (e) {
    throw rankError(world.comm, e);
  }
}

/** The sum of `x` over the ranks (a collective; `x` itself with one rank): a global batch's token count. */
export async function sumRanks(world: TrainWorld, x: number): Promise<number> {
  if (world.size === 1 || !world.comm) return x;
  const v = Float64Array.of(x);
  await world.comm.allReduce(v, "sum");
  return v[0];
}
