"""Fixtures the delivery-log commands' tests share (`deliveries`, `deliveries --stats`).

Each test module defines its own `collection` (a mongomock delivery log holding its attempts);
these turn it into the two sources the commands read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distiller.deliver.log import log_line
from distiller_tools.ops import cli as ops_cli


@pytest.fixture
def log_file(tmp_path: Path, collection) -> Path:
    """The module's attempts written exactly as `distiller run --log` writes them."""
    path = tmp_path / "run.log"
    with open(path, "w", encoding="utf-8") as handle:
        for doc in collection.find({}, sort=[("attemptedAt", 1), ("_id", 1)]):
            handle.write(json.dumps(log_line(doc), default=str) + "\n")
    return path


@pytest.fixture(params=["log", "mongo"])
def source(request, log_file, collection, monkeypatch) -> list[str]:
    """The command-line source of the log: --log FILE, or --mongo-uri (served by mongomock)."""
    if request.param == "log":
        return ["--log", str(log_file)]
    monkeypatch.setattr(ops_cli, "_open_collection", lambda uri, database: collection)
    return ["--mongo-uri", "mongodb://db.example:27017"]
