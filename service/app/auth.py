"""Optional API keys: `Authorization: Bearer KEY` or `X-API-Key: KEY` (REST), the same as
gRPC metadata. Keys come from FACEPOSE_API_KEYS (comma-separated) and/or a file of one key per
line (FACEPOSE_API_KEYS_FILE); they are never logged."""

from __future__ import annotations

import hmac
from pathlib import Path

from service.errors import Unauthorized


def load_keys(inline: str, path: Path | None) -> tuple[bytes, ...]:
    keys = [k.strip() for k in inline.split(",")]
    if path is not None:
        keys += [line.strip() for line in path.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    return tuple(k.encode() for k in keys if k)


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    if api_key:
        return api_key
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def check_key(keys: tuple[bytes, ...], presented: str | None) -> None:
    """Raise Unauthorized unless ``presented`` is one of ``keys``.

    Every key is compared, in constant time, whatever matches: the time taken says nothing
    about which key or how much of it was right.
    """
    if not keys:
        return
    if not presented:
        raise Unauthorized("an API key is required: `Authorization: Bearer KEY` or `X-API-Key`")
    candidate = presented.encode("utf-8", errors="replace")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    if not matched:
        raise Unauthorized("the API key is not valid")
