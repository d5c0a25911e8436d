"""Where partner records and secrets live: the ports `distiller partners` writes through, and their adapters.

Deployed: records in Mongo's `partners` collection, secrets in Secrets Manager under the stack's
prefix (the names `adapters/secrets.py` reads). Local: one partners file, as `distiller run` and
`distiller api` read it, with the secrets inside each record (`webhook.secret`, `sharedSecret`).
Records handed out by a `PartnerStore` never carry a secret; secret values go through a
`SecretStore` only, and no message here ever holds one. Deliveries held for a paused partner
(`held_deliveries`) exist only beside Mongo: the partners file has no held store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from distiller.adapters.secrets import DEFAULT_PREFIX, SHARED_SECRET_SUFFIX, WEBHOOK_SECRET_SUFFIX
from distiller.core.clock import iso_utc
from distiller.core.lookups import PARTNERS_COLLECTION
from distiller.deliver.health import HELD_COLLECTION
from distiller_tools.mongo import open_database

SecretKind = Literal["webhook", "shared"]
SECRET_KINDS: tuple[SecretKind, ...] = ("webhook", "shared")


class StoreError(RuntimeError):
    """A backend could not be read or written; the message names the store, never a secret."""


class PartnerStore(Protocol):
    where: str
    """Where the records live, for messages (`partners file events/partners.json`, `mongo …`)."""

    def get(self, partner_id: str) -> dict[str, Any] | None: ...
    def list(self) -> list[dict[str, Any]]: ...
    def create(self, record: dict[str, Any]) -> bool:
        """Store a new record; False (nothing written) when its partnerId already exists."""
        ...

    def replace(self, record: dict[str, Any], before: dict[str, Any] | None = None) -> None:
        """Store `record`; given the `before` it was made from, only the top-level keys that differ are
        written, so a pause the Dispatcher writes meanwhile (`state`, `health`) is not overwritten."""
        ...

    def held_count(self, partner_id: str) -> int | None:
        """Deliveries held for the partner; None where no held store exists (the partners file)."""
        ...

    def held_counts(self) -> dict[str, int] | None:
        """Held deliveries per partner (partners with none left out); None without a held store."""
        ...


class SecretStore(Protocol):
    def exists(self, partner_id: str, kind: SecretKind) -> bool:
        """Whether the secret exists (without reading its value)."""
        ...

    def get(self, partner_id: str, kind: SecretKind) -> str | None:
        """The secret's value; None when it does not exist."""
        ...

    def put(self, partner_id: str, kind: SecretKind, value: str) -> None: ...
    def name(self, partner_id: str, kind: SecretKind) -> str:
        """Where the secret is, for messages."""
        ...


def without_secrets(record: dict[str, Any]) -> dict[str, Any]:
    """A record as shown and compared: no `_id`, no `sharedSecret`, no `webhook.secret`."""
    shown = {k: v for k, v in record.items() if k not in ("_id", "sharedSecret")}
    if isinstance(shown.get("webhook"), dict):
        shown["webhook"] = {k: v for k, v in shown["webhook"].items() if k != "secret"}
    return shown


