"""Issue 11: tracing must not copy partner data into X-Ray.

powertools' `capture_lambda_handler` puts the handler's response (partner DTOs, presigned S3 links)
and its exception into the trace segment's metadata unless told not to. These tests run every
handler in-process with the shared tracer's provider replaced by a recorder, once answering and
once failing, and check nothing is put as metadata; the capture switches are resolved when the
decorator runs, so each handler module is imported afresh with the environment saying "capture"
(powertools' default), which the decorators must override. An AST check is a second, cheap guard.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import distiller.ingest.handler as ingest_handler
from distiller.ingest.batch import IngestResult
from distiller.observability import tracer
from distiller.relay.loop import RelayResult

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ["api", "dispatcher", "distiller", "relay"]
SECRET = "https://documents.s3.amazonaws.com/deal-1/title.pdf?X-Amz-Signature=partner-data"


class RecordingSubsegment:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.calls.append(("metadata", key, value))

    def put_annotation(self, key: str, value: Any) -> None:
        self.calls.append(("annotation", key, value))


class RecordingProvider:
    """Stands in for the X-Ray recorder: records what the tracer puts on its subsegments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.subsegments: list[str] = []

    @contextlib.contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[RecordingSubsegment]:
        self.subsegments.append(name or "")
        yield RecordingSubsegment(self.calls)

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.calls.append(("metadata", key, value))

    def put_annotation(self, key: str, value: Any) -> None:
        self.calls.append(("annotation", key, value))

    @property
    def metadata(self) -> list[tuple[str, Any]]:
        return [(key, value) for kind, key, value in self.calls if kind == "metadata"]


def fresh_handler_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """functions/<name>/app.py imported anew, with powertools told to capture (its default)."""
    monkeypatch.setenv("POWERTOOLS_TRACER_CAPTURE_RESPONSE", "true")
    monkeypatch.setenv("POWERTOOLS_TRACER_CAPTURE_ERROR", "true")
    module_name = f"issue11_function_{name}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> RecordingProvider:
    recording = RecordingProvider()
    monkeypatch.setattr(tracer, "provider", recording)
    return recording


def _answering(name: str, module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make the handler answer with partner data; returns the event to call it with."""
    if name == "api":

        class App:
            def resolve(self, event: Any, context: Any) -> dict[str, Any]:
                return {"statusCode": 200, "body": f'{{"files": [{{"url": "{SECRET}"}}]}}'}

        monkeypatch.setattr(module, "get_runtime", lambda: object())
        monkeypatch.setattr(module, "use_runtime", lambda runtime: None)
        monkeypatch.setattr(module, "app", App())
        return {"path": "/data/deals", "httpMethod": "GET", "headers": {}, "requestContext": {}}
    if name == "dispatcher":
        runtime = SimpleNamespace(
            max_receive_count=5,
            partner_metrics=True,
            dispatcher=SimpleNamespace(dispatch_all=lambda messages, **kwargs: []),
            dead_letters=SimpleNamespace(park=lambda body, reason, message_id: True),
        )
        monkeypatch.setattr(module, "get_runtime", lambda: runtime)
        record = {"messageId": "m-1", "receiptHandle": "r", "body": SECRET, "attributes": {}, "eventSource": "aws:sqs"}
        return {"Records": [record]}
    if name == "distiller":
        result = IngestResult(records=1, change_events=1, deliveries=0, parked=[("origin", SECRET)])
        names = ["lookups", "delivery_queue", "ingest_dead_letters", "file_links", "payloads", "retry_policy"]
        runtime = SimpleNamespace(**dict.fromkeys(names))
        monkeypatch.setattr(module, "get_runtime", lambda: runtime)
        monkeypatch.setattr(ingest_handler, "lambda_records", lambda event: [])
        monkeypatch.setattr(ingest_handler, "ingest", lambda *args, **kwargs: result)
        return {"detail": {}}
    assert name == "relay"
    result = RelayResult(read=1, sent=1, checkpoint=SECRET)
    runtime = SimpleNamespace(max_seconds=1.0, relay=SimpleNamespace(name="relay", run=lambda max_seconds: result))
    monkeypatch.setattr(module, "get_runtime", lambda: runtime)
    return {}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_handler_response_is_not_put_into_the_trace(name, provider, monkeypatch, lambda_context):
    module = fresh_handler_module(name, monkeypatch)
    event = _answering(name, module, monkeypatch)

    response = module.handler(event, lambda_context)

    assert response is not None
    assert provider.subsegments == ["## handler"]  # the tracer did run around the handler
    assert provider.metadata == []


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_handler_error_is_not_put_into_the_trace(name, provider, monkeypatch, lambda_context):
    module = fresh_handler_module(name, monkeypatch)

    def failing() -> None:
        raise RuntimeError(f"could not build the runtime for {SECRET}")

    monkeypatch.setattr(module, "get_runtime", failing)

    with pytest.raises(RuntimeError, match="could not build"):
        module.handler({"Records": []}, lambda_context)

    assert provider.subsegments == ["## handler"]
    assert provider.metadata == []


def _tracer_decorators(path: Path) -> list[ast.expr]:
    """Every decorator that is `tracer.capture_*` (called or not) in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr.startswith("capture_"):
                    found.append(decorator)
    return found


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_handler_tracer_decorator_turns_capture_off(name):
    [decorator] = _tracer_decorators(ROOT / "functions" / name / "app.py")
    assert isinstance(decorator, ast.Call), "bare @tracer.capture_lambda_handler captures the response"
    keywords = {k.arg: k.value for k in decorator.keywords}
    for switch in ("capture_response", "capture_error"):
        assert isinstance(keywords.get(switch), ast.Constant) and keywords[switch].value is False, switch


def test_the_layer_traces_no_method_that_could_capture_partner_data():
    """`tracer.capture_method` captures return values too; the layer uses none (or turns it off)."""
    for path in (ROOT / "layers" / "distiller" / "distiller").rglob("*.py"):
        for decorator in _tracer_decorators(path):
            assert isinstance(decorator, ast.Call), f"{path}: bare tracer decorator"
            keywords = {k.arg: k.value for k in decorator.keywords}
            for switch in ("capture_response", "capture_error"):
                value = keywords.get(switch)
                assert isinstance(value, ast.Constant) and value.value is False, f"{path}: {switch}"
