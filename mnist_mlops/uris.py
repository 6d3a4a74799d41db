"""URIs that may carry credentials: what is safe to record, and which ones are Azure Blob SAS URLs."""

from __future__ import annotations

import re
import urllib.parse

_SECRET_VALUES = re.compile(
    r"(?i)(?P<name>\bsig=|\bAccountKey=|\bSharedAccessSignature=|\bSharedAccessKey=)[^&;\s'\"]+"
    r"|(?P<user>://[^/@\s:]+:)[^/@\s]+(?=@)"
)
"""What a SAS URL, a connection string or a URL with a password carries as its secret: the value after
`sig=`, `AccountKey=`, `SharedAccessSignature=`, `SharedAccessKey=` or a URL's `user:`."""


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


def scrub(text: str) -> str:
    """`text` with every SAS signature, account key and URL password replaced by `***`: for what is
    logged or recorded that may quote a source or a connection string as its user gave it."""
    return _SECRET_VALUES.sub(lambda match: (match["name"] or match["user"]) + "***", text)
