"""Onboarding and managing partners: `distiller partners` (records, secrets, test pings).

`records` validates operator input, `stores` holds the record and secret ports with their Mongo,
Secrets Manager and partners-file adapters, `ping` sends a test delivery, `cli` puts them on the
command line; only `register` is needed from outside.
"""

from distiller_tools.partners.cli import register

__all__ = ["register"]
