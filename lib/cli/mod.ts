/**
 * What the command-line entries (train/, sample/, score/, eval/, serve/ main.ts) share: the option engine
 * (declarative tables, parsing with every problem listed at once, generated `--help`, the usage-error path),
 * stopping on Ctrl-C or SIGTERM, and the formatting of progress lines. Below every stage of lib/: it imports
 * none of them.
 * @module
 */
export * from "./spec.ts";
export * from "./options.ts";
export * from "./help.ts";
export * from "./usage.ts";
export * from "./signals.ts";
export * from "./progress.ts";
