"""`distiller partners add | show | list | set | disable | enable | rotate-secret | test`.

stdout carries what the command produced (a record, the table, a new secret, the test's result);
stderr what a person reads about it. Exit status 0 when done, 1 when a test ping was not
answered 2xx (or a secret could not be stored after its record, or `enable --drain-now` left
deliveries held), 2 on bad input or a store that cannot be used. Secrets are printed once, on
stdout, and never logged. A partner paused by endpoint health (`deliver/health.py`) shows its
pause in `show` and `list`; `enable` resumes it at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO
from urllib.parse import urlsplit

from distiller.adapters.secrets import DEFAULT_PREFIX
from distiller.core.clock import utc_now
from distiller.core.partners import PartnerRecordError, partner_from_record
from distiller.core.routing import matching_subscription
from distiller.deliver.ssrf import Resolver, system_resolver
from distiller_tools.partners import health, records, stores
from distiller_tools.partners.ping import sample_message, send_test
from distiller_tools.partners.records import InputError
from distiller_tools.partners.stores import PartnerStore, SecretKind, SecretStore, StoreError

SECRET_LABELS: dict[SecretKind, str] = {
    "webhook": "webhook secret (signs X-PA-Signature)",
    "shared": "shared secret (base64; the partner decodes it and signs its API tokens with it)",
}
NOT_SHOWN_AGAIN = "These secrets will not be shown again: hand them to the partner now, over a secure channel."


@dataclass(frozen=True)
class Dependencies:
    """What the commands reach outside the process through; tests hand in fakes."""

    resolver: Resolver = system_resolver
    mongo_collection: Callable[[str, str], Any] = stores.mongo_collection
    secrets_client: Callable[[str | None], Any] = stores.secrets_client
    sqs_client: Callable[[str | None], Any] = stores.sqs_client
    clock: Callable[[], dt.datetime] = utc_now


def _backend_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    where = options.add_mutually_exclusive_group(required=True)
    where.add_argument("--partners-file", metavar="PATH", help="the local partners file (`distiller run`/`api`)")
    where.add_argument("--mongo-uri", metavar="URI", help="the stack's database (secrets in Secrets Manager)")
    options.add_argument("--database", default="privateauto", help="with --mongo-uri (default privateauto)")
    options.add_argument(
        "--secrets-prefix",
        default=DEFAULT_PREFIX,
        help=f"with --mongo-uri: secret name prefix (default {DEFAULT_PREFIX})",
    )
    options.add_argument("--region", help="with --mongo-uri: Secrets Manager region (default: the AWS profile's)")
    return options


def _record_options(parser: argparse.ArgumentParser, *, adding: bool) -> None:
    parser.add_argument("--url", required=adding, help="the partner's https webhook endpoint")
    parser.add_argument("--events", help="event names or wildcards, comma-separated (deal.*, '*'; default '*')")
    parser.add_argument("--scope", help="webhookScope: appSource | organization | both (default both)")
    parser.add_argument("--organization-id", help="the partner's organisation (scope organization or both)")
    parser.add_argument("--organization-user-id", help="the user pre-bound on DealNow offers")
    parser.add_argument("--link-platform", help="linkPlatform: dealnow | pa-app (default dealnow)")
    parser.add_argument("--lead-organization-ids", metavar="ID,ID", help="organisations it may submit leads to")
    parser.add_argument("--leads-rate-limit", metavar="N/SECONDS", help="e.g. 30/60; `none`: the stack default")
    parser.add_argument(
        "--allow-private-endpoints", action="store_true", help="local development only: http and loopback URLs"
    )


def register(subparsers: Any) -> None:
    """Add `partners` and its commands to the `distiller` command's subparsers."""
    backend = _backend_options()
    partners = subparsers.add_parser(
        "partners",
        help="onboard and manage partners: records, secrets, test pings",
        description="Partner records and secrets, in Mongo + Secrets Manager (--mongo-uri) or in the local "
        "partners file (--partners-file). Every input is validated; exit 2 on bad input.",
    )
    commands = partners.add_subparsers(dest="partners_command", required=True)

    add = commands.add_parser("add", parents=[backend], help="register a partner (inactive) and print its secrets once")
    add.add_argument("partner_id", metavar="PARTNER_ID")
    _record_options(add, adding=True)
    add.add_argument("--active", action="store_true", help="active at once (default: inactive until `enable`)")
    add.set_defaults(run=run_add)

    show = commands.add_parser("show", parents=[backend], help="the record; whether each secret exists")
    show.add_argument("partner_id", metavar="PARTNER_ID")
    show.set_defaults(run=run_show)

    listing = commands.add_parser("list", parents=[backend], help="a table of every partner")
    listing.set_defaults(run=run_list)

    change = commands.add_parser("set", parents=[backend], help="change the given fields only")
    change.add_argument("partner_id", metavar="PARTNER_ID")
    _record_options(change, adding=False)
    change.set_defaults(run=run_set)

    disable = commands.add_parser("disable", parents=[backend], help="disable deliveries and API access")
    disable.add_argument("partner_id", metavar="PARTNER_ID")
    disable.set_defaults(run=run_disable)

    enable = commands.add_parser(
        "enable",
        parents=[backend],
        help="enable deliveries and API access; resume a paused partner at once",
        description="Sets active and, for a partner paused by endpoint health, clears the pause at once "
        "(health.resumedBy 'partners enable'). Its held deliveries go back on the delivery queue within "
        "a minute (the health sweep), or now with --drain-now.",
    )
    enable.add_argument("partner_id", metavar="PARTNER_ID")
    enable.add_argument(
        "--drain-now",
        action="store_true",
        help="with --mongo-uri: put the held deliveries back on the delivery queue now, oldest first",
    )
    enable.add_argument("--delivery-queue-url", metavar="URL", help="with --drain-now: the stack's DeliveryQueueUrl")
    enable.set_defaults(run=run_enable)

    rotate = commands.add_parser(
        "rotate-secret", parents=[backend], help="new webhook (or --shared) secret, shown once"
    )
    rotate.add_argument("partner_id", metavar="PARTNER_ID")
    rotate.add_argument("--shared", action="store_true", help="rotate the shared secret instead")
    rotate.set_defaults(run=run_rotate)

    ping = commands.add_parser("test", parents=[backend], help="send one signed sample delivery and show the answer")
    ping.add_argument("partner_id", metavar="PARTNER_ID")
    ping.add_argument("--event", default="deal.created", help="a catalog event name (default deal.created)")
    ping.add_argument(
        "--allow-private-endpoints", action="store_true", help="local development only: http and loopback URLs"
    )
    ping.set_defaults(run=run_test)


