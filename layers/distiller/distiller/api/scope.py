"""The router's webhookScope rules as a Mongo filter, so partner-scoped lists page and count in the
database. It must admit exactly what `routing.matched_link` routes (a property test checks it):
never through an array, which Mongo's dotted paths would search and `value_at` does not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from distiller.core.lookups import id_forms
from distiller.core.partners import Partner
from distiller.core.routing import Borrowed, RoutingFields


def scope_filter(
    partner: Partner, fields: RoutingFields, borrowed_ids: Mapping[Borrowed, Iterable[str]] | None = None
) -> dict[str, Any] | None:
    """The Mongo filter selecting what `routing.matched_link` routes to `partner`; None: nothing.

    The translation of `matched_link` over one collection's `RoutingFields`:
    - inactive partner: nothing;
    - scope `appSource`/`both`: an app-source path equals the partnerId;
    - scope `organization`/`both`, partner with an organizationId: an organization path holds it
      (as a string or an ObjectId);
    - for each borrowed link (a deal's offer, a listing's seller): the reference (`offerId`,
      `sellerId`) is one of `borrowed_ids[link]`, the referenced documents that route to the
      partner by that link's fields; a link borrowed only without an own organization also
      requires every organization path to read as missing, null or "".

    "Holds" means as the router reads it (`_holding`): never through an array, which Mongo's
    dotted paths would search, so the filter admits exactly what the router routes and a list's
    `_meta.total` counts only what the partner may read.
    """
    if not partner.active:
        return None
    clauses = matching(partner, fields.app_source, fields.organization)
    for borrowed in fields.borrowed:
        applies = bool(matching(partner, borrowed.app_source, borrowed.organization))
        ids = [form for ref_id in (borrowed_ids or {}).get(borrowed, ()) if ref_id for form in id_forms(ref_id)]
        if not applies or not ids:
            continue
        clause: dict[str, Any] = _holding(borrowed.id_path, ids)
        if borrowed.only_without_own_organization:
            no_own_organization = [_reads_empty(path) for path in fields.organization]
            clause = {"$and": [*no_own_organization, clause]}
        clauses.append(clause)
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


_NOT_ARRAY = {"$not": {"$type": "array"}}


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _holding(path: str, values: list[Any]) -> dict[str, Any]:
    """`path` holds one of `values` as `transitions.value_at` reads it: the value itself, reached
    through objects only (Mongo would also match an element of an array on the way or at the end)."""
    return {path: {"$in": values, **_NOT_ARRAY}, **{prefix: _NOT_ARRAY for prefix in _prefixes(path)}}


def _reads_empty(path: str) -> dict[str, Any]:
    """The router finds no value at `path`: an array on the way, or missing, null or "" at the end."""
    through_array = [{prefix: {"$type": "array"}} for prefix in _prefixes(path)]
    return {"$or": [*through_array, {path: {"$in": [None, ""], **_NOT_ARRAY}}]}


def matching(partner: Partner, app_source: tuple[str, ...], organization: tuple[str, ...]) -> list[dict[str, Any]]:
    """One clause per path through which the partner's webhookScope may reach a document: the
    app-source paths holding its partnerId, the organization paths holding its organizationId."""
    clauses: list[dict[str, Any]] = []
    if partner.webhook_scope != "organization":
        clauses += [_holding(path, id_forms(partner.partner_id)) for path in app_source]
    if partner.webhook_scope != "appSource" and partner.organization_id:
        clauses += [_holding(path, id_forms(partner.organization_id)) for path in organization]
    return clauses


def both(*filters: dict[str, Any] | None) -> dict[str, Any]:
    present = [f for f in filters if f]
    if not present:
        return {}
    return present[0] if len(present) == 1 else {"$and": present}
