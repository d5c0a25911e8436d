"""The claim-check store in S3 (see `distiller.deliver.claim_check`): content-addressed objects."""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from distiller.deliver.claim_check import PayloadRef, PayloadUnavailable


class S3PayloadStore:
    """The claim-check bucket, over a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str = "claim-check/") -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix

    def put(self, raw: bytes) -> PayloadRef:
        digest = hashlib.sha256(raw).hexdigest()
        key = f"{self.prefix}{digest}.json"
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=raw, ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            raise PayloadUnavailable(f"claim-check store s3://{self.bucket}/{key}: {exc}") from exc
        return PayloadRef(self.bucket, key, len(raw), digest)

    def get(self, ref: PayloadRef) -> bytes:
        where = f"s3://{ref.bucket}/{ref.key}"
        try:
            raw = self._client.get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            missing = code in ("NoSuchKey", "404", "NoSuchBucket")
            raise PayloadUnavailable(f"claim-checked payload {where}: {code or exc}", missing=missing) from exc
        except BotoCoreError as exc:
            raise PayloadUnavailable(f"claim-checked payload {where}: {exc}") from exc
        if hashlib.sha256(raw).hexdigest() != ref.sha256:
            raise PayloadUnavailable(f"claim-checked payload {where}: content does not match its sha256", missing=True)
        return raw
