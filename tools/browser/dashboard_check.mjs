// Drives headless Chromium through keel's /dashboard like a person would, for
// tests/dashboard.rs (which starts `runtime serve` with an API key and runs this).
//
//   node tools/browser/dashboard_check.mjs BASE_URL TOKEN SCREENSHOT_DIR
//
// Chromium is Debian's (/usr/bin/chromium, or $KEEL_CHROMIUM), driven by playwright-core
// over the DevTools protocol; playwright downloads no browser of its own.
// Exits 0 when every check passes, 1 with the failed check on stderr otherwise.
// Prints a JSON summary (timings, counts) on stdout.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, token, shots] = process.argv.slice(2);
if (!base || !token || !shots) {
  console.error("usage: dashboard_check.mjs BASE_URL TOKEN SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const executablePath = process.env.KEEL_CHROMIUM || "/usr/bin/chromium";
const summary = { steps: {} };
const t0 = Date.now();

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

/** Times a step into the summary. */
async function step(name, fn) {
  const start = Date.now();
  process.stderr.write(`[dashboard] ${name}\n`);
  const r = await fn();
  summary.steps[name] = Date.now() - start;
  return r;
}

const text = (page, sel) => page.locator(sel).innerText();

/**
 * Requests outside the browser for `seconds`, to give the charts something to draw:
 * a rate that rises and falls, and every fifth request a 400 (max_tokens 0, refused by
 * the endpoint after routing) for the error line. KEEL_DASHBOARD_LOAD_S sets the length
 * (default 3 s; longer makes fuller screenshots).
 */
async function load(seconds) {
  let errors = 0;
  let sent = 0;
  const end = Date.now() + seconds * 1000;
  for (let i = 0; Date.now() < end; i++) {
    const bad = i % 5 === 4;
    const phase = Math.sin((Date.now() / 1000 / 20) * Math.PI) ** 2; // 0..1 over 20 s
    const r = await fetch(base + "/v1/completions", {
      method: "POST",
      headers: { authorization: "Bearer " + token, "content-type": "application/json" },
      body: JSON.stringify({ model: "default", prompt: "load " + i, max_tokens: bad ? 0 : 8 + (i % 24), temperature: 0 }),
    });
    await r.text();
    sent++;
    if (!r.ok) errors++;
    await new Promise((res) => setTimeout(res, 80 + 320 * (1 - phase)));
  }
  return { sent, errors };
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
let failed = null;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // Any request to another origin would break the no-network rule.
  const foreign = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith("data:")) foreign.push(r.url());
  });

  await step("open the page: it asks for the token", async () => {
    const r = await page.goto(base + "/dashboard#endpoints");
    check(r && r.status() === 200, "/dashboard answers 200 without a token");
    await page.locator("#token-dialog[open]").waitFor();
    await page.screenshot({ path: join(shots, "dashboard-token.png") });
  });

  await step("a wrong token is refused and asked for again", async () => {
    await page.fill("#token-input", "not-the-token");
    await page.click("#token-submit");
    await page.locator("#token-dialog[open] #token-error:not([hidden])").waitFor();
  });

  await step("the right token signs in; endpoints list the endpoint and its entity", async () => {
    await page.fill("#token-input", token);
    await page.click("#token-submit");
    // tests/dashboard.rs serves `default`: 80% to `champion` (registry model tiny-chat
    // by alias @champion), 20% to `challenger` (a path, scale to zero).
    const row = (name) => page.locator(`article.endpoint[data-endpoint="default"] tr[data-entity="${name}"]`);
    await row("champion").locator("td.aliases", { hasText: "@champion" }).waitFor();
    const champion = await row("champion").innerText();
    check(champion.includes("tiny-chat") && champion.includes("DEPLOYMENT_READY"), "champion row: " + champion);
    check(champion.includes("80%") && champion.includes("@champion → v1"), "traffic and alias: " + champion);
    const resolved = await row("champion").locator("td").nth(3).innerText();
    check(resolved === "1", "resolved_version 1: " + resolved);
    const challenger = await row("challenger").innerText();
    check(challenger.includes("20%") && challenger.includes("yes (1800 s idle)"), "challenger row: " + challenger);
    check(challenger.includes("8"), "max_concurrency shown: " + challenger);
    const card = await text(page, 'article.endpoint[data-endpoint="default"]');
    check(card.includes("READY") && card.includes("NOT_UPDATING"), "endpoint state and config_update: " + card);
    check(card.includes("6000/minute per user") && card.includes("team=playground"), "rate limits and tags: " + card);
    const stored = await page.evaluate(() => ({
      session: sessionStorage.getItem("keel.token"),
      local: localStorage.length,
      cookie: document.cookie,
    }));
    check(stored.session === token, "the token is kept in sessionStorage");
    check(stored.local === 0 && stored.cookie === "", "and nowhere else in the browser");
    await page.screenshot({ path: join(shots, "dashboard-endpoints.png") });
  });

  const send = async (mode, prompt) => {
    await page.selectOption("#pg-mode", mode);
    await page.fill("#pg-prompt", prompt);
    await page.fill("#pg-max-tokens", "24");
    await page.fill("#pg-temperature", "0");
    await page.click("#pg-send");
    await page.locator('#pg-result[data-state="done"]').waitFor({ timeout: 60000 });
    const out = await text(page, "#pg-output");
    const completion = Number(await text(page, "#pg-completion-tokens"));
    const prompt_tokens = Number(await text(page, "#pg-prompt-tokens"));
    const ttft = await text(page, "#pg-ttft");
    const total = await text(page, "#pg-total");
    const tps = await text(page, "#pg-tps");
    check(out.length > 0, `${mode}: the streamed answer appears`);
    check(completion > 0 && prompt_tokens > 0, `${mode}: token counts from include_usage (${prompt_tokens}, ${completion})`);
    check(/\d.*(ms|s)$/.test(ttft) && /\d.*(ms|s)$/.test(total), `${mode}: TTFT ${ttft} and total ${total}`);
    check(/\d/.test(tps), `${mode}: tokens/s ${tps}`);
    const served = await text(page, "#pg-served");
    check(["champion", "challenger"].includes(served), `${mode}: served-model-name shown (${served})`);
    return { chars: out.length, prompt_tokens, completion, ttft, total, tps };
  };

  await step("playground: completion mode streams an answer", async () => {
    await page.click('a[data-tab="playground"]');
    await page.locator('#pg-model option[value="default"]').waitFor({ state: "attached" });
    summary.completion = await send("completion", "Once upon a time");
    const curl = await text(page, "#pg-curl");
    check(curl.includes("/v1/completions") && curl.includes("Once upon a time"), "curl snippet follows the inputs");
    check(!curl.includes(token), "the curl snippet never holds the token");
  });

  await step("playground: chat mode streams an answer; snippets follow", async () => {
    summary.chat = await send("chat", "Hello! Who are you?");
    const curl = await text(page, "#pg-curl");
    const python = await text(page, "#pg-python");
    check(curl.includes("/v1/chat/completions") && curl.includes('"include_usage":true'), "curl snippet: " + curl);
    check(python.includes("client.chat.completions.create(") && python.includes("Hello! Who are you?"), "python snippet: " + python);
    check(!python.includes(token), "the python snippet never holds the token");
    await page.screenshot({ path: join(shots, "dashboard-playground.png"), fullPage: true });
  });

  await step("live metrics: charts get data points after some requests", async () => {
    summary.load = await load(Number(process.env.KEEL_DASHBOARD_LOAD_S || 3));
    await page.click('a[data-tab="metrics"]');
    await page.waitForFunction(() => {
      const n = (id, attr) => Number(document.getElementById("chart-" + id)?.dataset[attr] || 0);
      const all = ["requests", "latency", "ttft", "tokens", "queue", "kv", "cpu", "memory"];
      return all.every((id) => n(id, "samples") > 0) && n("requests", "max") > 0 && n("tokens", "max") > 0
        && Number(document.querySelector('#chart-requests path[data-series="errors/s (non-2xx)"]')?.dataset.max) > 0
        && n("latency", "max") > 0 && n("kv", "max") > 0 && n("memory", "max") > 0;
    }, null, { timeout: 30000 });
    summary.samples = await page.evaluate(() =>
      Object.fromEntries([...document.querySelectorAll("figure.chart-card")].map((f) => [f.id, Number(f.dataset.samples)])));
    await page.screenshot({ path: join(shots, "dashboard-metrics.png"), fullPage: true });
  });

  await step("monitoring: the inference table with its profile and drift", async () => {
    const table = process.env.KEEL_MONITOR_TABLE || "demo_payload";
    const latestRows = Number(process.env.KEEL_MONITOR_LATEST_ROWS || 0);
    await page.click('a[data-tab="monitoring"]');
    const card = page.locator(`article.monitor-table[data-table="${table}"]`);
    await card.waitFor();
    const head = await card.locator("header").innerText();
    check(head.includes(table) && head.includes("2 part(s)"), "table header: " + head);
    // Latest window first, all models first: its request count is the table's latest hour.
    const first = card.locator("table.profile-windows tbody tr").first();
    check((await first.getAttribute("data-model")) === ":all", "first profile row is all models");
    const requests = Number(await first.locator("td.requests").innerText());
    check(requests === latestRows, `latest window has ${requests} requests, expected ${latestRows}`);
    check(await card.locator('table.profile-windows tr[data-model="tiny-chat:1"]').count() >= 2, "per-model rows");
    // The prompts got much longer: prompt_length drift is marked above the threshold.
    const prompt = card.locator('table.drift-rows tr[data-column="prompt_length"]');
    await prompt.waitFor();
    check(await prompt.locator("td.drift-high").count() === 1, "prompt_length js_distance is marked");
    const group = await card.locator(".drift-group").first().innerText();
    check(group.includes("CONSECUTIVE drift of window") && group.includes("against window"), "drift heading: " + group);
    await page.screenshot({ path: join(shots, "dashboard-monitoring.png"), fullPage: true });
  });

  await step("a reload keeps the token for this tab; no dialog", async () => {
    await page.goto(base + "/dashboard#endpoints");
    await page.reload();
    await page.locator('article.endpoint[data-endpoint="default"]').waitFor();
    check(!(await page.locator("#token-dialog[open]").count()), "no token dialog after a reload");
  });

  check(pageErrors.length === 0, "no JavaScript errors: " + pageErrors.join("; "));
  check(foreign.length === 0, "no request leaves the server: " + foreign.join(", "));
  await context.close();
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
summary.total_ms = Date.now() - t0;
console.log(JSON.stringify(summary));
if (failed) {
  console.error(String(failed.stack || failed));
  process.exit(1);
}
