/// <reference lib="dom" />
/**
 * The dashboard in a real browser (playwright-core driving Debian's chromium): the page loads its assets
 * from the server itself, draws the run's three uPlot charts (canvases with a size), and the inspector form
 * scores the candidates and shows their tokens coloured by log-ratio. With --api-key the page works too:
 * the key comes from `?key=` (then leaves the address bar) or from a prompt after a 401, once. Skipped,
 * saying so, when /usr/bin/chromium is missing (`apt-get install -y chromium`; the CI script installs it).
 *
 * Set SERVE_SCREENSHOT=/path/to/file.png to keep a full-page screenshot of the dashboard.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { join } from "node:path";
import { buildFixture, RUN_NAME, serve } from "./_fixture.ts";

const CHROMIUM = "/usr/bin/chromium";
const HAVE_CHROMIUM = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();
if (!HAVE_CHROMIUM) {
  console.warn(
    `dashboard_test: ${CHROMIUM} not found, so the browser test is skipped (apt-get install -y chromium)`,
  );
}

/**
 * playwright-core probes `/proc/sys/fs/binfmt_misc/WSLInterop` with `fs.existsSync` when it loads; Deno
 * answers that path with a permission error unless run with --allow-all (the test task grants less), where
 * Node would answer false. Answer false, as Node does, then load playwright.
 */
async function loadPlaywright() {
  const existsSync = fs.existsSync;
  fs.existsSync = ((path: fs.PathLike) => {
    try {
      return existsSync(path);
    } catch {
      return false;
    }
  }) as typeof fs.existsSync;
  return await import("playwright-core");
}

Deno.test({
  name: HAVE_CHROMIUM
    ? "dashboard in chromium: charts drawn, inspector scores and colours tokens"
    : `dashboard in chromium — SKIPPED: ${CHROMIUM} is not installed (apt-get install -y chromium)`,
  ignore: !HAVE_CHROMIUM,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const fx = await buildFixture();
    const server = await serve({ model: fx.runDir });
    const userDataDir = await Deno.makeTempDir({ prefix: "serve_chromium_" });
    const { chromium } = await loadPlaywright();
    const browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1360, height: 1000 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
      const requests: string[] = [];
      page.on("request", (r) => requests.push(r.url()));
      await page.goto(server.url + "/");

      // the charts: three uPlot canvases with a real size
      await page.waitForFunction(() => document.querySelectorAll(".uplot canvas").length === 3, null, {
        timeout: 10_000,
      });
      const sizes = await page.$$eval(".uplot canvas", (cs) =>
        cs.map((c) => {
          const r = c.getBoundingClientRect();
          return [r.width, r.height, (c as HTMLCanvasElement).width];
        }));
      for (const [w, h, pixels] of sizes) assert.ok(w > 100 && h > 100 && pixels > 0, `canvas ${w}×${h}`);
      const legends = await page.$$eval(".u-legend .u-label", (ls) => ls.map((l) => l.textContent));
      for (const label of ["train loss", "eval loss", "chosen", "rejected", "log π(chosen)"]) {
        assert.ok(legends.includes(label), `legend ${label} in ${legends.join(", ")}`);
      }
      assert.equal(await page.textContent("#model-id"), RUN_NAME);
      const remote = requests.filter((u) => !u.startsWith("data:") && !u.startsWith(server.url));
      assert.deepEqual(remote, [], "no request leaves the server (no CDN)");

      // the inspector: the demo's run (named "demo") gets the demo's example; submit it, tokens appear,
      // coloured by log-ratio
      assert.equal(await page.inputValue("#prompt"), "sort 3 1 2");
      assert.deepEqual(
        await page.$$eval(".candidate-text", (as) => as.map((a) => (a as HTMLTextAreaElement).value)),
        [
          "1 2 3",
          "1 3 2",
          "3 2 1",
        ],
      );
      await page.click("#score");
      await page.waitForSelector(".tok", { timeout: 10_000 });
      const tokens = await page.$$eval(
        ".candidate-result",
        (cards) => cards.map((c) => c.querySelectorAll(".tok").length),
      );
      assert.deepEqual(tokens, [4, 4, 4], "three candidates of three digits + EOS");
      const spans = await page.$$eval(".tok", (ts) =>
        ts.map((t) => ({
          text: t.textContent,
          title: (t as HTMLElement).title,
          bg: getComputedStyle(t).backgroundColor,
          ratio: Number((t as HTMLElement).dataset.ratio),
        })));
      assert.ok(spans.every((s) => /log π .* log μ .* log π − log μ/.test(s.title)), spans[0].title);
      const coloured = spans.filter((s) => Math.abs(s.ratio) > 0.01);
      assert.ok(coloured.length > 0);
      for (const s of coloured) {
        const green = /rgba\(22, 163, 74/.test(s.bg), red = /rgba\(220, 38, 38/.test(s.bg);
        assert.ok(s.ratio > 0 ? green : red, `${s.text}: ratio ${s.ratio}, background ${s.bg}`);
      }
      assert.equal(await page.$$eval("table.objectives tbody tr", (rows) => rows.length), 3);
      const verdicts = await page.textContent(".verdicts");
      assert.match(verdicts ?? "", /InfoNCA.*NCA.*DPO/s);

      const shot = Deno.env.get("SERVE_SCREENSHOT");
      if (shot) await page.screenshot({ path: shot, fullPage: true });
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await server.close();
      await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
      await fx.cleanup();
    }
  },
});

