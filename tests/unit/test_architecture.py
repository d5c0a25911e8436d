"""The folder layout is the architecture: these rules keep it true.

- `distiller/core` is pure: it imports only itself, the standard library and `bson` (BSON types).
- Outside clients (MongoDB driver, boto3/botocore, Secrets Manager through powertools Parameters)
  are created and wrapped in `distiller/adapters`; `runtime.py` composes them. The few other
  modules that touch a driver type are listed below with the reason.
- Nothing in the layer imports the tooling package (`distiller_tools` is never deployed).
- A handler (`functions/*/app.py`) imports, from our code, only `distiller.runtime`.

Imports are read with `ast`, including those inside functions, so a lazy import counts too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "distiller" / "distiller"
TOOLS = ROOT / "tools" / "distiller_tools"
FUNCTIONS = ROOT / "functions"

#: Third-party packages that open or wrap a connection to the outside world.
CLIENT_PACKAGES = ("boto3", "botocore", "pymongo", "aws_lambda_powertools.utilities.parameters")

#: Modules outside adapters/ that may import something of a client package: what, and why.
CLIENT_EXCEPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "adapters": (CLIENT_PACKAGES, "every adapter"),
    "runtime.py": (CLIENT_PACKAGES, "the composition root builds every client"),
    "api/data.py": (
        ("pymongo.database",),
        "the partner-scoped read repository takes a Database (its queries are the API)",
    ),
    "relay": (
        ("pymongo.errors",),
        "the relay reads a pymongo change stream: it tells a lost position by the driver's error",
    ),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports (absolute names; relative imports resolved against the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            module = node.module or ""
            found.append((node.lineno, module))
            # `from distiller import x` imports the submodule distiller.x
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if module == "distiller"]
    return sorted(found)


def layer_modules(under: Path = LAYER) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_rules_see_every_stage_of_the_pipeline():
    stages = {p.name for p in LAYER.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert stages == {"core", "ingest", "relay", "deliver", "api", "adapters"}
    assert {p.name for p in LAYER.glob("*.py")} == {"__init__.py", "settings.py", "runtime.py", "observability.py"}


@pytest.mark.parametrize("path", layer_modules(LAYER / "core"), ids=lambda p: str(p.relative_to(LAYER)))
def test_core_imports_only_itself_the_standard_library_and_bson(path):
    # bson reads Extended JSON; orjson is only a faster JSON codec: neither reaches outside the process.
    allowed_third_party = ("bson", "orjson")
    for line, name in imports_of(path):
        top = name.split(".")[0]
        if top == "distiller":
            assert is_within(name, "distiller.core"), f"{path.name}:{line} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in allowed_third_party, f"{path.name}:{line} imports {name}"


@pytest.mark.parametrize("path", layer_modules(), ids=lambda p: str(p.relative_to(LAYER)))
def test_outside_clients_live_in_adapters(path):
    relative = path.relative_to(LAYER).as_posix()
    allowed, _ = CLIENT_EXCEPTIONS.get(relative) or CLIENT_EXCEPTIONS.get(relative.split("/")[0]) or ((), "")
    for line, name in imports_of(path):
        if any(is_within(name, package) for package in CLIENT_PACKAGES):
            assert any(is_within(name, ok) for ok in allowed), f"{relative}:{line} imports {name}"


@pytest.mark.parametrize("path", layer_modules(), ids=lambda p: str(p.relative_to(LAYER)))
def test_the_layer_never_imports_the_tooling(path):
    for line, name in imports_of(path):
        assert not is_within(name, "distiller_tools"), f"{path.relative_to(LAYER)}:{line} imports {name}"


@pytest.mark.parametrize("path", sorted(FUNCTIONS.glob("*/app.py")), ids=lambda p: p.parent.name)
def test_handlers_import_only_the_runtime(path):
    ours = [(line, name) for line, name in imports_of(path) if name.split(".")[0] in ("distiller", "distiller_tools")]
    assert ours, f"{path} imports nothing from the layer"
    assert all(name == "distiller.runtime" for _, name in ours), ours


def test_the_layer_ships_no_tooling():
    # The tooling sits outside the layer's ContentUri (layers/distiller), so `sam build` cannot package it.
    assert not (LAYER.parent / "distiller_tools").exists()
    assert (TOOLS / "cli.py").is_file() and (TOOLS / "local").is_dir()


def test_an_import_the_rules_forbid_is_caught(tmp_path):
    # The checker itself: a core module importing an adapter, a lazy boto3 import, a tools import.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from distiller.adapters.queues import SqsQueue\n"
        "def f():\n    import boto3\n"
        "from distiller import settings\n"
        "import distiller_tools.cli\n"
    )
    names = [name for _, name in imports_of(bad)]
    assert names == ["distiller.adapters.queues", "boto3", "distiller", "distiller.settings", "distiller_tools.cli"]


#: Import name → distribution, for the layer's third-party imports.
DISTRIBUTIONS = {
    "aws_lambda_powertools": "aws-lambda-powertools",
    "boto3": "boto3",
    "botocore": "botocore",
    "bson": "pymongo",
    "pymongo": "pymongo",
    "jwt": "pyjwt",
    "urllib3": "urllib3",
    "certifi": "certifi",
    "pydantic": "pydantic",
    "orjson": "orjson",
}


def test_every_runtime_import_of_the_layer_is_a_declared_dependency():
    import re
    import tomllib

    imported = {
        name.split(".")[0]
        for path in layer_modules()
        for _, name in imports_of(path)
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "distiller"
    }
    assert imported <= set(DISTRIBUTIONS), imported - set(DISTRIBUTIONS)
    needed = {DISTRIBUTIONS[name] for name in imported}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared_names = {re.split(r"[<>=!~ ]", spec)[0].lower() for spec in declared}
    assert declared_names == needed
    pinned = (ROOT / "layers" / "distiller" / "requirements.txt").read_text()
    pinned_names = {line.split("==")[0].lower() for line in pinned.splitlines() if "==" in line}
    # botocore comes pinned by boto3 (which requires an exact botocore range).
    assert pinned_names == needed - {"botocore"}
