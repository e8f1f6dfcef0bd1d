// Beacon over gRPC (HTTP/2), for Node.js.
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearer, beaconClients } from "./index.js";

export * from "./index.js";

/** The Beacon clients for `key` at `baseUrl` (the gateway's public address), over gRPC. */
export function createBeacon({ baseUrl, key, attempts, backoffMs, ...transport }) {
  if (!baseUrl || !key) throw new Error("createBeacon: `baseUrl` and `key` are required");
  const interceptors = [bearer(key), ...(transport.interceptors ?? [])];
  return beaconClients(createGrpcTransport({ ...transport, baseUrl, interceptors }), {
    attempts,
    backoffMs,
  });
}
