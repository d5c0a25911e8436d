"""A delivery replay never sends a delivery whose document links it cannot sign."""

import datetime as dt
import io

from distiller.adapters.queues import OutgoingMessage
from distiller.core.model import ChangeEvent, Delivery
from distiller.core.pipeline import ChangeOutcome
from distiller.deliver.message import DeliveryMessage
from distiller_tools.ops import delivery_replay
from distiller_tools.ops.delivery_replay import DeliveryReplay
from distiller_tools.ops.dlq_filter import delivery_filter

NOW = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)
CHANGE = '{"_id":{"_data":"82AA01"},"operationType":"insert","ns":{"db":"privateauto","coll":"documents"}}'


def _outcome(*deliveries: Delivery) -> ChangeOutcome:
    outcome = ChangeOutcome(ChangeEvent("82AA01", "insert", "documents", "d1"))
    outcome.deliveries.extend(deliveries)
    return outcome


def _delivery(event: str, payload: dict) -> Delivery:
    return Delivery("acme", event, f"id-{event}", f"key-{event}", {"id": "d1", **payload})


def test_without_a_documents_bucket_a_delivery_carrying_documents_is_reported_not_sent(monkeypatch):
    with_files = _delivery("document.completed", {"documents": [{"filename": "bill.pdf", "signedUrl": None}]})
    plain = _delivery("deal.created", {"dealId": "d1"})
    monkeypatch.setattr(delivery_replay, "change_events_in_text", lambda body, origin: [object()])
    outcome = _outcome(with_files, plain)
    monkeypatch.setattr(delivery_replay, "distill", lambda items, lookups, file_links=None: [outcome])
    lines = io.StringIO()
    replay = DeliveryReplay(lookups=None, only=delivery_filter(), now=NOW, lines=lines)  # type: ignore[arg-type]

    assert replay.send([OutgoingMessage(CHANGE)]) == []

    sent = [DeliveryMessage.from_body(line) for line in lines.getvalue().splitlines()]
    assert [m.event for m in sent] == ["deal.created"]
    assert (
        replay.problems
        and "document.completed for acme (id-document.completed) carries documents" in (replay.problems[0])
    )


def test_a_dry_run_counts_a_delivery_carrying_documents_without_a_bucket(monkeypatch):
    with_files = _delivery("document.completed", {"documents": [{"filename": "bill.pdf", "signedUrl": None}]})
    monkeypatch.setattr(delivery_replay, "change_events_in_text", lambda body, origin: [object()])
    monkeypatch.setattr(delivery_replay, "distill", lambda items, lookups, file_links=None: [_outcome(with_files)])
    replay = DeliveryReplay(lookups=None, only=delivery_filter(), now=NOW, dry_run=True)  # type: ignore[arg-type]

    replay.send([OutgoingMessage(CHANGE)])

    assert dict(replay.groups) == {("acme", "document.completed"): 1} and not replay.problems
