"""Render docs/event-catalog.md from the reducer tables, so the document cannot drift from the code.

`python -m distiller_tools.catalog > docs/event-catalog.md`; a test fails when the file is stale.
"""

from __future__ import annotations

from distiller.core.reducers import TABLES
from distiller.core.reducers.rules import Reducer, Row

COMMON_FIELDS = ("eventId", "eventKey", "entityType")

#: A listing document with every optional payload field present, to show the conditional ones.
_FULL_SAMPLE = {"ownershipInfo": {"ownershipType": "owned", "vehicleHaveLien": False}}


def payload_fields(reducer: Reducer, r: Row) -> str:
    build = r.payload or reducer.payload
    always = list(build({})) + (["documents"] if r.files is not None else [])
    sometimes = [f for f in build(_FULL_SAMPLE, {"slot": 0}) if f not in always]
    fields = always[:1] + list(COMMON_FIELDS) + always[1:]
    return ", ".join(f"`{f}`" for f in fields) + "".join(f", `{f}` (when present)" for f in sometimes)


def render() -> str:
    lines = [
        "# Event catalog (as implemented)",
        "",
        "Generated from the reducer tables by `make catalog` (`python -m distiller_tools.catalog`);",
        "`tests/unit/test_catalog.py` fails when this file and the code disagree. Row order within a",
        "collection is the emission order of events produced by one change (the `emissionIndex` of",
        "each eventKey). Each event's trigger-row test is the case of the same name in",
        "`tests/unit/test_reducer_<collection>*.py`.",
        "",
        "| Event | Collection | Mongo trigger | Payload (`entityType`) | Test |",
        "|---|---|---|---|---|",
    ]
    for reducer in TABLES:
        for r in reducer.rows:
            test = f"`tests/unit/test_reducer_{reducer.collection}*.py::{r.event}`"
            entity_type = r.entity_type or reducer.entity_type
            lines.append(
                f"| `{r.event}` | `{reducer.collection}` | {r.describe()} | {payload_fields(reducer, r)} "
                f"(`{entity_type}`) | {test} |"
            )
    for reducer in TABLES:
        if reducer.aliases:
            lines += [
                "",
                f"`{reducer.collection}` is also read as " + ", ".join(f"`{a}`" for a in reducer.aliases) + ".",
            ]
        if reducer.one_event_per_update:
            lines += [
                "",
                f"`{reducer.collection}`: one update yields at most one event; the first matching row wins "
                "(order above is precedence).",
            ]
    lines += [
        "",
        "Document-bearing events (`deal.title_*`, `deal.loan_payoff_docs`, `deal.poa_approved`,",
        "`deal.bill_of_sale_approved`) also carry `documents[]` (`filename`, `signedUrl`, `expiresAt`).",
        "Documents and credit reports route through their linked deal(s); `dealId` is the deal through",
        "which the receiving partner is entitled to the event.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