def main(argv: list[str], stdout: IO[str], stderr: IO[str], deps: Dependencies | None = None) -> int:
    """`distiller partners ARGV...` with `deps` (tests: an injected resolver, mongomock, moto)."""
    from distiller_tools.cli import build_parser

    args = build_parser().parse_args(["partners", *argv])
    return int(args.run(args, io.StringIO(), stdout, stderr, deps))


def _guarded(command: Callable[..., int]) -> Callable[..., int]:
    """Input and store errors become one line on stderr and exit 2."""

    def wrapper(
        args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str], deps: Dependencies | None = None
    ) -> int:
        try:
            return command(args, stdout, stderr, deps or Dependencies())
        except (InputError, StoreError) as exc:
            print(f"distiller: partners {args.partners_command}: {' '.join(str(exc).split())}", file=stderr)
            return 2

    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    return wrapper


def open_stores(args: argparse.Namespace, deps: Dependencies) -> tuple[PartnerStore, SecretStore]:
    if args.partners_file:
        partners_file = stores.PartnersFile(Path(args.partners_file))
        return partners_file, stores.PartnersFileSecrets(partners_file)
    where = f"mongo database {args.database!r} (collection partners)"  # never the URI: it may hold a password
    return (
        stores.MongoPartners(deps.mongo_collection(args.mongo_uri, args.database), where),
        stores.SecretsManagerSecrets(deps.secrets_client(args.region), args.secrets_prefix),
    )


