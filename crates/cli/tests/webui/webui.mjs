// The web interface end to end, against a live `keepstate run`: run by crates/cli/tests/webui.rs
// inside the router's network namespace (so 127.0.0.1 is the daemon's API), with headless
// Chromium already listening there on --port.
//
//   node --experimental-websocket webui.mjs --port 9222 --base http://127.0.0.1:9180 \
//        --out DIR --sport N [--dwell SECONDS]
//
// --sport is the source port of the LAN host's TCP connection to the wan echo service
// (203.0.113.1:7), which must be open. Prints `ok: ...` per step and `PASS` at the end;
// exits non-zero with `FAIL: ...` otherwise. Screenshots go to --out.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Page, sleep } from "./cdp.mjs";

const { values: opt } = parseArgs({
  options: {
    port: { type: "string", default: "9222" },
    base: { type: "string", default: "http://127.0.0.1:9180" },
    out: { type: "string" },
    sport: { type: "string" },
    dwell: { type: "string", default: "0" },
  },
});
const SERVER = "203.0.113.1";
const SNAT = "203.0.113.2";
const sport = Number(opt.sport);
const dwellMs = Math.min(240, Math.max(0, Number(opt.dwell) || 0)) * 1000;
if (!opt.out || !Number.isInteger(sport) || sport <= 0) {
  console.log("FAIL: usage: webui.mjs --out DIR --sport N [--port P] [--base URL] [--dwell S]");
  process.exit(2);
}

// Nothing here may hang the test: a watchdog ends it whatever it is waiting for.
setTimeout(() => {
  console.log("FAIL: watchdog: the run took too long");
  process.exit(3);
}, 40000 + dwellMs).unref();

