// The dashboard's script (plain browser JavaScript, no build step): draws the run's training curves with
// uPlot from /v1/runs/current/metrics, and drives the log-prob inspector, which posts to /v1/logprobs and
// colours every token of every candidate by its log-ratio against the reference model.
//
// A server started with --api-key answers /v1/* only with "Authorization: Bearer <key>": the page takes
// the key from `?key=…` in its address (then removes it from the address bar) or asks for it when the
// server answers 401, and keeps it in sessionStorage (this tab only, gone when the tab closes).
//
// The page starts only where there is a document: the pure functions below (rowsByStep, yRange,
// isDemoRun) are also loaded by tests/serve/dashboard_logic_test.ts outside a browser.
"use strict";

const KEY_ITEM = "nca-align-api-key";

function takeKeyFromAddress() {
  const url = new URL(location.href);
  const key = url.searchParams.get("key");
  if (key === null) return;
  if (key.trim()) sessionStorage.setItem(KEY_ITEM, key.trim());
  url.searchParams.delete("key");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}

/** The one prompt for a key while several requests wait for it. */
let asking = null;

function askForKey(rejected) {
  const stored = sessionStorage.getItem(KEY_ITEM);
  if (stored && stored !== rejected) return Promise.resolve(stored); // another request got a new one
  asking ??= new Promise((resolve) => {
    setTimeout(() => {
      const key = (prompt("This server needs its API key (--api-key):") ?? "").trim();
      if (key) sessionStorage.setItem(KEY_ITEM, key);
      asking = null;
      resolve(key || null);
    }, 0);
  });
  return asking;
}

/** fetch() for the API, with the key when there is one; asks for the key once on a 401. */
async function api(path, init = {}) {
  for (let attempt = 0;; attempt++) {
    const key = sessionStorage.getItem(KEY_ITEM);
    const headers = new Headers(init.headers);
    if (key) headers.set("authorization", `Bearer ${key}`);
    const res = await fetch(path, { ...init, headers });
    if (res.status !== 401 || attempt >= 2) return res;
    if (!(await askForKey(key))) return res;
  }
}

const CHARTS = [
  {
    id: "chart-loss",
    series: [
      { key: "loss", label: "train loss", color: "#2563eb" },
      { key: "eval/loss", label: "eval loss", color: "#f59e0b", points: true },
    ],
  },
  {
    id: "chart-rewards",
    series: [
      { key: "rewards/chosen", label: "chosen", color: "#16a34a" },
      { key: "rewards/rejected", label: "rejected", color: "#dc2626" },
    ],
  },
  {
    id: "chart-logps",
    series: [
      { key: "logps/chosen", label: "log π(chosen)", color: "#16a34a" },
      { key: "logps/rejected", label: "log π(rejected)", color: "#dc2626", dash: [5, 4] },
    ],
  },
];

const PLOT_HEIGHT = 230;
const plots = [];
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1000 || (Math.abs(v) < 1e-3 && v !== 0)) return v.toExponential(2);
  return v.toFixed(digits);
}

function signed(v, digits = 3) {
  return v > 0 ? `+${fmt(v, digits)}` : fmt(v, digits);
}

// ---------------------------------------------------------------------------------------------------
// Header and charts
// ---------------------------------------------------------------------------------------------------

/**
 * The run's records as chart rows: one per step, in step order. The trainer logs an evaluation as a record
 * of its own at the step of a training record; two rows at one x made uPlot leave the second (the eval
 * point) out of the y range, and counted one step twice.
 */
