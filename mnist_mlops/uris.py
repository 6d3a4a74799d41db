"""URIs that may carry credentials: what is safe to record, and which ones are Azure Blob SAS URLs."""

from __future__ import annotations

import urllib.parse


def redact(uri: str) -> str:
    """The URI without query string or credentials, for manifests and logs (SAS tokens are secrets)."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme in ("http", "https", "azureblob"):
        host = parsed.hostname or ""
        netloc = f"{host}:{parsed.port}" if parsed.port else host
        return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))
    return uri


def is_blob_sas_url(uri: str) -> bool:
    parsed = urllib.parse.urlsplit(uri)
    return parsed.scheme in ("http", "https") and "sig" in urllib.parse.parse_qs(parsed.query)
