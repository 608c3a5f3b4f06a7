/**
 * Training on several devices: the {@link Communicator} contract and its backends (Open MPI on the CPU,
 * NCCL on CUDA, an in-process world for tests, a world of one), the launcher's environment read into a
 * world, and the watchdog.
 * @module
 */
export * from "./communicator.ts";
export * from "./local.ts";
export * from "./watchdog.ts";
export * from "./mpi.ts";
export * from "./nccl.ts";
export * from "./launch.ts";
