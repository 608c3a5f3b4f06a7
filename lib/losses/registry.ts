/**
 * Name → loss lookup, so configs and the command line can pick a loss by its string name and a
 * trainer can tell whether it must load reward data.
 *
 * @module
 */

import type { LossFn, LossName } from "./types.ts";
import { infoNcaLoss } from "./infonca.ts";
import { ncaLoss } from "./nca.ts";
import { dpoLoss } from "./dpo.ts";
import { ncaPairLoss } from "./nca_pair.ts";
import { ipoLoss } from "./ipo.ts";

/**
 * Every loss by its name: `infonca`, `nca` (reward data, any K ≥ 2), `dpo`, `nca_pair`, `ipo`
 * (preference pairs, K = 2).
 *
 * @example
 * ```ts
 * const { loss } = lossByName["dpo"]({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.1 });
 * ```
 */
export const lossByName: Readonly<Record<LossName, LossFn>> = Object.freeze({
  infonca: infoNcaLoss,
  nca: ncaLoss,
  dpo: dpoLoss,
  nca_pair: ncaPairLoss,
  ipo: ipoLoss,
});

/** All loss names, in a fixed order (for help texts and config validation). */
export const lossNames: readonly LossName[] = Object.freeze(["infonca", "nca", "dpo", "nca_pair", "ipo"]);

/** Whether a string is one of the loss names (narrows its type). */
export function isLossName(name: unknown): name is LossName {
  return typeof name === "string" && (lossNames as readonly string[]).includes(name);
}

/**
 * Whether a loss needs explicit rewards (reward data with K scored responses: InfoNCA, NCA) rather
 * than preference pairs (DPO, NCA-pair, IPO), so a trainer can load the right data format.
 *
 * @throws {TypeError} an unknown loss name (lists the valid ones).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(needsRewards("nca"), true);
 * assert.equal(needsRewards("dpo"), false);
 * ```
 */
export function needsRewards(name: LossName): boolean {
  if (!isLossName(name)) {
    throw new TypeError(`unknown loss name ${JSON.stringify(name)}; expected one of ${lossNames.join(", ")}`);
  }
  return name === "infonca" || name === "nca";
}