const started = Date.now();
const step = (what) => console.log(`ok: ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
const assert = (cond, what) => {
  if (!cond) throw new Error(what);
};

/** Width and height from a PNG's IHDR chunk. */
function pngSize(buf) {
  assert(buf.length > 24 && buf.readUInt32BE(0) === 0x89504e47, "screenshot is not a PNG");
  return [buf.readUInt32BE(16), buf.readUInt32BE(20)];
}

async function shoot(page, name, width, height) {
  const png = await page.screenshot();
  const [w, h] = pngSize(png);
  assert(w === width && h === height, `${name}: ${w}x${h}, expected ${width}x${height}`);
  writeFileSync(join(opt.out, name), png);
  step(`screenshot ${name} (${w}x${h}, ${png.length} bytes)`);
}

async function api(path) {
  const r = await fetch(`${opt.base}${path}`, { signal: AbortSignal.timeout(3000) });
  assert(r.ok, `GET ${path}: HTTP ${r.status}`);
  return r.json();
}

// The Kill button of our connection: the query it sends names the protocol and both ports.
const KILL = `#conn-table tbody button[data-kill^="proto=tcp&"][data-kill$="&sport=${sport}&dport=7"]`;
const rowText = `document.querySelector(${JSON.stringify(KILL)})?.closest("tr")?.innerText.replace(/\\s+/g, " ") ?? ""`;

/** What a chart canvas shows: points drawn, and pixels in its line's colour. */
const chartState = (id, series) => `(() => {
  const c = document.getElementById(${JSON.stringify(id)});
  // The line's colour as the canvas paints it, whatever CSS syntax the variable uses.
  const probe = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  probe.fillStyle = getComputedStyle(document.documentElement).getPropertyValue(${JSON.stringify(series)}).trim();
  probe.fillRect(0, 0, 1, 1);
  const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
  const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let line = 0, ink = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] === 0) continue;
    ink += 1;
    if (Math.abs(px[i] - r) + Math.abs(px[i + 1] - g) + Math.abs(px[i + 2] - b) < 60 && px[i + 3] > 128) line += 1;
  }
  return { points: Number(c.dataset.points || 0), line, ink, width: c.width, height: c.height, label: c.getAttribute("aria-label") };
})()`;

const CHARTS = [["chart-pps", "--series-1"], ["chart-cps", "--series-2"], ["chart-bps", "--series-3"]];

let page;
try {
  page = await Page.connect(Number(opt.port), { log: (m) => console.log(`  ${m}`) });
  step("connected to Chromium");
  await page.viewport(1280, 800);
  await page.colorScheme("light");

  // The LAN host's connection is on the Connections page, with the router's address as its
  // translated source.
  await page.goto(`${opt.base}/#/connections`);
  await page.until(`document.querySelector(${JSON.stringify(KILL)})`, `a row for tcp sport ${sport} dport 7`, 10000);
  const row = await page.eval(rowText);
  step(`row: ${row}`);
  assert(row.includes(`192.168.1.10:${sport}`), `row has no source 192.168.1.10:${sport}: ${row}`);
  assert(row.includes(`${SERVER}:7`), `row has no destination ${SERVER}:7: ${row}`);
  assert(row.includes("SNAT") && row.includes(`as ${SNAT}`), `row shows no SNAT to ${SNAT}: ${row}`);
  assert(row.includes("ESTABLISHED"), `row is not ESTABLISHED: ${row}`);
  await shoot(page, "connections.png", 1280, 800);

  await page.viewport(375, 800, true);
  await sleep(300);
  await page.until(`document.querySelector(${JSON.stringify(KILL)})`, "the row at phone width");
  const overflow = await page.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth");
  assert(overflow <= 0, `the page scrolls sideways at 375 px (by ${overflow} px)`);
  await shoot(page, "connections-phone.png", 375, 800);
  await page.viewport(1280, 800);
  await sleep(300);

  // Kill it from the page: the confirm() is accepted, the row goes, the API agrees.
  await page.click(KILL);
  await page.until(`!document.querySelector(${JSON.stringify(KILL)})`, "the killed row to go", 8000);
  assert(page.dialogs.length === 1, `expected one confirm dialog, saw ${JSON.stringify(page.dialogs)}`);
  assert(page.dialogs[0].includes(`${SERVER}:7`), `confirm text: ${page.dialogs[0]}`);
  await page.until(`document.getElementById("conn-summary").textContent.startsWith("Killed 1 connection.")`,
    "the summary to say one connection was killed", 5000);
  const left = await api("/api/v1/connections?dport=7");
  const still = (left.items ?? []).filter((c) => c.proto === "tcp" && c.original?.sport === sport);
  assert(still.length === 0, `the API still lists the killed connection: ${JSON.stringify(still)}`);
  step(`killed; the API lists ${(left.items ?? []).length} other connection(s) to port 7`);

  // The dashboard's charts draw: points from several polls, and the line's colour on them.
  await page.goto(`${opt.base}/#/dashboard`);
  await page.until(
    `[${CHARTS.map(([id]) => `"${id}"`)}].every((id) => Number(document.getElementById(id).dataset.points) >= 4)`,
    "four polls on every chart", 15000);
  if (dwellMs) await sleep(dwellMs);
  for (const [id, series] of CHARTS) {
    const s = await page.eval(chartState(id, series));
    assert(s.width > 100 && s.height > 50, `${id} is ${s.width}x${s.height}`);
    assert(s.line >= 4, `${id}: no line drawn (${s.line} pixels of its colour): ${JSON.stringify(s)}`);
    assert(!s.label.includes("no data"), `${id}: ${s.label}`);
    step(`${id}: ${s.points} points, ${s.line} line pixels; ${s.label}`);
  }
  await page.until(`document.querySelectorAll("#dash-tiles dt").length > 0`, "the dashboard tiles");
  await shoot(page, "dashboard.png", 1280, 800);

  // Dark mode: the page follows the system setting and the charts redraw in its colours.
  const lightBg = await page.eval("getComputedStyle(document.body).backgroundColor");
  await page.colorScheme("dark");
  await page.until(`getComputedStyle(document.body).backgroundColor !== ${JSON.stringify(lightBg)}`, "dark colours");
  await sleep(500);
  for (const [id, series] of CHARTS) {
    const s = await page.eval(chartState(id, series));
    assert(s.line >= 4, `${id} in dark mode: no line drawn: ${JSON.stringify(s)}`);
  }
  await shoot(page, "dashboard-dark.png", 1280, 800);
  await page.colorScheme("light");

  for (const [name, body] of [["firewall", "fw-body"], ["logs", "logs-body"]]) {
    await page.goto(`${opt.base}/#/${name}`);
    await page.until(`!document.getElementById("page-${name}").hidden
      && document.getElementById("${body}").textContent.trim() !== ""
      && !document.getElementById("${body}").textContent.includes("Loading")`, `the ${name} page`);
    step(`${name}: ${(await page.eval(`document.getElementById("${body}").innerText`)).replace(/\s+/g, " ").slice(0, 120)}`);
    await shoot(page, `${name}.png`, 1280, 800);
  }

  const thrown = page.errors.filter((e) => !/HTTP 404|not found/i.test(e));
  assert(thrown.length === 0, `errors in the page: ${JSON.stringify(thrown)}`);
  console.log("PASS");
} catch (e) {
  console.log(`FAIL: ${e.message}`);
  process.exitCode = 1;
} finally {
  page?.close();
}