function rowsByStep(records) {
  const byStep = new Map();
  for (const r of records) {
    if (typeof r.step !== "number") continue;
    byStep.set(r.step, { ...byStep.get(r.step), ...r });
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

/**
 * A chart's y range around its values, padded so that a point at the top or bottom is drawn whole; a
 * single value (a lone eval point, a flat curve) gets a range around it.
 */
function yRange(min, max) {
  if (typeof min !== "number" || typeof max !== "number" || !isFinite(min) || !isFinite(max)) return [0, 1];
  const pad = min === max ? Math.abs(min) * 0.1 || 1 : (max - min) * 0.08;
  return [min - pad, max + pad];
}

/** The demo's runs (`deno task train` without arguments) are named "demo": its task's example fits them. */
function isDemoRun(run) {
  return Boolean(run && run.run && run.config && run.config.name === "demo");
}

function fillFacts(model, run) {
  $("model-id").textContent = model.id;
  const facts = [];
  if (run.run) {
    facts.push(["loss", run.run.loss ?? "?"], ["β", run.run.beta], ["α", run.run.alpha]);
    const cfg = run.config ?? {};
    if (cfg.k !== undefined && cfg.k !== null) facts.push(["K", cfg.k]);
    const steps = run.records.reduce((m, r) => Math.max(m, typeof r.step === "number" ? r.step : 0), 0);
    facts.push(["steps", steps]);
  } else facts.push(["run", "none (a model folder)"]);
  facts.push(["reference", model.reference ?? "none"], ["context", `${model.max_model_len} tokens`]);
  const dl = $("run-facts");
  dl.replaceChildren(
    ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) }))),
  );
  if ($("beta").value === "") $("beta").placeholder = String(model.beta);
  if ($("alpha").value === "") $("alpha").placeholder = String(model.alpha);
}

function drawCharts(records) {
  for (const chart of CHARTS) {
    const box = document.querySelector(`#${chart.id} .plot`);
    const present = chart.series.filter((s) => records.some((r) => typeof r[s.key] === "number"));
    if (present.length === 0) {
      box.replaceChildren(el("div", { class: "empty", text: "no values logged" }));
      continue;
    }
    const rows = rowsByStep(records).filter((r) => present.some((s) => typeof r[s.key] === "number"));
    const data = [rows.map((r) => r.step), ...present.map((s) => rows.map((r) => r[s.key] ?? null))];
    // a series of one value is a dot, or it would not show at all
    const lone = (s) => rows.filter((r) => typeof r[s.key] === "number").length === 1;
    const opts = {
      width: Math.max(200, box.clientWidth),
      height: PLOT_HEIGHT,
      scales: { x: { time: false }, y: { range: (_u, min, max) => yRange(min, max) } },
      axes: [{ label: "step", size: 36 }, { size: 56 }],
      series: [
        { label: "step" },
        ...present.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          spanGaps: true,
          points: { show: (s.points ?? false) || lone(s), size: 6 },
          value: (_u, v) => fmt(v),
        })),
      ],
    };
    box.replaceChildren();
    // deno-lint-ignore no-undef
    plots.push({ box, plot: new uPlot(opts, data, box) });
  }
}

function resizePlots() {
  for (const { box, plot } of plots) {
    plot.setSize({ width: Math.max(200, box.clientWidth), height: PLOT_HEIGHT });
  }
}

/** A response's JSON; an API error (401 without a key) as an Error with its message. */
async function json(res) {
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ? body.error.message : `HTTP ${res.status}`);
  return body;
}

async function loadRun() {
  try {
    const [models, run] = await Promise.all([
      api("/v1/models").then(json),
      api("/v1/runs/current/metrics").then(json),
    ]);
    fillFacts(models.data[0], run);
    fillInspector(isDemoRun(run));
    const note = $("training-note");
    const steps = rowsByStep(run.records).length;
    if (!run.run) {
      note.textContent =
        "This server was started on an exported model folder, not a run: no training curves.";
    } else if (steps === 0) {
      note.textContent = `${run.run.dir}: metrics.jsonl has no records yet.`;
    } else note.textContent = `${run.run.dir} · ${steps} logged step${steps === 1 ? "" : "s"}`;
    drawCharts(run.records);
  } catch (e) {
    fillInspector(false);
    $("training-note").textContent = `Could not load the run: ${e}`;
  }
}

// ---------------------------------------------------------------------------------------------------
// Inspector
// ---------------------------------------------------------------------------------------------------

