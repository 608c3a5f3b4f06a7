/**
 * `deno task train`: with no arguments, the offline demo; with `--model` and `--data`, an alignment run.
 * This file only parses, calls lib/train and prints; `--help` lists every option.
 * @module
 */
import { optionNotices, parseTrainOptions, trainHelp } from "../lib/train/options.ts";
import { ProgressDisplay } from "../lib/train/progress.ts";
import { train, type TrainConfig, type TrainHooks } from "../lib/train/trainer.ts";
import { runDemo } from "../lib/train/demo/demo.ts";
import { parsedOrExitCode, stopOnSignals } from "../lib/cli/mod.ts";
import { plannedWorld } from "../lib/train/distributed_run.ts";
import { freePortPair, nprocCommands, runRanks } from "../lib/train/nproc.ts";
import { findMpirun } from "../lib/runtime/comm/mpi.ts";
import { worldFromEnv } from "../lib/runtime/comm/launch.ts";
import { type DeviceRequest, resolveDevice } from "../lib/runtime/device.ts";

async function main(argv: string[]): Promise<number> {
  const opts = parsedOrExitCode(
    () => {
      const parsed = parseTrainOptions(argv.length === 0 ? ["--demo"] : argv);
      return "help" in parsed ? null : parsed;
    },
    trainHelp(),
    "train",
  );
  if (typeof opts === "number") return opts;
  for (const notice of optionNotices(opts)) console.log(`note: ${notice}`);
  if (opts.nproc !== undefined && opts.nproc > 1) {
    return await startRanks(opts.nproc, opts.device, !!opts.demo, argv);
  }

  // Ctrl-C or SIGTERM: finish the current chunk, save a checkpoint, exit; a second signal exits at once
  using stop = stopOnSignals(
    "\ninterrupted: saving a checkpoint after the current steps (Ctrl-C again to quit now)",
  );
  let display: ProgressDisplay | undefined;
  const hooks: TrainHooks = {
    signal: stop.signal,
    log: (line) => (display ? display.log(line) : console.log(line)),
    onChunk: ({ step, totalSteps, records, tokens, seconds, memory }) => {
      if (opts.quiet) return;
      if (!display || step <= records.length) {
        display?.finish();
        // made after the run's first chunk: it starts where that chunk did, so the first ETA has a rate
        display = new ProgressDisplay({ totalSteps, startStep: step - records.length, elapsedS: seconds });
      }
      const last = records[records.length - 1];
      display.update(step, { metrics: last, tokensPerS: tokens / seconds, epoch: last.epoch, memory });
      if (step >= totalSteps) {
        display.finish();
        display = undefined;
      }
    },
  };
  try {
    if (opts.demo) {
      await runDemo({ compare: opts.compare, device: opts.device, seed: opts.seed, hooks, log: hooks.log });
      return 0;
    }
    const res = await train(opts as TrainConfig, hooks);
    display?.finish();
    if (res.interrupted) return stop.signal.aborted ? 130 : 0;
    if (plannedWorld().rank !== 0) return 0; // one of several ranks: rank 0 alone reports
    console.log(`\ndone: ${res.steps} steps. Run folder: ${res.run.dir}`);
    if (res.eval) {
      console.log(
        Object.entries(res.eval).filter(([k]) => !/\/A\d+$/.test(k)).map(([k, v]) =>
          `  eval ${k}: ${v.toFixed(4)}`
        )
          .join("\n"),
      );
    }
    console.log(`charts: ${res.run.charts}\npolicy (servable): ${res.run.policy}`);
    return 0;
  } catch (e) {
    display?.finish();
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

/** `--nproc N`: this process starts the N ranks (lib/train/nproc.ts) and waits for them; their exit status. */
async function startRanks(
  nproc: number,
  request: DeviceRequest,
  demo: boolean,
  argv: string[],
): Promise<number> {
  try {
    if (demo) throw new Error("--nproc starts ranks of a training run (--model, --data), not of the demo");
    const world = worldFromEnv();
    if (world.launcher !== "none") {
      throw new Error(
        `--nproc ${nproc} starts the ranks itself, and this process is already rank ${world.rank}/${world.size} ` +
          `of ${world.launcher}: leave --nproc out under a launcher`,
      );
    }
    // auto is resolved once here (not differently per rank); cpu and cuda need no library loaded here
    const { device, notice } = request === "auto"
      ? await resolveDevice(request)
      : { device: request, notice: "" };
    if (notice) console.log(notice);
    const procs = nprocCommands({
      nproc,
      device,
      argv,
      mpirun: device === "cpu" ? findMpirun() : undefined,
      root: Deno.uid() === 0,
      env: Deno.env.toObject(),
      port: device === "cuda" ? freePortPair() : undefined,
    });
    return await runRanks(procs);
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
