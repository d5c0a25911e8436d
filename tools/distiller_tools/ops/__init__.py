"""Operations on a running stack: redrive a dead-letter queue, list a partner's delivery attempts.

`redrive` moves dead letters back to work, `deliveries` reads the delivery log, `cli` puts
them on the `distiller` command line; only `register` is needed from outside.
"""

from distiller_tools.ops.cli import register

__all__ = ["register"]
