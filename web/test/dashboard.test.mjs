// The merchant dashboard in headless Chromium: four visitors browse a page carrying Beacon's
// tracker, then a merchant signs in with a read key and the dashboard shows their numbers,
// the comparison and realtime figures; a row click filters every panel; the CSV downloads; and
// it works on a phone's screen. Screenshots go to SCREENSHOTS.
//
// Environment (tests/tests/browser.rs sets it): BEACON_URL, BEACON_ADMIN_URL and
// BEACON_ADMIN_TOKEN (the admin listener, for shared-link keys), DASHBOARD_INGEST_KEY and
// DASHBOARD_READ_KEY (a fresh UTC tenant, dashboard-shop, in EUR with the goal
// "Signup" = event signup), SCREENSHOTS, CHROMIUM.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createBeacon, Metric, admin } from "../../sdk/typescript/src/web.js";
import { createBeacon as overGrpc } from "../../sdk/typescript/src/node.js";
import { env, launch, leave, settle, today, visitor, withEvidence } from "../fixtures/browser.mjs";
import { startSite } from "../fixtures/site.mjs";

const gateway = env("BEACON_URL");
const screenshots = env("SCREENSHOTS");
const readKey = env("DASHBOARD_READ_KEY");

let site;
let browser;

before(async () => {
  mkdirSync(screenshots, { recursive: true });
  site = await startSite({ gateway, key: env("DASHBOARD_INGEST_KEY") });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await site?.stop();
});

/**
 * Four visits: everyone lands on /, visitors 0 to 2 go on to /pricing, where visitors 0 and 1
 * sign up. 4 visitors, 7 pageviews, 9 events; /pricing has 3 visitors, 2 of whom converted.
 */
async function browse() {
  for (let v = 0; v < 4; v++) {
    const context = await visitor(browser, v);
    const page = await context.newPage();
    await page.goto(`http://shop.example:${site.port}/`);
    await page.waitForFunction(() => typeof window.beacon === "function" && !window.beacon.q);
    if (v < 3) await page.click("#pricing");
    if (v < 2) await page.click("#signup");
    await leave(context, page);
  }
  const reader = createBeacon({ baseUrl: gateway, key: readKey });
  await settle(async () => {
    const answer = await reader.insights.getAggregate({
      dateRange: { startDate: today(-1), endDate: today(1) },
      metrics: [Metric.VISITORS, Metric.PAGEVIEWS, Metric.EVENTS],
    });
    return answer.values.map((v) => v.value);
  }, [4, 7, 9], assert);
}

/** The figure of the top-row stat of `metric` ("visitors", "pageviews", ...). */
function stat(page, metric) {
  return page.locator(`[data-testid="stat-${metric}"] .figure`);
}

/** The visitors of the row `value` of the panel titled `title`. */
function rowVisitors(page, title, value) {
  return page
    .locator("section.panel", { has: page.getByRole("heading", { name: title }) })
    .locator("button.row", { has: page.locator(".value", { hasText: new RegExp(`^${value}$`) }) })
    .locator('[data-metric="visitors"]');
}

/** The conversion rate of goal `name` in the goals panel. */
function goalRate(page, name) {
  return rowVisitors(page, "Goals", name).locator("xpath=following-sibling::span[1]");
}