Deno.test({
  name: HAVE_CHROMIUM
    ? "dashboard in chromium with --api-key: the key from ?key= or from a prompt"
    : `dashboard with --api-key — SKIPPED: ${CHROMIUM} is not installed (apt-get install -y chromium)`,
  ignore: !HAVE_CHROMIUM,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const KEY = "sk-dashboard-7";
    const fx = await buildFixture();
    const server = await serve({ model: fx.runDir, apiKey: KEY });
    const userDataDir = await Deno.makeTempDir({ prefix: "serve_chromium_" });
    const { chromium } = await loadPlaywright();
    const browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    });
    const charts = { timeout: 10_000 };
    try {
      // the key in the address: used, kept for the tab, removed from the address bar
      const page = await browser.newPage();
      const auth: (string | null)[] = [];
      page.on("request", (r) => r.url().includes("/v1/") && auth.push(r.headers()["authorization"] ?? null));
      await page.goto(`${server.url}/?key=${KEY}`);
      await page.waitForFunction(() => document.querySelectorAll(".uplot canvas").length === 3, null, charts);
      assert.equal(new URL(page.url()).search, "", "the key left the address bar");
      assert.equal(await page.textContent("#model-id"), RUN_NAME);
      await page.click("#score");
      await page.waitForSelector(".tok", charts);
      assert.ok(auth.length >= 3 && auth.every((a) => a === `Bearer ${KEY}`), JSON.stringify(auth));

      // a fresh tab without it: one prompt, then everything loads
      const second = await browser.newPage();
      const asked: string[] = [];
      second.on("dialog", (d) => {
        asked.push(d.type());
        d.accept(KEY);
      });
      await second.goto(`${server.url}/`);
      await second.waitForFunction(
        () => document.querySelectorAll(".uplot canvas").length === 3,
        null,
        charts,
      );
      assert.deepEqual(asked, ["prompt"], "asked once for both requests");
      assert.equal(await second.evaluate(() => sessionStorage.getItem("nca-align-api-key")), KEY);
    } finally {
      await browser.close();
      await server.close();
      await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
      await fx.cleanup();
    }
  },
});

Deno.test({
  name: HAVE_CHROMIUM
    ? "dashboard in chromium: a final eval point inside its chart, steps counted once, no demo prompt for another run"
    : `dashboard with a final eval — SKIPPED: ${CHROMIUM} is not installed (apt-get install -y chromium)`,
  ignore: !HAVE_CHROMIUM,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const fx = await buildFixture();
    // 6 training steps and the final evaluation, logged (as the trainer does) as a record of its own at
    // step 6, above every training loss; a run of the user's own, not the demo's
    const records: Record<string, number>[] = [];
    for (let step = 1; step <= 6; step++) {
      records.push({
        step,
        epoch: step / 6,
        loss: 1.386 - 0.001 * step,
        "rewards/chosen": 0.01 * step,
        "rewards/rejected": -0.01 * step,
        "logps/chosen": -10 + 0.1 * step,
        "logps/rejected": -12,
      });
    }
    records.push({ step: 6, epoch: 1, "eval/loss": 1.41 });
    await Deno.writeTextFile(
      join(fx.runDir, "metrics.jsonl"),
      records.map((r) => JSON.stringify(r)).join("\n") + "\n",
    );
    const configPath = join(fx.runDir, "config.json");
    const config = JSON.parse(await Deno.readTextFile(configPath));
    await Deno.writeTextFile(configPath, JSON.stringify({ ...config, name: "mine" }));
    const server = await serve({ model: fx.runDir });
    const userDataDir = await Deno.makeTempDir({ prefix: "serve_chromium_" });
    const { chromium } = await loadPlaywright();
    const browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(server.url + "/");
      await page.waitForFunction(() => document.querySelectorAll(".uplot canvas").length === 3, null, {
        timeout: 10_000,
      });
      assert.match((await page.textContent("#training-note")) ?? "", / · 6 logged steps$/);
      // the loss chart: the eval point is within the y range (not above it), and drawn as a dot
      const [lo, hi] = await page.evaluate(
        "[plots[0].plot.scales.y.min, plots[0].plot.scales.y.max]",
      ) as number[];
      assert.ok(lo < 1.38 && hi > 1.41, `y range ${lo}..${hi}`);
      const steps = await page.evaluate("plots[0].plot.data[0]") as number[];
      assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
      // not the demo's model: no sorting prompt, empty candidates
      assert.equal(await page.inputValue("#prompt"), "");
      const texts = await page.$$eval(
        ".candidate-text",
        (as) => as.map((a) => (a as HTMLTextAreaElement).value),
      );
      assert.deepEqual(texts, ["", ""]);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await server.close();
      await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
      await fx.cleanup();
    }
  },
});
