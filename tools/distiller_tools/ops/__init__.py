"""Operations on a running stack: redrive a dead-letter queue, list a partner's delivery attempts,
explain why a live entity's events did or did not reach a partner.

`redrive` moves dead letters back to work, `deliveries` reads the delivery log, `explain` answers
"why didn't my event fire", `cli` puts them on the `distiller` command line; only `register` is
needed from outside.
"""

from typing import Any

from distiller_tools.ops import cli, explain


def register(subparsers: Any) -> None:
    """Add the operations commands to the `distiller` command's subparsers."""
    cli.register(subparsers)
    explain.register(subparsers)


__all__ = ["register"]
