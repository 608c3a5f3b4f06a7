/** The CLI's flags, and what --model / --reference resolve to (run folder, model folder, default demo run). */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DEFAULT_LIMITS, parseServeArgs } from "../../lib/serve/options.ts";
import { FALLBACK_ALPHA, FALLBACK_BETA, resolveModelSource } from "../../lib/serve/model_source.ts";
import { buildFixture, RUN_ALPHA, RUN_BETA, RUN_NAME } from "./_fixture.ts";

Deno.test("parseServeArgs: defaults, every flag, and errors that name the flag", () => {
  const noEnv = () => undefined;
  const d = parseServeArgs([], noEnv)!;
  assert.equal(d.port, 8000);
  assert.equal(d.host, "127.0.0.1");
  assert.equal(d.device, "cpu");
  assert.equal(d.model, undefined);
  assert.deepEqual(d.limits, { ...DEFAULT_LIMITS, maxPromptTokens: undefined, maxPromptChars: undefined });
  assert.equal(d.apiKey, undefined);
  assert.deepEqual(d.allowedHosts, []);
  assert.equal(d.exposePaths, false);
  const o = parseServeArgs([
    "--model=runs/x",
    "--reference",
    "base",
    "--port",
    "0",
    "--host",
    "0.0.0.0",
    "--device",
    "auto",
    "--max-concurrent",
    "1",
    "--max-queue",
    "0",
    "--max-body-bytes",
    "1000",
    "--max-prompt-tokens",
    "64",
    "--max-tokens-limit",
    "32",
    "--max-prompt-chars",
    "5000",
    "--body-timeout",
    "2.5",
    "--api-key",
    "sk-test",
    "--allowed-hosts",
    "Example.org, box:8080,*",
    "--expose-paths",
    "--quiet",
  ], noEnv)!;
  assert.equal(o.model, "runs/x");
  assert.equal(o.reference, "base");
  assert.equal(o.port, 0);
  assert.equal(o.device, "auto");
  assert.deepEqual(o.limits, {
    maxConcurrent: 1,
    maxQueue: 0,
    maxBodyBytes: 1000,
    bodyTimeoutMs: 2500,
    maxPromptTokens: 64,
    maxPromptChars: 5000,
    maxTokensLimit: 32,
  });
  assert.equal(o.quiet, true);
  assert.equal(o.apiKey, "sk-test");
  assert.deepEqual(o.allowedHosts, ["example.org", "box:8080", "*"]);
  assert.equal(o.exposePaths, true);
  // the key from the environment, unless the flag gives one
  const env = (name: string) => name === "NCA_API_KEY" ? "from-env" : undefined;
  assert.equal(parseServeArgs([], env)!.apiKey, "from-env");
  assert.equal(parseServeArgs(["--api-key=flag"], env)!.apiKey, "flag");
  assert.throws(() => parseServeArgs(["--api-key", " "], noEnv), /--api-key must not be empty/);
  assert.throws(() => parseServeArgs(["--body-timeout", "0"], noEnv), /--body-timeout must be a number/);
  assert.equal(parseServeArgs(["--help"]), null);
  assert.throws(() => parseServeArgs(["--port", "eighty"]), /--port must be a whole number/);
  assert.throws(() => parseServeArgs(["--port", "70000"]), /--port must be at most 65535/);
  assert.throws(() => parseServeArgs(["--max-concurrent", "0"]), /--max-concurrent/);
  assert.throws(() => parseServeArgs(["--device", "tpu"]), /--device must be one of cpu, cuda, auto/);
  assert.throws(() => parseServeArgs(["--nope"]), /nope/);
  assert.throws(() => parseServeArgs(["runs/x"]), /--model/);
});

Deno.test("resolveModelSource: run folder, default demo run, model folder, --reference, bad folders", async () => {
  const fx = await buildFixture();
  try {
    const run = await resolveModelSource({ model: fx.runDir });
    assert.equal(run.id, RUN_NAME);
    assert.equal(run.modelDir, fx.policyDir);
    assert.equal(run.runDir, fx.runDir);
    assert.equal(run.referenceDir, fx.baseDir);
    assert.equal(run.referenceFrom, "reference.json");
    assert.equal(run.beta, RUN_BETA);
    assert.equal(run.alpha, RUN_ALPHA);
    assert.equal(run.loss, "nca");

    const byDefault = await resolveModelSource({ runsDir: fx.runsDir });
    assert.equal(byDefault.runDir, fx.runDir);
    await assert.rejects(
      resolveModelSource({ runsDir: join(fx.root, "nothing") }),
      /no --model given and no demo run.*deno task train/,
    );

    const folder = await resolveModelSource({ model: fx.baseDir });
    assert.equal(folder.id, "base");
    assert.equal(folder.kind, "exported");
    assert.equal(folder.runDir, null);
    assert.equal(folder.referenceDir, null);
    assert.equal(folder.beta, FALLBACK_BETA);
    assert.equal(folder.alpha, FALLBACK_ALPHA);

    const withRef = await resolveModelSource({ model: fx.baseDir, reference: fx.policyDir });
    assert.equal(withRef.referenceDir, fx.policyDir);
    assert.equal(withRef.referenceFrom, "--reference");

    await assert.rejects(
      resolveModelSource({ model: fx.tokenizerDir }),
      /--model .*tokenizer: a folder without config\.json; expected a Hugging Face model folder .* or a training run folder/,
    );
    await assert.rejects(
      resolveModelSource({ model: fx.runDir, reference: fx.tokenizerDir }),
      /no config.json/,
    );

    // a recorded reference that is gone: a notice, and no reference
    await Deno.writeTextFile(
      join(fx.runDir, "reference.json"),
      JSON.stringify({ model: join(fx.root, "gone") }),
    );
    await Deno.writeTextFile(
      join(fx.runDir, "config.json"),
      JSON.stringify({ model: join(fx.root, "gone2") }),
    );
    const gone = await resolveModelSource({ model: fx.runDir });
    assert.equal(gone.referenceDir, null);
    assert.equal(gone.notices.length, 3);
    assert.match(gone.notices[0], /not there any more/);
  } finally {
    await fx.cleanup();
  }
});
