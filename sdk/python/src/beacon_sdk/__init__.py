"""Beacon's Python client: typed stubs generated from the protobuf contracts (the ``beacon``
package), the key sent with every call, and an id on every event so that retries count once.

    from beacon_sdk import Beacon, ingest_pb2
    beacon = Beacon("127.0.0.1:8080", key="bk_ingest_...")
    beacon.send_events([ingest_pb2.Event(name="pageview", url="https://shop.example/")])
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from beacon.admin.v1 import admin_pb2, admin_pb2_grpc
from beacon.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from beacon.insights.v1 import insights_pb2, insights_pb2_grpc

__all__ = [
    "Beacon",
    "admin_pb2",
    "ingest_pb2",
    "insights_pb2",
    "with_ids",
]

#: Codes after which a call may not have reached Beacon, or may be tried again.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)


def with_ids(events: Sequence[ingest_pb2.Event]) -> Sequence[ingest_pb2.Event]:
    """Gives every event without an id a fresh random one, in place, and returns the events."""
    for event in events:
        if not event.id:
            event.id = uuid.uuid4().hex
    return events


def _is_local(target: str) -> bool:
    """Whether ``target`` (``host:port``) is this machine."""
    host = target.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1")


class _Bearer(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends the key as ``authorization: Bearer <key>`` with every call."""

    def __init__(self, key: str) -> None:
        self._metadata = ("authorization", f"Bearer {key}")

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = list(details.metadata or []) + [self._metadata]
        return continuation(details._replace(metadata=metadata), request)


class Beacon:
    """The Beacon clients of one key at ``target`` (the gateway's public ``host:port``).

    ``ingest``, ``insights`` and ``admin`` are the generated stubs. ``send_events`` gives
    events ids (in place, so that sending the same messages again counts once) and retries
    transient failures up to ``attempts`` times. The channel uses TLS (the system's roots, or
    ``credentials``) unless the target is this machine or ``insecure=True``: keys never cross
    a network in the clear by accident.
    """

    def __init__(
        self,
        target: str,
        key: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        insecure: bool | None = None,
        attempts: int = 3,
        backoff: float = 0.2,
    ) -> None:
        if not target or not key:
            raise ValueError("Beacon: `target` and `key` are required")
        if insecure is None:
            insecure = credentials is None and _is_local(target)
        if insecure:
            channel = grpc.insecure_channel(target)
        else:
            channel = grpc.secure_channel(target, credentials or grpc.ssl_channel_credentials())
        self.channel = grpc.intercept_channel(channel, _Bearer(key))
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self.channel)
        self.insights = insights_pb2_grpc.InsightsServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.attempts = attempts
        self.backoff = backoff

    def send_events(
        self, events: Sequence[ingest_pb2.Event], *, timeout: float = 10.0
    ) -> ingest_pb2.SendEventsResponse:
        """Sends a batch of events, each with an id, retrying transient failures."""
        request = ingest_pb2.SendEventsRequest(events=with_ids(events))
        for attempt in range(1, self.attempts + 1):
            try:
                response: ingest_pb2.SendEventsResponse = self.ingest.SendEvents(
                    request, timeout=timeout
                )
                return response
            except grpc.RpcError as error:
                if attempt >= self.attempts or error.code() not in RETRYABLE:
                    raise
                time.sleep(self.backoff * attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Closes the channel."""
        self.channel.close()

    def __enter__(self) -> Beacon:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
