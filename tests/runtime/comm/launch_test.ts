import assert from "node:assert/strict";
import { firstHost, ncclAddress, openCommunicator, worldFromEnv } from "../../../lib/runtime/comm/mod.ts";

Deno.test("launch: no launcher is a world of one", () => {
  assert.deepEqual(worldFromEnv({ HOME: "/root" }), {
    launcher: "none",
    rank: 0,
    size: 1,
    localRank: 0,
    localSize: 1,
  });
});

Deno.test("launch: torchrun's variables", () => {
  assert.deepEqual(
    worldFromEnv({
      RANK: "5",
      WORLD_SIZE: "8",
      LOCAL_RANK: "1",
      LOCAL_WORLD_SIZE: "4",
      MASTER_ADDR: "node7",
      MASTER_PORT: "29400",
    }),
    {
      launcher: "torchrun",
      rank: 5,
      size: 8,
      localRank: 1,
      localSize: 4,
      masterAddr: "node7",
      masterPort: 29400,
    },
  );
  assert.throws(
    () => worldFromEnv({ RANK: "0" }),
    /RANK and WORLD_SIZE go together \(torchrun sets both\); only RANK is set/,
  );
  assert.throws(
    () => worldFromEnv({ RANK: "2", WORLD_SIZE: "2" }),
    /launch \(torchrun\): rank 2 is not below the world size 2/,
  );
  assert.throws(() => worldFromEnv({ RANK: "x", WORLD_SIZE: "2" }), /launch: RANK="x" is not a whole number/);
  assert.throws(
    () => worldFromEnv({ RANK: "0", WORLD_SIZE: "0" }),
    /WORLD_SIZE="0" is not a whole number ≥ 1/,
  );
  assert.throws(
    () => worldFromEnv({ RANK: "0", WORLD_SIZE: "2", MASTER_PORT: "65535" }),
    /MASTER_PORT=65535 is not a port in \[1, 65534\] \(NCCL takes the next one\)/,
  );
  assert.throws(
    () => worldFromEnv({ RANK: "0", WORLD_SIZE: "4", LOCAL_RANK: "2", LOCAL_WORLD_SIZE: "2" }),
    /local rank 2 is not below the local world size 2/,
  );
});

Deno.test("launch: Open MPI's variables, with rank 0 on this machine when all ranks are", () => {
  const ompi = {
    OMPI_COMM_WORLD_RANK: "1",
    OMPI_COMM_WORLD_SIZE: "2",
    OMPI_COMM_WORLD_LOCAL_RANK: "1",
    OMPI_COMM_WORLD_LOCAL_SIZE: "2",
  };
  assert.deepEqual(worldFromEnv(ompi), {
    launcher: "mpirun",
    rank: 1,
    size: 2,
    localRank: 1,
    localSize: 2,
    masterAddr: "127.0.0.1",
    masterPort: 29500,
  });
  const across = { ...ompi, OMPI_COMM_WORLD_SIZE: "4", OMPI_COMM_WORLD_RANK: "3" };
  assert.equal(worldFromEnv(across).masterAddr, undefined, "rank 0 may be on another machine");
  assert.throws(
    () => ncclAddress(worldFromEnv(across)),
    /rank 3\/4: NCCL needs rank 0's address: set MASTER_ADDR and MASTER_PORT/,
  );
  assert.equal(ncclAddress(worldFromEnv({ ...across, MASTER_ADDR: "10.0.0.1" })), "10.0.0.1:29501");
  // mpirun inside a SLURM allocation: Open MPI's own variables win over the allocation's
  assert.equal(worldFromEnv({ ...ompi, SLURM_PROCID: "0", SLURM_NTASKS: "2" }).launcher, "mpirun");
});

