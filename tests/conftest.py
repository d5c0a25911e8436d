"""Shared fixtures: Lambda context, function loading, and a powertools environment for tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "trigger-distiller")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TriggerDistillerTest")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-2")
# Never let a test reach a real AWS account.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


@dataclass
class FakeLambdaContext:
    function_name: str = "trigger-distiller-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-2:123456789012:function:trigger-distiller-test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def load_function(name: str) -> ModuleType:
    """Import `functions/<name>/app.py` as the tests' own copy of that handler module."""
    from distiller_tools.local.pipeline import load_handler_module  # after the environment above is set

    return load_handler_module(name, prefix="function_")


# The dispatcher's world (moto queues, mongomock log, partners) and loopback partner endpoints.
from tests.delivery_world import serve, world  # noqa: E402,F401
