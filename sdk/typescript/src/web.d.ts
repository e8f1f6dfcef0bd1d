import type { Beacon, RetryOptions } from "./index.js";
import type { GrpcWebTransportOptions } from "@connectrpc/connect-web";

export * from "./index.js";

/** The Beacon clients for `key` at `baseUrl` (the gateway's public address). */
export declare function createBeacon(
  options: RetryOptions & Partial<GrpcWebTransportOptions> & { baseUrl: string; key: string },
): Beacon;
