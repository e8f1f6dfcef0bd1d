import type { Beacon, RetryOptions } from "./index.js";
import type { GrpcTransportOptions } from "@connectrpc/connect-node";

export * from "./index.js";

/** The Beacon clients for `key` at `baseUrl` (the gateway's public address). */
export declare function createBeacon(
  options: RetryOptions & Partial<GrpcTransportOptions> & { baseUrl: string; key: string },
): Beacon;
