"""Sends events through the SDK to a running Beacon (BEACON_GRPC_TARGET, BEACON_INGEST_KEY,
BEACON_READ_KEY: a fresh tenant in UTC), retries a batch, and reads the numbers back exactly."""

from __future__ import annotations

import datetime
import os
import time

import grpc
import pytest

from beacon_sdk import Beacon, ingest_pb2, insights_pb2

TARGET = os.environ.get("BEACON_GRPC_TARGET", "")
INGEST_KEY = os.environ.get("BEACON_INGEST_KEY", "")
READ_KEY = os.environ.get("BEACON_READ_KEY", "")
if not (TARGET and INGEST_KEY and READ_KEY):
    raise RuntimeError(
        "set BEACON_GRPC_TARGET, BEACON_INGEST_KEY and BEACON_READ_KEY (a fresh UTC tenant)"
    )

METRICS = {
    insights_pb2.METRIC_VISITORS: "visitors",
    insights_pb2.METRIC_PAGEVIEWS: "pageviews",
    insights_pb2.METRIC_EVENTS: "events",
}


def visit(v: int) -> list[ingest_pb2.Event]:
    """Visitor ``v``'s visit: two pages and a purchase."""
    agent = f"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.{v}"

    def page(path: str) -> ingest_pb2.Event:
        return ingest_pb2.Event(name="pageview", url=f"https://py.example{path}", user_agent=agent)

    purchase = ingest_pb2.Event(name="purchase", url="https://py.example/cart", user_agent=agent)
    purchase.props["items"].number_value = 2
    return [page("/"), page("/cart"), purchase]


def totals(beacon: Beacon) -> dict[str, float]:
    today = datetime.datetime.now(datetime.timezone.utc).date()
    answer = beacon.insights.GetAggregate(
        insights_pb2.GetAggregateRequest(
            date_range=insights_pb2.DateRange(
                start_date=str(today - datetime.timedelta(days=1)),
                end_date=str(today + datetime.timedelta(days=1)),
            ),
            metrics=list(METRICS),
        )
    )
    return {METRICS[v.metric]: v.value for v in answer.values}


def test_events_with_ids_count_once_however_often_a_batch_is_sent() -> None:
    with Beacon(TARGET, INGEST_KEY) as sender, Beacon(TARGET, READ_KEY) as reader:
        visits = [visit(v) for v in range(5)]
        first = [e for v in visits[:3] for e in v]
        second = [e for v in visits[3:] for e in v]
        for batch in (first, second):
            answer = sender.send_events(batch)
            assert [r.status for r in answer.results] == [ingest_pb2.EVENT_STATUS_ACCEPTED] * len(
                batch
            ), answer
        assert all(e.id for e in second), "the SDK gives every event an id"
        # A client that lost the answer sends the same batch again: the ids make it count once.
        sender.send_events(second)

        expected = {"visitors": 5.0, "pageviews": 10.0, "events": 15.0}
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = totals(reader)
            if seen == expected:
                break
            time.sleep(0.25)
        assert seen == expected
        # Stable, not merely equal once.
        time.sleep(1.5)
        assert totals(reader) == expected


def test_a_read_key_cannot_send() -> None:
    with Beacon(TARGET, READ_KEY, attempts=1) as wrong:
        with pytest.raises(grpc.RpcError) as refused:
            wrong.send_events(visit(9))
        assert refused.value.code() in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        )