class PartnersFile:
    """The local partners file (a JSON array of records): both ports, secrets inside the records.

    Rewritten whole on every change, through a temporary file renamed over it, so a reader
    (`distiller run` starting) never sees half a file. Values are kept as written (Extended JSON
    wrappers such as `{"$oid": …}` included)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"partners file {path}"

    def _read(self) -> list[dict[str, Any]]:
        try:
            records = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []  # `add` creates the file
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise StoreError(f"{self.path}: not valid JSON: {exc}") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise StoreError(f"{self.path}: expected a JSON array of partner records")
        return records

    def _write(self, records: list[dict[str, Any]]) -> None:
        text = json.dumps(records, indent=2, ensure_ascii=False, default=_instant) + "\n"
        directory = self.path.parent if str(self.path.parent) else Path(".")
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            if self.path.exists():
                os.chmod(temporary, self.path.stat().st_mode & 0o777)
            os.replace(temporary, self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write: {exc.strerror}") from None

    def _index(self, records: list[dict[str, Any]], partner_id: str) -> int | None:
        return next((i for i, r in enumerate(records) if r.get("partnerId") == partner_id), None)

    def get(self, partner_id: str) -> dict[str, Any] | None:
        records = self._read()
        i = self._index(records, partner_id)
        return None if i is None else without_secrets(records[i])

    def list(self) -> list[dict[str, Any]]:
        return [without_secrets(r) for r in self._read()]

    def create(self, record: dict[str, Any]) -> bool:
        records = self._read()
        if self._index(records, record["partnerId"]) is not None:
            return False
        self._write([*records, record])
        return True

    def replace(self, record: dict[str, Any], before: dict[str, Any] | None = None) -> None:
        records = self._read()
        i = self._index(records, record["partnerId"])
        if i is None:
            raise StoreError(f"{self.where}: partner {record['partnerId']!r} disappeared while being changed")
        kept = records[i]
        merged = {**record, "webhook": dict(record.get("webhook") or {})}
        if "sharedSecret" in kept:
            merged["sharedSecret"] = kept["sharedSecret"]
        if isinstance(kept.get("webhook"), dict) and "secret" in kept["webhook"]:
            merged["webhook"]["secret"] = kept["webhook"]["secret"]
        records[i] = merged
        self._write(records)

    def held_count(self, partner_id: str) -> int | None:
        return None  # `distiller run` holds nothing: it has no health sweep

    def held_counts(self) -> dict[str, int] | None:
        return None

    # Secrets: `webhook.secret` and `sharedSecret` of the record itself (see `PartnersFileSecrets`).

    def secret(self, partner_id: str, kind: SecretKind) -> str | None:
        records = self._read()
        i = self._index(records, partner_id)
        if i is None:
            return None
        record = records[i]
        value = _webhook_of(record, self.where).get("secret") if kind == "webhook" else record.get("sharedSecret")
        return value if isinstance(value, str) and value else None

    def set_secret(self, partner_id: str, kind: SecretKind, value: str) -> None:
        records = self._read()
        i = self._index(records, partner_id)
        if i is None:
            raise StoreError(f"{self.where}: no partner {partner_id!r} to hold the secret")
        if kind == "webhook":
            records[i]["webhook"] = {**_webhook_of(records[i], self.where), "secret": value}
        else:
            records[i]["sharedSecret"] = value
        self._write(records)


def _instant(value: Any) -> str:
    """JSON for the one non-JSON value a command writes into a file record (`health.resumedAt`)."""
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _webhook_of(record: dict[str, Any], where: str) -> dict[str, Any]:
    """A stored record's `webhook` object ({} when absent); a hand-edited one of another type is a
    `StoreError` naming it, not a crash."""
    webhook = record.get("webhook")
    if webhook is None:
        return {}
    if not isinstance(webhook, dict):
        raise StoreError(
            f"{where}: partner {record.get('partnerId')!r}.webhook: expected an object, "
            f"got {type(webhook).__name__}: fix the record by hand"
        )
    return webhook


class PartnersFileSecrets:
    """The `SecretStore` face of a `PartnersFile`: the secrets inside its records."""

    def __init__(self, partners_file: PartnersFile) -> None:
        self._file = partners_file

    def exists(self, partner_id: str, kind: SecretKind) -> bool:
        return self._file.secret(partner_id, kind) is not None

    def get(self, partner_id: str, kind: SecretKind) -> str | None:
        return self._file.secret(partner_id, kind)

    def put(self, partner_id: str, kind: SecretKind, value: str) -> None:
        self._file.set_secret(partner_id, kind, value)

    def name(self, partner_id: str, kind: SecretKind) -> str:
        field = "webhook.secret" if kind == "webhook" else "sharedSecret"
        return f"{self._file.path} [{partner_id}].{field}"


class MongoPartners:
    """Records in the `partners` collection (the one `MongoLookups` reads), matched by partnerId;
    held deliveries in `held_deliveries` beside it."""

    def __init__(self, collection: Any, where: str) -> None:
        self._collection = collection
        self.where = where
        self.database = collection.database
        """The stack's database (the held store and the delivery log live there too)."""

    def _call(self, action: Callable[[], Any]) -> Any:
        from pymongo.errors import PyMongoError

        try:
            return action()
        except PyMongoError as exc:
            raise StoreError(f"{self.where}: {' '.join(str(exc).split())[:300]}") from None

    def get(self, partner_id: str) -> dict[str, Any] | None:
        found = self._call(lambda: self._collection.find_one({"partnerId": partner_id}, {"_id": 0}))
        return None if found is None else without_secrets(found)

    def list(self) -> list[dict[str, Any]]:
        found = self._call(lambda: list(self._collection.find({}, {"_id": 0}).sort("partnerId", 1)))
        return [without_secrets(r) for r in found]

    def create(self, record: dict[str, Any]) -> bool:
        # An upsert that only inserts: two operators adding the same id cannot both succeed.
        result = self._call(
            lambda: self._collection.update_one(
                {"partnerId": record["partnerId"]}, {"$setOnInsert": record}, upsert=True
            )
        )
        return result.upserted_id is not None

    def replace(self, record: dict[str, Any], before: dict[str, Any] | None = None) -> None:
        where = {"partnerId": record["partnerId"]}
        if before is None:
            result = self._call(lambda: self._collection.replace_one(where, record))
        else:
            changed = {k: v for k, v in record.items() if k != "_id" and (k not in before or before[k] != v)}
            removed = {k: "" for k in before if k not in record and k != "_id"}
            update = {op: fields for op, fields in (("$set", changed), ("$unset", removed)) if fields}
            if not update:
                return
            result = self._call(lambda: self._collection.update_one(where, update))
        if result.matched_count != 1:
            raise StoreError(f"{self.where}: partner {record['partnerId']!r} disappeared while being changed")

    def held_count(self, partner_id: str) -> int | None:
        held = self.database[HELD_COLLECTION]
        return int(self._call(lambda: held.count_documents({"partnerId": partner_id})))

    def held_counts(self) -> dict[str, int] | None:
        grouped = [{"$group": {"_id": "$partnerId", "held": {"$sum": 1}}}]
        found = self._call(lambda: list(self.database[HELD_COLLECTION].aggregate(grouped)))
        return {str(row["_id"]): int(row["held"]) for row in found}


