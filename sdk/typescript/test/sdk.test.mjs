// Sends events through the SDK to a running Beacon (BEACON_URL, BEACON_INGEST_KEY,
// BEACON_READ_KEY: a fresh tenant in UTC), retries a batch, and reads the numbers back exactly,
// sending over gRPC and reading over gRPC-web as a browser would.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { createBeacon as overGrpc } from "../src/node.js";
import { createBeacon as overGrpcWeb, EventStatus, Metric } from "../src/web.js";

const baseUrl = process.env.BEACON_URL;
const ingestKey = process.env.BEACON_INGEST_KEY;
const readKey = process.env.BEACON_READ_KEY;
if (!baseUrl || !ingestKey || !readKey) {
  throw new Error("set BEACON_URL, BEACON_INGEST_KEY and BEACON_READ_KEY (a fresh UTC tenant)");
}

/** Visitor `v`'s visit: two pages and a signup. */
function visit(v) {
  const userAgent = `Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.${v}`;
  const page = (path) => ({ name: "pageview", url: `https://sdk.example${path}`, userAgent });
  return [
    page("/"),
    page("/pricing"),
    { name: "signup", url: "https://sdk.example/pricing", userAgent, props: { plan: { kind: { case: "stringValue", value: "pro" } } } },
  ];
}

function utcDate(offsetDays) {
  return new Date(Date.now() + offsetDays * 86_400_000).toISOString().slice(0, 10);
}

async function totals(beacon) {
  const answer = await beacon.insights.getAggregate({
    dateRange: { startDate: utcDate(-1), endDate: utcDate(1) },
    metrics: [Metric.VISITORS, Metric.PAGEVIEWS, Metric.EVENTS],
  });
  return Object.fromEntries(answer.values.map((v) => [Metric[v.metric], v.value]));
}

test("events with ids count once, however often a batch is sent", async () => {
  const sender = overGrpc({ baseUrl, key: ingestKey });
  const reader = overGrpcWeb({ baseUrl, key: readKey });
  const visits = [0, 1, 2, 3].map(visit);
  const first = visits.slice(0, 2).flat();
  const second = visits.slice(2).flat();

  for (const batch of [first, second]) {
    const answer = await sender.sendEvents(batch);
    assert.equal(answer.results.length, batch.length);
    for (const result of answer.results) assert.equal(result.status, EventStatus.ACCEPTED, result.error);
  }
  assert.ok(second.every((event) => event.id.length > 0), "the SDK gives every event an id");
  // A client that lost the answer sends the same batch again: the ids make it count once.
  await sender.sendEvents(second);

  const expected = { VISITORS: 4, PAGEVIEWS: 8, EVENTS: 12 };
  let seen;
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    seen = await totals(reader);
    if (JSON.stringify(seen) === JSON.stringify(expected)) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  assert.deepEqual(seen, expected);
  // Stable, not merely equal once.
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  assert.deepEqual(await totals(reader), expected);
});

test("a read key cannot send, and the error says so", async () => {
  const wrong = overGrpc({ baseUrl, key: readKey, attempts: 1 });
  await assert.rejects(wrong.sendEvents(visit(9)), (error) => {
    const connect = ConnectError.from(error);
    assert.ok([Code.PermissionDenied, Code.Unauthenticated].includes(connect.code), String(connect));
    return true;
  });
});
