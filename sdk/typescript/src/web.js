// Beacon over gRPC-web, for browsers (and any runtime with `fetch`).
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { bearer, beaconClients } from "./index.js";

export * from "./index.js";

/** The Beacon clients for `key` at `baseUrl` (the gateway's public address), over gRPC-web. */
export function createBeacon({ baseUrl, key, attempts, backoffMs, ...transport }) {
  if (!baseUrl || !key) throw new Error("createBeacon: `baseUrl` and `key` are required");
  const interceptors = [bearer(key), ...(transport.interceptors ?? [])];
  return beaconClients(createGrpcWebTransport({ ...transport, baseUrl, interceptors }), {
    attempts,
    backoffMs,
  });
}