test("the dashboard shows the visitors' numbers, filters on a click and exports CSV", async () => {
  await browse();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const failures = [];
  page.on("pageerror", (error) => failures.push(String(error)));

  await withEvidence(page, screenshots, "dashboard-failure", async () => {
    // Signing in with the keyboard alone: the key field is labelled and focused.
    await page.goto(`${gateway}/`);
    await page.getByLabel("Read key").fill("bk_read_not_a_key");
    await page.keyboard.press("Enter");
    await assert.doesNotReject(page.getByRole("alert").waitFor());
    assert.match(await page.getByRole("alert").textContent(), /not accepted/);
    await page.getByLabel("Read key").fill(readKey);
    await page.keyboard.press("Enter");

    await stat(page, "visitors").filter({ hasText: /^4$/ }).waitFor();
    assert.equal(await stat(page, "pageviews").textContent(), "7");
    assert.equal(await stat(page, "events").textContent(), "9");
    assert.match(await page.locator("#site").textContent(), /dashboard-shop · times in UTC/);
    // The comparison: the previous 30 days had nobody, so every change is new, and the chart
    // carries the comparison series.
    assert.equal(await page.locator('[data-testid="stat-visitors"] [data-testid="change"]').textContent(), "new");
    assert.equal(await page.locator('[data-testid="series"] th').nth(2).textContent(), "Comparison");
    await page.locator("#realtime").filter({ hasText: "4 current visitors" }).waitFor({ timeout: 30_000 });
    assert.equal(await rowVisitors(page, "Pages", "/").textContent(), "4");
    assert.equal(await rowVisitors(page, "Pages", "/pricing").textContent(), "3");
    assert.equal(await rowVisitors(page, "Goals", "Signup").textContent(), "2");
    assert.equal(await goalRate(page, "Signup").textContent(), "50%");
    // Custom properties: the tenant's keys come from GetSite; the signups carried plan=pro.
    assert.equal(await page.getByLabel("Property key").inputValue(), "plan");
    assert.equal(await rowVisitors(page, "Properties", "pro").textContent(), "2");
    await page.screenshot({ path: join(screenshots, "dashboard.png"), fullPage: true });

    // Every input and select has a label.
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll("input, select")]
        .filter((e) => !e.labels?.length && !e.getAttribute("aria-label"))
        .map((e) => e.outerHTML),
    );
    assert.deepEqual(unlabelled, []);

    // A row click filters the whole page: the stats and every other panel.
    await page.locator("section.panel", { has: page.getByRole("heading", { name: "Pages" }) })
      .getByRole("button", { name: /\/pricing/ }).click();
    await stat(page, "visitors").filter({ hasText: /^3$/ }).waitFor();
    await page.getByRole("button", { name: "Remove filter Page is /pricing" }).waitFor();
    assert.equal(await rowVisitors(page, "Sources", "Direct / None").textContent(), "3");
    assert.equal(await rowVisitors(page, "Devices", "Desktop").textContent(), "3");
    // Signups on /pricing: 2 of its 3 visitors.
    assert.equal(await rowVisitors(page, "Goals", "Signup").textContent(), "2");
    assert.equal(await goalRate(page, "Signup").textContent(), "66.67%");
    assert.match(page.url(), /f=page%7E%2Fpricing/, "the filter is in the URL");
    await page.screenshot({ path: join(screenshots, "dashboard-filtered.png"), fullPage: true });

    // The CSV of the chart's points, as the API answered them.
    const [file] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
    const csv = readFileSync(await file.path(), "utf8").trim().split(/\r\n/);
    assert.equal(csv[0], "date,visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events,total_revenue");
    assert.ok(csv.some((line) => line.startsWith(`${today()},3,3,`)), csv.join("\n"));

    // Another period: the last 7 days hold the same visits.
    await page.getByLabel("Period", { exact: true }).focus();
    await page.getByLabel("Period", { exact: true }).selectOption("7d");
    // The page is drawn again; the control in use keeps the focus (keyboard users stay put).
    await page.waitForURL(/period=7d/);
    await page.waitForFunction(() => document.activeElement?.id === "period");
    await stat(page, "visitors").filter({ hasText: /^3$/ }).waitFor();
    await page.getByRole("button", { name: "Remove filter Page is /pricing" }).click();
    await stat(page, "visitors").filter({ hasText: /^4$/ }).waitFor();

    // Comparisons: a year before (nobody then either), or none at all.
    await page.getByLabel("Compare with").selectOption("year");
    await page.waitForURL(/compare=year/);
    await stat(page, "visitors").filter({ hasText: /^4$/ }).waitFor();
    assert.equal(await page.locator('[data-testid="stat-visitors"] [data-testid="change"]').textContent(), "new");
    await page.getByLabel("Compare with").selectOption("off");
    await page.waitForURL(/compare=off/);
    // The chart's table loses its comparison column, and the stats their changes.
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="series"] th').length === 2);
    assert.equal(await page.locator('[data-testid="change"]').count(), 0);
    await page.getByLabel("Compare with").selectOption("previous");

    // A phone's screen: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
    await page.screenshot({ path: join(screenshots, "dashboard-phone.png"), fullPage: true });
  });
  assert.deepEqual(failures, []);
  await context.close();
});

test("a shared link opens the dashboard without signing in, until its key is revoked", async () => {
  const operator = overGrpc({ baseUrl: env("BEACON_ADMIN_URL"), key: env("BEACON_ADMIN_TOKEN") }).admin;
  const tenantId = "dashboard-shop";
  const { key } = await operator.createKey({ tenantId, kind: admin.KeyKind.SHARED });
  assert.match(key, /^bk_share_/);
  // A shared key reads, and only reads.
  const sender = overGrpc({ baseUrl: gateway, key, attempts: 1 });
  await assert.rejects(sender.sendEvents([{ name: "pageview", url: "https://shop.example/" }]), /cannot be used to send events/);

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${gateway}/#key=${key}&period=7d`);
  await stat(page, "visitors").filter({ hasText: /^4$/ }).waitFor();
  assert.equal(await page.getByLabel("Period", { exact: true }).inputValue(), "7d");
  await page.screenshot({ path: join(screenshots, "dashboard-shared-link.png") });

  const { keys } = await operator.listKeys({ tenantId });
  const shared = keys.filter((k) => k.kind === admin.KeyKind.SHARED);
  assert.equal(shared.length, 1);
  await operator.revokeKey({ tenantId, keyId: shared[0].id, graceSeconds: 0 });
  // Every replica refuses a revoked key within 5 seconds.
  const until = Date.now() + 15_000;
  for (;;) {
    await page.reload();
    const refused = await page.getByRole("alert").filter({ hasText: /not accepted/ }).isVisible().catch(() => false);
    if (refused) break;
    assert.ok(Date.now() < until, "the revoked shared key still opened the dashboard");
    await page.waitForTimeout(1_000);
  }
  await context.close();
});
