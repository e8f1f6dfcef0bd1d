// Beacon's TypeScript client: typed service clients over any Connect transport (gRPC-web in
// browsers, gRPC in Node.js), the key sent with every call, and an id on every event so that
// retries count once. Hand-written; the messages and services are generated in ./gen.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { IngestService, SendEventsRequestSchema } from "./gen/beacon/ingest/v1/ingest_pb.js";
import { InsightsService } from "./gen/beacon/insights/v1/insights_pb.js";
import { AdminService } from "./gen/beacon/admin/v1/admin_pb.js";

export * from "./gen/beacon/ingest/v1/ingest_pb.js";
export * from "./gen/beacon/insights/v1/insights_pb.js";
export * as admin from "./gen/beacon/admin/v1/admin_pb.js";

/** Codes after which a call may not have reached Beacon, or may be tried again. */
const RETRYABLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Aborted, Code.Unknown]);

/** Returns an interceptor that sends `key` as `authorization: Bearer <key>`. */
export function bearer(key) {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${key}`);
    return next(request);
  };
}

/** Gives every event without an id a fresh random one, in place, and returns the events. */
export function withIds(events) {
  for (const event of events) {
    if (!event.id) event.id = crypto.randomUUID();
  }
  return events;
}

/**
 * The Beacon clients over `transport`, which must send the key (see `bearer`). `sendEvents`
 * gives events ids (in place, so that sending the same objects again is safe) and retries
 * transient failures up to `attempts` times.
 */
export function beaconClients(transport, { attempts = 3, backoffMs = 200 } = {}) {
  const ingest = createClient(IngestService, transport);
  return {
    ingest,
    insights: createClient(InsightsService, transport),
    admin: createClient(AdminService, transport),
    async sendEvents(events, options = {}) {
      const request = create(SendEventsRequestSchema, { events: withIds(events) });
      return retry(() => ingest.sendEvents(request, options), attempts, backoffMs);
    },
  };
}

/** Calls `call` up to `attempts` times while it fails with a retryable code. */
async function retry(call, attempts, backoffMs) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const code = ConnectError.from(error).code;
      if (attempt >= attempts || !RETRYABLE.has(code)) throw error;
      await new Promise((resolve) => setTimeout(resolve, backoffMs * attempt));
    }
  }
}
