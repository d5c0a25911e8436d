"""The Dispatcher's deployed capacity: settings defaults, code defaults, template.yaml and the bench agree.

`make bench` measures "the deployed defaults"; these tests keep that phrase true, and keep the
batch size inside what one invocation can finish (issue 14).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import yaml

from bench.dispatch_bench import deployed
from distiller.deliver.dispatch import FINISH_MARGIN_SECONDS, Dispatcher
from distiller.deliver.sender import WebhookSender
from distiller.settings import DispatcherSettings

ROOT = Path(__file__).resolve().parents[2]
ENV = {"RETRY_QUEUE_URL": "https://sqs.example/retry", "DELIVERY_DLQ_URL": "https://sqs.example/dlq"}


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation short tags read as None (only plain values are checked here)."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


@pytest.fixture(scope="module")
def function():
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
    return template["Resources"]["DispatcherFunction"]["Properties"]


@pytest.fixture(scope="module")
def batch_size(function) -> int:
    sizes = {e["Properties"]["BatchSize"] for e in function["Events"].values() if e["Type"] == "SQS"}
    assert len(sizes) == 1, "the delivery and retry sources take batches of one size"
    return sizes.pop()


def test_code_defaults_are_the_settings_defaults():
    settings = DispatcherSettings.from_env(ENV)

    assert inspect.signature(Dispatcher).parameters["max_workers"].default == settings.concurrency
    assert WebhookSender().per_host_connections == settings.per_host_connections


def test_every_message_of_a_batch_has_a_worker(batch_size):
    assert batch_size <= DispatcherSettings.from_env(ENV).concurrency


def test_a_batch_all_for_one_hanging_partner_starts_every_attempt_in_time(function, batch_size):
    # Each wave of per-host attempts takes a whole budget; the last must start while a budget and
    # the finish margin are left, or its messages come back deferred instead of attempted.
    settings = DispatcherSettings.from_env(ENV)
    waves = math.ceil(batch_size / settings.per_host_connections)
    last_start = function["Timeout"] - settings.timeout_seconds - FINISH_MARGIN_SECONDS

    assert (waves - 1) * settings.timeout_seconds <= last_start


def test_the_bench_measures_the_deployed_defaults(batch_size):
    settings = DispatcherSettings.from_env(ENV)

    stack = deployed()

    assert (stack.workers, stack.per_host, stack.batch_size) == (
        settings.concurrency,
        settings.per_host_connections,
        batch_size,
    )
