import type { Client, Interceptor, Transport, CallOptions } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  EventSchema,
  IngestService,
  SendEventsResponse,
} from "./gen/beacon/ingest/v1/ingest_pb.js";
import type { InsightsService } from "./gen/beacon/insights/v1/insights_pb.js";
import type { AdminService } from "./gen/beacon/admin/v1/admin_pb.js";

export * from "./gen/beacon/ingest/v1/ingest_pb.js";
export * from "./gen/beacon/insights/v1/insights_pb.js";
export * as admin from "./gen/beacon/admin/v1/admin_pb.js";

/** An event as `sendEvents` takes it: any fields of `beacon.ingest.v1.Event`. */
export type EventInit = MessageInitShape<typeof EventSchema>;

/** Options of `beaconClients` and `createBeacon`. */
export interface RetryOptions {
  /** How many times `sendEvents` tries a batch (default 3). */
  attempts?: number;
  /** Pause before the second attempt, growing linearly (default 200 ms). */
  backoffMs?: number;
}

/** The Beacon clients of one key. */
export interface Beacon {
  ingest: Client<typeof IngestService>;
  insights: Client<typeof InsightsService>;
  admin: Client<typeof AdminService>;
  /**
   * Sends a batch after giving every event without an id a random one (written into the
   * given objects, so that sending them again counts once), retrying transient failures.
   */
  sendEvents(events: EventInit[], options?: CallOptions): Promise<SendEventsResponse>;
}

/** An interceptor that sends `key` as `authorization: Bearer <key>`. */
export declare function bearer(key: string): Interceptor;

/** Gives every event without an id a fresh random one, in place, and returns the events. */
export declare function withIds<T extends { id?: string }>(events: T[]): T[];

/** The Beacon clients over a transport that sends the key (see `bearer`). */
export declare function beaconClients(transport: Transport, options?: RetryOptions): Beacon;
