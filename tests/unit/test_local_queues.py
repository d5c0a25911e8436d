"""The local run's view of its queues: the input fed in chunks with back pressure, backlogs counted from
sends and first receives, and when the event source mappings have settled."""

from distiller.adapters.queues import OutgoingMessage
from distiller_tools.local.event_source import ActivitySnapshot
from distiller_tools.local.queue_watch import InputFeed, QueueBacklog

URL = "http://127.0.0.1:5000/000000000000/trigger-distiller-ingest"


class RecordingQueue:
    """A `MessageQueue` that notes every send, refusing them when told to, and tells the backlog as the hook would."""

    def __init__(self, backlog: QueueBacklog, refuse: bool = False) -> None:
        self.backlog = backlog
        self.refuse = refuse
        self.sent: list[list[str]] = []

    def send(self, messages):
        if self.refuse:
            return list(range(len(messages)))
        self.sent.append([m.body for m in messages])
        self.backlog.sent({"QueueUrl": URL, "Entries": [{"MessageBody": m.body} for m in messages]})
        return []


def received(count: int, receive_count: str = "1") -> list[dict]:
    return [{"Body": "x", "Attributes": {"ApproximateReceiveCount": receive_count}} for _ in range(count)]


def test_the_input_goes_a_chunk_at_a_time_as_it_is_taken_and_only_when_there_is_room():
    # Given 45 input lines, fed 20 at a time
    backlog = QueueBacklog(URL)
    queue = RecordingQueue(backlog)
    room = [True]
    feed = InputFeed(queue, backlog, [OutgoingMessage(str(i)) for i in range(45)], 20, room=lambda: room[0])

    feed.top_up()
    feed.top_up()  # nothing taken yet: no second chunk
    assert [len(c) for c in queue.sent] == [20] and backlog.waiting == 20

    backlog.took(received(10))
    feed.top_up()  # 10 still waiting, under a chunk: the next one goes
    assert [len(c) for c in queue.sent] == [20, 20] and backlog.waiting == 30

    backlog.took(received(30))
    backlog.took(received(5, receive_count="2"))  # received again after a failure: not counted twice
    room[0] = False  # the delivery queue is long
    feed.top_up()
    assert len(queue.sent) == 2 and backlog.waiting == 0 and not feed.done

    room[0] = True
    feed.top_up()
    assert [len(c) for c in queue.sent] == [20, 20, 5] and feed.done
    assert [b for chunk in queue.sent for b in chunk] == [str(i) for i in range(45)]  # in order, each once


def test_a_refused_first_chunk_fails_the_run_and_a_later_one_is_kept_for_it():
    backlog = QueueBacklog(URL)
    refused = InputFeed(RecordingQueue(backlog, refuse=True), backlog, [OutgoingMessage("a")], 20, room=lambda: True)
    try:
        refused.top_up()
    except RuntimeError as exc:
        assert "could not put the input on the local ingest queue" in str(exc)
    else:
        raise AssertionError("a refused first chunk must raise")

    queue = RecordingQueue(backlog)
    feed = InputFeed(queue, backlog, [OutgoingMessage(str(i)) for i in range(3)], 2, room=lambda: True)
    feed.top_up()
    backlog.took(received(2))
    queue.refuse = True
    feed.top_up()
    assert feed.error == "1 of 1 messages refused" and not feed.done


def test_a_backlog_counts_only_its_own_queue():
    backlog = QueueBacklog(URL)

    backlog.sent({"QueueUrl": URL, "MessageBody": "one"})  # SendMessage
    backlog.sent({"QueueUrl": "http://elsewhere/q", "Entries": [{"MessageBody": "x"}]})

    assert backlog.waiting == 1


def test_settled_only_after_every_mapping_completed_a_whole_empty_poll_since():
    earlier = ActivitySnapshot(work=3, busy=1, polls=(5, 9, 2))

    assert not ActivitySnapshot(3, 0, (6, 10, 3)).quiet_since(earlier)  # the polls under way may predate the work
    assert ActivitySnapshot(3, 0, (7, 11, 4)).quiet_since(earlier)
    assert not ActivitySnapshot(3, 1, (7, 11, 4)).quiet_since(earlier)  # someone is polling now
    assert not ActivitySnapshot(4, 0, (7, 11, 4)).quiet_since(earlier)  # work was done since