def _existing(store: PartnerStore, partner_id: str) -> dict[str, Any]:
    record = store.get(partner_id)
    if record is None:
        raise InputError(f"no partner {partner_id!r} in {store.where}")
    webhook = record.get("webhook")
    if webhook is not None and not isinstance(webhook, dict):  # a hand-edited record: say so, don't crash
        raise InputError(
            f"{store.where}: partner {partner_id!r}.webhook: expected an object, got {type(webhook).__name__}: "
            "fix the record by hand"
        )
    return record


def _changes(args: argparse.Namespace, deps: Dependencies) -> dict[str, Any]:
    """The record fields the given options set (dotted keys inside `webhook`; None removes a field)."""
    changes: dict[str, Any] = {}
    if args.url is not None:
        changes["webhook.url"] = records.check_url(
            args.url, allow_private=args.allow_private_endpoints, resolver=deps.resolver
        )
    if args.events is not None:
        changes["webhook.events"] = records.parse_events(args.events)
    if args.scope is not None:
        changes["webhookScope"] = records.parse_scope(args.scope)
    if args.link_platform is not None:
        changes["linkPlatform"] = records.parse_link_platform(args.link_platform)
    for option, key in (("organization_id", "organizationId"), ("organization_user_id", "organizationUserId")):
        value = getattr(args, option)
        if value is not None:
            changes[key] = None if value in ("", records.CLEAR) else value
    if args.lead_organization_ids is not None:
        changes["leadOrganizationIds"] = records.parse_id_list(args.lead_organization_ids, "--lead-organization-ids")
    if args.leads_rate_limit is not None:
        changes["leadsRateLimit"] = records.parse_rate_limit(args.leads_rate_limit)
    return changes


def _checked(record: dict[str, Any]) -> dict[str, Any]:
    where = f"partner {record.get('partnerId')!r}"
    records.check_record(record, where)
    if record.get("webhookScope") == "organization" and not record.get("organizationId"):
        raise InputError(f"{where}: scope organization needs --organization-id (it would receive nothing)")
    return record


def _print_record(record: dict[str, Any], stdout: IO[str]) -> None:
    from bson import json_util

    stdout.write(json_util.dumps(record, indent=2, json_options=json_util.RELAXED_JSON_OPTIONS) + "\n")


def _issue_secrets(
    secrets_store: SecretStore, partner_id: str, kinds: tuple[SecretKind, ...], stdout: IO[str], stderr: IO[str]
) -> int:
    """Generate, store, then print each secret once; 1 when one could not be stored (none printed)."""
    generated = {
        kind: records.new_webhook_secret() if kind == "webhook" else records.new_shared_secret() for kind in kinds
    }
    for kind, value in generated.items():
        try:
            secrets_store.put(partner_id, kind, value)
        except StoreError as exc:
            print(f"distiller: partners: {exc}; the {kind} secret was not stored", file=stderr)
            return 1
    for kind, value in generated.items():
        stdout.write(f"{SECRET_LABELS[kind]}: {value}\n")
    stdout.write(NOT_SHOWN_AGAIN + "\n")
    return 0