/** The demo's example (a prompt of its sorting task, three answers and their rewards). */
const DEMO_PROMPT = "sort 3 1 2";
const DEMO_CANDIDATES = [["1 2 3", "1"], ["1 3 2", "0.33"], ["3 2 1", "0.33"]];

/** The form's first candidates: the demo's example for the demo's model, else two empty ones. */
function fillInspector(demo) {
  if (document.querySelectorAll(".candidate").length) return;
  if (demo && $("prompt").value === "") $("prompt").value = DEMO_PROMPT;
  for (const [text, reward] of demo ? DEMO_CANDIDATES : [["", ""], ["", ""]]) addCandidate(text, reward);
}

function addCandidate(text = "", reward = "") {
  const area = el("textarea", { rows: "1", class: "candidate-text", "aria-label": "candidate response" });
  area.value = text;
  const r = el("input", { type: "number", step: "any", class: "candidate-reward", "aria-label": "reward" });
  r.value = reward;
  const remove = el("button", { type: "button", class: "remove", title: "remove this candidate", text: "✕" });
  const row = el("div", { class: "candidate" }, area, r, remove);
  remove.addEventListener("click", () => {
    if (document.querySelectorAll(".candidate").length > 1) row.remove();
  });
  $("candidates").append(row);
}

function ratioColour(ratio, scale) {
  const a = Math.min(1, Math.abs(ratio) / scale) * 0.85;
  return ratio >= 0 ? `rgba(var(--up), ${a.toFixed(3)})` : `rgba(var(--down), ${a.toFixed(3)})`;
}

function tokenSpan(t, scale) {
  const span = el("span", { class: "tok", text: t.text });
  const parts = [`token ${t.id}`, `log π ${fmt(t.policy_logprob)}`];
  if (t.log_ratio !== null) {
    parts.push(`log μ ${fmt(t.reference_logprob)}`, `log π − log μ ${signed(t.log_ratio)}`);
    span.style.background = ratioColour(t.log_ratio, scale);
  } else span.style.background = `rgba(37, 99, 235, ${Math.min(0.8, -t.policy_logprob / 10).toFixed(3)})`;
  span.title = parts.join(" · ");
  span.dataset.ratio = String(t.log_ratio);
  return span;
}