class SecretsManagerSecrets:
    """`{prefix}{partnerId}/webhook-secret` and `/shared-secret`, the names the functions read."""

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self.prefix = prefix

    def name(self, partner_id: str, kind: SecretKind) -> str:
        return f"{self.prefix}{partner_id}{WEBHOOK_SECRET_SUFFIX if kind == 'webhook' else SHARED_SECRET_SUFFIX}"

    def _failure(self, name: str, exc: Exception) -> StoreError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        return StoreError(f"Secrets Manager: secret {name}: {code}")

    def exists(self, partner_id: str, kind: SecretKind) -> bool:
        name = self.name(partner_id, kind)  # described, never read: `show` needs no secret value
        return self._unless_missing(name, lambda: self._client.describe_secret(SecretId=name)) is not None

    def get(self, partner_id: str, kind: SecretKind) -> str | None:
        name = self.name(partner_id, kind)
        response = self._unless_missing(name, lambda: self._client.get_secret_value(SecretId=name))
        value = response.get("SecretString") if response is not None else None
        return value if isinstance(value, str) and value else None

    def _unless_missing(self, name: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """`call()`'s response; None when the secret does not exist; any other failure a `StoreError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise self._failure(name, exc) from None
        except BotoCoreError as exc:
            raise self._failure(name, exc) from None

    def put(self, partner_id: str, kind: SecretKind, value: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self.name(partner_id, kind)
        try:
            try:
                self._client.put_secret_value(SecretId=name, SecretString=value)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                self._client.create_secret(
                    Name=name, SecretString=value, Description=f"trigger-distiller partner {partner_id}: {kind} secret"
                )
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(name, exc) from None


def mongo_collection(uri: str, database: str) -> Any:
    """The partners collection at `uri` (a seam the tests replace with mongomock)."""
    return open_database(uri, database, "trigger-distiller-partners")[PARTNERS_COLLECTION]


def secrets_client(region: str | None) -> Any:
    import boto3

    return boto3.client("secretsmanager", region_name=region)


def sqs_client(region: str | None) -> Any:
    """For `enable --drain-now`: the delivery queue the held deliveries go back on."""
    import boto3

    return boto3.client("sqs", region_name=region)
