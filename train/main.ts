/**
 * `deno task train`: with no arguments, the offline demo; with `--model` and `--data`, an alignment run.
 * This file only parses, calls lib/train and prints; `--help` lists every option.
 * @module
 */
import type { TrainOptions } from "../lib/train/option_specs.ts";
import { OptionsError, parseTrainOptions } from "../lib/train/options.ts";
import { ProgressDisplay } from "../lib/train/progress.ts";
import { train, type TrainConfig, type TrainHooks } from "../lib/train/trainer.ts";
import { runDemo } from "../lib/train/demo/demo.ts";
import { stopOnSignals } from "../lib/cli.ts";

async function main(argv: string[]): Promise<number> {
  let opts: TrainOptions;
  try {
    const parsed = parseTrainOptions(argv.length === 0 ? ["--demo"] : argv);
    if ("help" in parsed) {
      console.log(parsed.help);
      return 0;
    }
    opts = parsed;
  } catch (e) {
    if (e instanceof OptionsError) {
      console.error(`error: ${e.message}\n(see deno task train --help)`);
      return 2;
    }
    throw e;
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
        display = new ProgressDisplay({ totalSteps });
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

if (import.meta.main) Deno.exit(await main(Deno.args));
