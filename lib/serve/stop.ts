/**
 * Stop sequences: where the generated text first contains one of the client's stop strings, and how much of
 * the text's end must be held back while streaming because it could still grow into one (a client must
 * never receive text that a later token turns into a stop string and so cuts away).
 * @module
 */

/** Finds the client's stop strings in a growing text. */
export class StopMatcher {
  readonly #stops: string[];
  readonly #longest: number;

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
    this.#longest = Math.max(0, ...this.#stops.map((s) => s.length));
  }

  /** Whether there is any stop string. */
  get active(): boolean {
    return this.#stops.length > 0;
  }

  /**
   * The index where the earliest stop string starts in `text`, or -1. Only matches that end after
   * `checkedUpTo` are looked for (earlier text was checked before).
   */
  find(text: string, checkedUpTo = 0): number {
    let best = -1;
    const from = Math.max(0, checkedUpTo - this.#longest + 1);
    for (const s of this.#stops) {
      const i = text.indexOf(s, from);
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }

  /** How many characters at the end of `text` are a proper prefix of some stop string. */
  holdback(text: string): number {
    let hold = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
        if (text.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }
}