@_guarded
def run_add(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    partner_id = records.check_partner_id(args.partner_id)
    changes = _changes(args, deps)
    changes.setdefault("webhook.events", ["*"])
    record = records.apply_changes({"partnerId": partner_id, "active": bool(args.active)}, changes)
    _checked(record)
    partner_store, secrets_store = open_stores(args, deps)
    if not partner_store.create(record):
        raise InputError(f"partner {partner_id!r} already exists in {partner_store.where} (use set or rotate-secret)")
    state = "active" if args.active else "inactive until `distiller partners enable`"
    print(f"partners: added {partner_id!r} to {partner_store.where} ({state})", file=stderr)
    code = _issue_secrets(secrets_store, partner_id, stores.SECRET_KINDS, stdout, stderr)
    if code:
        print(f"partners: then run `distiller partners rotate-secret {partner_id}` (and --shared)", file=stderr)
    return code


@_guarded
def run_show(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    partner_store, secrets_store = open_stores(args, deps)
    record = _existing(partner_store, args.partner_id)
    _print_record(record, stdout)
    for kind in stores.SECRET_KINDS:
        state = "stored" if secrets_store.exists(args.partner_id, kind) else "MISSING"
        stdout.write(f"{kind} secret: {state} ({secrets_store.name(args.partner_id, kind)})\n")
    for line in health.status_lines(record, partner_store.held_count(args.partner_id)):
        stdout.write(line + "\n")
    return 0


def table_rows(partners: list[dict[str, Any]], held: dict[str, int] | None = None) -> list[tuple[str, ...]]:
    """`list`'s rows: id, active, state (paused or not), scope, url host, events count, and for a
    paused partner since when and its last probe; `held`: deliveries held per partner (None: the
    store keeps none, shown `-`). Unreadable fields are shown as `?`."""
    rows = [("PARTNER", "ACTIVE", "STATE", "SCOPE", "URL HOST", "EVENTS", "PAUSED SINCE", "LAST PROBE", "HELD")]
    for record in partners:
        webhook = record.get("webhook") if isinstance(record.get("webhook"), dict) else {}
        url = webhook.get("url")
        try:
            host = (urlsplit(url).hostname or "?") if isinstance(url, str) else "-"
        except ValueError:
            host = "?"
        events = webhook.get("events", ["*"])
        count = "*" if events in (None, ["*"]) else str(len(events)) if isinstance(events, list) else "?"
        active = record.get("active", True)
        pause = record.get("health") if health.is_paused(record) and isinstance(record.get("health"), dict) else {}
        rows.append(
            (
                str(record.get("partnerId")),
                "yes" if active is True or active is None else "no",
                "paused" if health.is_paused(record) else "active",
                str(record.get("webhookScope") or "both"),
                host,
                count,
                health.instant_text(pause.get("pausedAt")) or "-",
                health.instant_text(pause.get("lastProbeAt")) or "-",
                "-" if held is None else str(held.get(str(record.get("partnerId")), 0)),
            )
        )
    return rows


@_guarded
def run_list(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    partner_store, _ = open_stores(args, deps)
    partners = partner_store.list()
    rows = table_rows(partners, partner_store.held_counts())
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")
    print(f"partners: {len(rows) - 1} in {partner_store.where}", file=stderr)
    for record in partners:
        if health.is_paused(record):
            print(f"partners: {record.get('partnerId')!r} {health.pause_note(record)}", file=stderr)
    return 0


def _update(
    args: argparse.Namespace, changes: dict[str, Any], stdout: IO[str], stderr: IO[str], deps: Dependencies
) -> int:
    partner_store, _ = open_stores(args, deps)
    _write(partner_store, _existing(partner_store, args.partner_id), changes, stdout, stderr)
    return 0


def _write(
    partner_store: PartnerStore, record: dict[str, Any], changes: dict[str, Any], stdout: IO[str], stderr: IO[str]
) -> dict[str, Any]:
    """Store `record` with `changes` (checked whole first), print it; the stored record."""
    updated = records.apply_changes(record, changes)
    partner_store.replace(_checked(updated), before=record)
    _print_record(updated, stdout)
    print(f"partners: {updated['partnerId']!r}: changed {', '.join(changes)} in {partner_store.where}", file=stderr)
    return updated


@_guarded
def run_set(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    changes = _changes(args, deps)
    if not changes:
        raise InputError("nothing to change: give at least one of --url, --events, --scope, ...")
    return _update(args, changes, stdout, stderr, deps)


@_guarded
def run_disable(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    partner_store, _ = open_stores(args, deps)
    _write(partner_store, _existing(partner_store, args.partner_id), {"active": False}, stdout, stderr)
    held = partner_store.held_count(args.partner_id)
    if held:  # the sweep drains active partners only: these wait for `enable` (or the retention)
        print(
            f"partners: {health.held_text(held)} for {args.partner_id!r} stay held until "
            f"`distiller partners enable {args.partner_id}` (or the hold's retention dead-letters them)",
            file=stderr,
        )
    return 0


def enable_changes(record: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    """What `enable` changes: `active`, and for a paused partner the pause itself, at once (`state`
    removed, `health.resumedAt`/`resumedBy` stamped). Empty: already active and not paused."""
    changes: dict[str, Any] = {} if record.get("active") in (True, None) else {"active": True}
    return {**changes, **health.resume_changes(record, at)}


def _drain_options(args: argparse.Namespace) -> None:
    if args.delivery_queue_url is not None and not args.drain_now:
        raise InputError("--delivery-queue-url: only with --drain-now")
    if not args.drain_now:
        return
    if args.partners_file:
        raise InputError(f"--drain-now: {health.NO_HELD_STORE}")
    if not args.delivery_queue_url:
        raise InputError("--drain-now needs --delivery-queue-url URL (the stack's DeliveryQueueUrl output)")


@_guarded
def run_enable(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    _drain_options(args)
    partner_store, _ = open_stores(args, deps)
    record = _existing(partner_store, args.partner_id)
    changes = enable_changes(record, deps.clock())
    if changes:
        _write(partner_store, record, changes, stdout, stderr)
        if health.is_paused(record):
            print(f"partners: {args.partner_id!r} resumed (was {health.pause_note(record)})", file=stderr)
    else:
        _print_record(record, stdout)
        print(f"partners: {args.partner_id!r} is already active and not paused: nothing changed", file=stderr)
    held = partner_store.held_count(args.partner_id)
    if held is None:
        print(f"partners: {health.NO_HELD_STORE}", file=stderr)
        return 0
    if not args.drain_now:
        if held:
            print(
                f"partners: {health.held_text(held)} for {args.partner_id!r}: {health.SWEEP_NOTE} "
                "(or now: --drain-now --delivery-queue-url URL)",
                file=stderr,
            )
        else:
            print(f"partners: no deliveries held for {args.partner_id!r}", file=stderr)
        return 0
    return _drain(args, partner_store, stderr, deps)


def _drain(args: argparse.Namespace, partner_store: PartnerStore, stderr: IO[str], deps: Dependencies) -> int:
    """`enable --drain-now`: the sweep's drain, now; 1 when anything is still held after it."""
    from pymongo.errors import PyMongoError

    from distiller.adapters.queues import SqsQueue, region_of

    assert isinstance(partner_store, stores.MongoPartners)  # `_drain_options` refused the file
    queue = SqsQueue(deps.sqs_client(args.region or region_of(args.delivery_queue_url)), args.delivery_queue_url)
    try:
        drained, still_held = health.drain_now(partner_store.database, args.partner_id, queue, deps.clock())
    except PyMongoError as exc:  # the partner is resumed already: the sweep drains within a minute
        print(f"distiller: partners enable: drain: {' '.join(str(exc).split())[:300]}", file=stderr)
        print(f"partners: {args.partner_id!r} is resumed; {health.SWEEP_NOTE}", file=stderr)
        return 1
    for line in health.drain_lines(args.partner_id, drained, still_held):
        print(line, file=stderr)
    if still_held and not drained.event_ids:
        print(f"partners: the delivery queue {args.delivery_queue_url} took none: check the URL", file=stderr)
    return 1 if still_held else 0


@_guarded
def run_rotate(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    kind: SecretKind = "shared" if args.shared else "webhook"
    partner_store, secrets_store = open_stores(args, deps)
    _existing(partner_store, args.partner_id)
    code = _issue_secrets(secrets_store, args.partner_id, (kind,), stdout, stderr)
    if code == 0:
        print(
            f"partners: {kind} secret of {args.partner_id!r} stored in {secrets_store.name(args.partner_id, kind)}",
            file=stderr,
        )
        print(_rotation_note(kind, bool(args.partners_file)), file=stderr)
    return code


def _webhook_secret_cache_minutes() -> int:
    """The deployed default (`DispatcherSettings`), so the note cannot drift from the stack."""
    from distiller.settings import DispatcherSettings

    return int(DispatcherSettings.model_fields["secret_cache_seconds"].default) // 60


def _rotation_note(kind: SecretKind, local: bool) -> str:
    if local:
        return "partners: `distiller run` and `distiller api` read the partners file when they start: restart them."
    if kind == "webhook":
        return (
            f"partners: the Dispatcher caches webhook secrets for {_webhook_secret_cache_minutes()} minutes "
            "(SECRET_CACHE_SECONDS); a 401 or 403 from the partner makes "
            "the next attempt read the new one at once (docs/assumptions.md). Deliveries signed with the old "
            "secret meanwhile are retried, not lost."
        )
    return (
        "partners: the API caches shared secrets for 5 minutes: tokens signed with the new secret may be "
        "refused (401), and old ones accepted, until then."
    )


@_guarded
def run_test(args: argparse.Namespace, stdout: IO[str], stderr: IO[str], deps: Dependencies) -> int:
    if "*" in args.event:
        raise InputError(f"--event: {args.event!r}: a test sends one event: name it exactly (e.g. deal.created)")
    if args.event not in records.catalog_events():
        raise InputError(f"--event: {records.unknown_event(args.event, records.catalog_events())}")
    partner_store, secrets_store = open_stores(args, deps)
    record = _existing(partner_store, args.partner_id)
    url = (record.get("webhook") or {}).get("url")
    if not isinstance(url, str) or not url:
        raise InputError(f"partner {args.partner_id!r} has no webhook.url (set it with `partners set --url`)")
    secret = secrets_store.get(args.partner_id, "webhook")
    if secret is None:
        raise InputError(
            f"no webhook secret at {secrets_store.name(args.partner_id, 'webhook')} (`partners rotate-secret`)"
        )
    try:
        partner = partner_from_record(record)
    except PartnerRecordError as exc:  # a hand-edited record the stack would skip
        raise InputError(f"{partner_store.where}: {exc}") from None
    if matching_subscription(partner.events, args.event) is None or not partner.active:
        why = "inactive" if not partner.active else f"not subscribed to {args.event} (events: {list(partner.events)})"
        print(f"partners: note: {args.partner_id!r} is {why}; the stack would not send it this event", file=stderr)
    message = sample_message(args.partner_id, args.event)
    ping = send_test(url, secret, message, allow_private=args.allow_private_endpoints, resolver=deps.resolver)
    outcome = ping.result
    status = f"HTTP {outcome.status_code}" if outcome.status_code is not None else "no response"
    summary = {
        "partnerId": args.partner_id,
        "event": args.event,
        "eventId": message.event_id,
        "url": url,
        "delivered": outcome.delivered,
        "statusCode": outcome.status_code,
        "latencyMs": round(ping.latency_ms, 1),
        "error": outcome.error,
        "responseBodyExcerpt": (outcome.body_excerpt or "")[:500] or None,
    }
    stdout.write(json.dumps(summary) + "\n")
    print(
        f"partners: test {args.event} to {url}: {status} in {ping.latency_ms:.0f} ms"
        + (f" ({outcome.error})" if outcome.error else "")
        + "; nothing was written to the delivery log or any queue",
        file=stderr,
    )
    return 0 if outcome.delivered else 1
