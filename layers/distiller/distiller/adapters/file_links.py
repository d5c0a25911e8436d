"""Short-lived signed links to the files an event carries (`documents[]`: filename, signedUrl, expiresAt).

Links are S3 pre-signed GETs made by boto3, valid for 4 hours from the event's emission (the
spec: "Signed URLs expire 4 hours after the event is emitted"). Bucket and key prefix come from
configuration; presigning is a local computation, no request is made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from distiller.core.clock import iso_utc, utc_now

LINK_LIFETIME = dt.timedelta(hours=4)


class FileLinks:
    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        key_prefix: str = "",
        *,
        lifetime: dt.timedelta = LINK_LIFETIME,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        if not bucket:
            raise ValueError("a documents bucket is required to sign file links")
        self._s3 = s3_client
        self.bucket = bucket
        self.key_prefix = key_prefix
        self.lifetime = lifetime
        self._clock = clock

    def object_key(self, key: str) -> str:
        """The stored key under the configured prefix (a key already carrying it is kept)."""
        key = key.lstrip("/")
        if self.key_prefix and not key.startswith(self.key_prefix):
            return self.key_prefix + key
        return key

    def link(self, key: str, filename: str) -> dict[str, Any]:
        if key.startswith(("https://", "http://")):
            stored = self._key_of_url(key)
            if stored is None:  # a link to somewhere else: passed on as stored, its expiry unknown
                return {"filename": filename, "signedUrl": key, "expiresAt": None}
            key = stored
        issued = self._clock()
        url = self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.object_key(key)},
            ExpiresIn=int(self.lifetime.total_seconds()),
        )
        return {"filename": filename, "signedUrl": url, "expiresAt": iso_utc(issued + self.lifetime)}

    def stored_key(self, key_or_url: str) -> str:
        """What a file is, for comparing files: its object key under the prefix, whether given as
        a key or as a link into our bucket (any query string dropped); another site's link as is."""
        if key_or_url.startswith(("https://", "http://")):
            url = key_or_url.split("?", 1)[0]
            stored = self._key_of_url(url)
            return url if stored is None else self.object_key(stored)
        return self.object_key(key_or_url)

    def _key_of_url(self, url: str) -> str | None:
        """The object key when `url` points into our bucket (virtual-hosted or path style)."""
        parts = urlsplit(url)
        path = unquote(parts.path.lstrip("/"))
        if parts.hostname and parts.hostname.startswith(self.bucket + "."):
            return path or None
        if path.startswith(self.bucket + "/"):
            return path[len(self.bucket) + 1 :] or None
        return None
