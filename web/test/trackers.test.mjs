// Browser tests in headless Chromium (Playwright): a page carrying Beacon's tracker and a page
// carrying Plausible's published tracker, each visited by several browser contexts (visitors),
// then the numbers read back through the generated TypeScript SDK over gRPC-web, exactly.
//
// Environment (tests/tests/browser.rs sets it): BEACON_URL, BEACON_INGEST_KEY and
// BEACON_READ_KEY (a UTC tenant in EUR), PLAUSIBLE_READ_KEY (a UTC tenant in EUR owning the
// domain plausible.example), SCREENSHOTS (a folder), CHROMIUM (default /usr/bin/chromium).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createBeacon, Dimension, Metric } from "../../sdk/typescript/src/web.js";
import { env, launch, leave, settle, today, visitor as contextOf } from "../fixtures/browser.mjs";
import { startSite } from "../fixtures/site.mjs";

const gateway = env("BEACON_URL");
const screenshots = env("SCREENSHOTS");
const VISITORS = 6;

let site;
let browser;
const visitor = (v) => contextOf(browser, v);

before(async () => {
  mkdirSync(screenshots, { recursive: true });
  site = await startSite({ gateway, key: env("BEACON_INGEST_KEY") });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await site?.stop();
});

/** Totals and events by name of the tenant of `key`, today give or take a day. */
async function numbers(key) {
  const reader = createBeacon({ baseUrl: gateway, key });
  const dateRange = { startDate: today(-1), endDate: today(1) };
  const metrics = [Metric.VISITORS, Metric.PAGEVIEWS, Metric.EVENTS, Metric.TOTAL_REVENUE];
  const totals = await reader.insights.getAggregate({ dateRange, metrics });
  const names = await reader.insights.getBreakdown({
    dateRange,
    dimension: Dimension.EVENT_NAME,
    metrics: [Metric.EVENTS],
    limit: 100,
  });
  return {
    totals: Object.fromEntries(totals.values.map((v) => [Metric[v.metric], v.value])),
    names: sorted(names.rows.map((row) => [row.value, row.values[0].value])),
  };
}

/** An object of `entries` in key order, so that two compare equal whatever the rows' order. */
function sorted(entries) {
  return Object.fromEntries([...entries].sort((a, b) => a[0].localeCompare(b[0])));
}

/** Polls until the numbers equal `expected`, then checks they stay so. */
function expectExactly(key, expected) {
  return settle(() => numbers(key), expected, assert);
}

test("Beacon's tracker: pageviews, single-page navigation, custom events, downloads, outbound links", async () => {
  for (let v = 0; v < VISITORS; v++) {
    const context = await visitor(v);
    await context.route("https://partner.example/**", (route) =>
      route.fulfill({ contentType: "text/html", body: "<p>Partner</p>" }),
    );
    const page = await context.newPage();
    await page.goto(`http://shop.example:${site.port}/`);
    await page.waitForFunction(() => typeof window.beacon === "function" && !window.beacon.q);
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    await page.waitForTimeout(100);
    await page.click("#signup");
    await page.click("#pricing");
    if (v % 2 === 0) await page.click("#download");
    if (v === 0) await page.screenshot({ path: join(screenshots, "beacon-tracker.png") });
    if (v % 3 === 0) {
      await page.click("#outbound");
      await page.waitForURL("https://partner.example/");
    }
    await leave(context, page);
  }
  const downloads = Math.ceil(VISITORS / 2);
  const outbound = Math.ceil(VISITORS / 3);
  await expectExactly(env("BEACON_READ_KEY"), {
    totals: {
      VISITORS: VISITORS,
      PAGEVIEWS: 2 * VISITORS,
      EVENTS: 3 * VISITORS + downloads + outbound,
      TOTAL_REVENUE: 29 * VISITORS,
    },
    names: sorted([
      ["pageview", 2 * VISITORS],
      ["signup", VISITORS],
      ["File Download", downloads],
      ["Outbound Link: Click", outbound],
    ]),
  });
  // Engagement reports: every visitor scrolled the first page to its end and stayed a while.
  const pages = await createBeacon({ baseUrl: gateway, key: env("BEACON_READ_KEY") }).insights.getBreakdown({
    dateRange: { startDate: today(-1), endDate: today(1) },
    dimension: Dimension.PAGE,
    metrics: [Metric.SCROLL_DEPTH, Metric.TIME_ON_PAGE],
  });
  const home = pages.rows.find((row) => row.value === "/");
  assert.ok(home, "a row for /");
  assert.equal(home.values[0].value, 100, "scroll depth of /");
  assert.ok(home.values[1].value > 0, `time on / is ${home.values[1].value}`);
});