function objectivesTable(res) {
  const o = res.objectives;
  const head = el(
    "tr",
    {},
    el("th", { text: "candidate" }),
    el("th", {}, "reward", el("small", { text: "given" })),
    el("th", {}, "soft label", el("small", { text: `softmax(r/α), α = ${res.alpha}` })),
    el("th", {}, "log π", el("small", { text: "policy" })),
    el("th", {}, "log μ", el("small", { text: "reference" })),
    el("th", {}, "r_θ", el("small", { text: `β·(log π − log μ), β = ${res.beta}` })),
    el("th", {}, "InfoNCA", el("small", { text: "softmax(r_θ)" })),
    el("th", {}, "NCA", el("small", { text: "σ(r_θ)" })),
  );
  const rows = res.candidates.map((c, i) => {
    const best = (idx) => (idx === i ? "best" : "");
    return el(
      "tr",
      {},
      el("td", { text: `#${i} ${c.text.length > 28 ? c.text.slice(0, 27) + "…" : c.text}` }),
      el("td", { class: o && best(o.reward_preferred), text: fmt(c.reward) }),
      el("td", { text: o && o.soft_labels ? fmt(o.soft_labels[i]) : "–" }),
      el("td", { text: fmt(c.policy_logprob) }),
      el("td", { text: fmt(c.reference_logprob) }),
      el("td", { text: c.implicit_reward === null ? "–" : signed(c.implicit_reward, 4) }),
      el("td", { class: o && best(o.infonca.preferred), text: o ? fmt(o.infonca.probabilities[i]) : "–" }),
      el("td", { class: o && best(o.nca.preferred), text: o ? fmt(o.nca.probabilities[i]) : "–" }),
    );
  });
  return el("table", { class: "objectives" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function verdicts(res) {
  const o = res.objectives;
  const items = [];
  if (!o) {
    items.push(
      "No reference model: only the policy's log-probs are shown (start the server with --reference).",
    );
  } else {
    if (o.reward_preferred !== null) items.push(`The rewards prefer candidate #${o.reward_preferred}.`);
    const loss = (v) => (v === null ? "(give rewards for its loss)" : `loss ${fmt(v, 4)}`);
    items.push(`InfoNCA (relative): the model prefers #${o.infonca.preferred}; ${loss(o.infonca.loss)}.`);
    items.push(`NCA (absolute): the model prefers #${o.nca.preferred}; ${loss(o.nca.loss)}.`);
    if (o.dpo) {
      items.push(
        `DPO on #${o.dpo.chosen} ≻ #${o.dpo.rejected}: P = σ(r_θ,w − r_θ,l) = ${fmt(o.dpo.probability)}, ` +
          `loss ${fmt(o.dpo.loss, 4)}; the model prefers #${o.dpo.preferred}.`,
      );
    }
  }
  return el("ul", { class: "verdicts" }, ...items.map((t) => el("li", { text: t })));
}

function renderResults(res) {
  const ratios = res.candidates.flatMap((c) => c.tokens.map((t) => Math.abs(t.log_ratio ?? 0)));
  const scale = Math.max(0.05, ...ratios);
  const summary = el(
    "div",
    { class: "result-card", id: "objectives" },
    el(
      "h3",
      {},
      "How the objectives see these candidates",
      el("small", { text: `${res.prompt_tokens} prompt tokens` }),
    ),
    objectivesTable(res),
    verdicts(res),
    el(
      "div",
      { class: "legend" },
      el("span", { text: `log π − log μ: ${signed(-scale, 2)}` }),
      el("span", { class: "bar" }),
      el("span", { text: signed(scale, 2) }),
    ),
  );
  const cards = res.candidates.map((c) =>
    el(
      "div",
      { class: "result-card candidate-result" },
      el(
        "h3",
        {},
        `Candidate #${c.index}`,
        el("small", {
          text: `log π ${fmt(c.policy_logprob)} · log μ ${fmt(c.reference_logprob)} · ` +
            `r_θ ${
              c.implicit_reward === null ? "–" : signed(c.implicit_reward, 4)
            } · ${c.tokens.length} tokens`,
        }),
      ),
      el("div", { class: "tokens" }, ...c.tokens.map((t) => tokenSpan(t, scale))),
    )
  );
  $("results").replaceChildren(summary, ...cards);
}

async function inspect(event) {
  event.preventDefault();
  const status = $("status");
  status.className = "status";
  const texts = [...document.querySelectorAll(".candidate-text")].map((a) => a.value);
  const rewardsRaw = [...document.querySelectorAll(".candidate-reward")].map((r) => r.value.trim());
  const body = { prompt: $("prompt").value, candidates: texts };
  const given = rewardsRaw.filter((r) => r !== "").length;
  if (given === rewardsRaw.length) body.rewards = rewardsRaw.map(Number);
  else if (given > 0) {
    status.className = "status error";
    status.textContent = "Give a reward for every candidate, or for none.";
    return;
  }
  if ($("beta").value !== "") body.beta = Number($("beta").value);
  if ($("alpha").value !== "") body.alpha = Number($("alpha").value);
  status.textContent = "Scoring…";
  $("score").disabled = true;
  try {
    const res = await api("/v1/logprobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(json.error ? json.error.message : `HTTP ${res.status}`);
    renderResults(json);
    status.textContent = "";
  } catch (e) {
    status.className = "status error";
    status.textContent = e.message;
  } finally {
    $("score").disabled = false;
  }
}

function start() {
  takeKeyFromAddress();
  addEventListener("resize", resizePlots);
  $("add-candidate").addEventListener("click", () => addCandidate());
  $("inspect-form").addEventListener("submit", inspect);
  loadRun();
}

if (typeof document !== "undefined") start();