Deno.test("launch: SLURM's variables; the master is the first node of the step, the port follows the job", () => {
  const slurm = {
    SLURM_PROCID: "6",
    SLURM_NTASKS: "16",
    SLURM_STEP_NUM_TASKS: "8",
    SLURM_LOCALID: "2",
    SLURM_NODEID: "1",
    SLURM_STEP_TASKS_PER_NODE: "4(x2)",
    SLURM_STEP_NODELIST: "gpu[07-08]",
    SLURM_JOB_NODELIST: "gpu[03-08]",
    SLURM_LAUNCH_NODE_IPADDR: "10.1.1.1",
    SLURM_JOB_ID: "123456",
  };
  assert.deepEqual(worldFromEnv(slurm), {
    launcher: "slurm",
    rank: 6,
    size: 8,
    localRank: 2,
    localSize: 4,
    masterAddr: "gpu07",
    masterPort: 29500 + 456,
  });
  const noStep = { ...slurm, SLURM_STEP_NUM_TASKS: undefined, SLURM_STEP_NODELIST: undefined };
  assert.deepEqual([worldFromEnv(noStep).size, worldFromEnv(noStep).masterAddr], [16, "gpu03"]);
  const onlyIp = { ...noStep, SLURM_JOB_NODELIST: undefined };
  assert.equal(worldFromEnv(onlyIp).masterAddr, "10.1.1.1");
  assert.deepEqual(
    [
      worldFromEnv({ ...slurm, MASTER_ADDR: "head", MASTER_PORT: "4000" }).masterAddr,
      ncclAddress(
        worldFromEnv({ ...slurm, MASTER_ADDR: "head", MASTER_PORT: "4000" }),
      ),
    ],
    ["head", "head:4001"],
  );
  // torchrun started by srun: torchrun's variables win
  assert.equal(worldFromEnv({ ...slurm, RANK: "0", WORLD_SIZE: "2" }).launcher, "torchrun");
});

Deno.test("launch: firstHost reads SLURM's compressed node lists", () => {
  assert.equal(firstHost("node1"), "node1");
  assert.equal(firstHost("gpu[03-05,07],cpu1"), "gpu03");
  assert.equal(firstHost("a,b[1-2]"), "a");
  assert.equal(firstHost("rack[1-2]-n[4-5]"), "rack1-n4");
  assert.equal(firstHost("n[7,2-3]"), "n7");
  assert.throws(() => firstHost("bad[1-2"), /cannot read a host from the node list "bad\[1-2"/);
});

Deno.test("launch: NCCL's address is MASTER_ADDR at MASTER_PORT + 1, IPv6 bracketed", () => {
  const base = { launcher: "torchrun" as const, rank: 0, size: 2, localRank: 0 };
  assert.equal(ncclAddress({ ...base, masterAddr: "node1", masterPort: 29500 }), "node1:29501");
  assert.equal(ncclAddress({ ...base, masterAddr: "fe80::1", masterPort: 1000 }), "[fe80::1]:1001");
});

Deno.test("openCommunicator: a world of one needs nothing", async () => {
  for (const device of ["cpu", "cuda"] as const) {
    await using c = await openCommunicator({ device, env: {} });
    assert.deepEqual([c.backend, c.size], ["single", 1]);
  }
});

Deno.test("openCommunicator: on the CPU, a world not started by mpirun is refused, saying to use mpirun", async () => {
  await assert.rejects(
    openCommunicator({
      device: "cpu",
      env: { RANK: "1", WORLD_SIZE: "2", MASTER_ADDR: "h", MASTER_PORT: "1" },
    }),
    /^CommError: rank 1\/2: open: training on the CPU with 2 processes runs over Open MPI, which needs processes started by mpirun; this one was started by torchrun: launch with `mpirun -np 2 deno task train …`/,
  );
  await assert.rejects(
    openCommunicator({ device: "cpu", env: { SLURM_PROCID: "0", SLURM_NTASKS: "4" } }),
    /rank 0\/4: open: .*started by slurm: launch with `mpirun -np 4/,
  );
});

Deno.test("openCommunicator: on CUDA without rank 0's address the error names the rank", async () => {
  await assert.rejects(
    openCommunicator({
      device: "cuda",
      env: { OMPI_COMM_WORLD_RANK: "2", OMPI_COMM_WORLD_SIZE: "4", OMPI_COMM_WORLD_LOCAL_SIZE: "2" },
    }),
    /^CommError: rank 2\/4: open: NCCL needs rank 0's address: set MASTER_ADDR and MASTER_PORT/,
  );
});