test("Plausible's published tracker with only domain and endpoint set counts exactly", async () => {
  for (let v = 0; v < VISITORS; v++) {
    const context = await visitor(v);
    const page = await context.newPage();
    await page.goto(`http://plausible.example:${site.port}/plausible/`);
    await page.waitForFunction(() => window.ready === true);
    await page.click("#signup");
    await page.click("#purchase");
    await page.click("#pricing");
    if (v === 0) await page.screenshot({ path: join(screenshots, "plausible-tracker.png") });
    await page.waitForTimeout(200);
    await leave(context, page);
  }
  await expectExactly(env("PLAUSIBLE_READ_KEY"), {
    totals: {
      VISITORS: VISITORS,
      PAGEVIEWS: 2 * VISITORS,
      EVENTS: 4 * VISITORS,
      TOTAL_REVENUE: 15.5 * VISITORS,
    },
    names: sorted([
      ["pageview", 2 * VISITORS],
      ["Purchase", VISITORS],
      ["signup", VISITORS],
    ]),
  });
});

test("Plausible's tracker with hash-based routing: the fragment is part of the page", async () => {
  const context = await visitor(VISITORS);
  const page = await context.newPage();
  await page.goto(`http://plausible.example:${site.port}/plausible/hash#/home`);
  await page.waitForFunction(() => window.ready === true);
  await page.waitForTimeout(200);
  await page.evaluate(() => { location.hash = "#/pricing"; });
  await page.waitForTimeout(200);
  await leave(context, page);
  const reader = createBeacon({ baseUrl: gateway, key: env("PLAUSIBLE_READ_KEY") });
  await settle(async () => {
    const pages = await reader.insights.getBreakdown({
      dateRange: { startDate: today(-1), endDate: today(1) },
      dimension: Dimension.PAGE,
      metrics: [Metric.PAGEVIEWS],
      limit: 100,
    });
    return sorted(pages.rows.filter((r) => r.value.startsWith("/plausible/hash")).map((r) => [r.value, r.values[0].value]));
  }, { "/plausible/hash#/home": 1, "/plausible/hash#/pricing": 1 }, assert);
});

test("Beacon's tracker sends nothing when the page respects Do Not Track and the browser asks", async () => {
  const context = await visitor(VISITORS + 1);
  await context.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, "doNotTrack", { get: () => "1" });
  });
  const page = await context.newPage();
  const sent = [];
  page.on("request", (request) => {
    if (request.url().includes("/api/event")) sent.push(new URL(request.url()).pathname);
  });
  const visit = async (query) => {
    await page.goto(`http://shop.example:${site.port}/${query}`);
    await page.waitForFunction(() => typeof window.beacon === "function" && !window.beacon.q);
    await page.click("#pricing");
    await page.waitForTimeout(300);
  };
  // The same browser on a page that does not opt in is counted: the requests are seen.
  await visit("");
  assert.ok(sent.length >= 2, `a pageview and a navigation, saw ${sent.length} requests`);
  sent.length = 0;
  await visit("?dnt");
  await leave(context, page);
  assert.deepEqual(sent, [], "nothing sent under Do Not Track");
});
