"""A loopback stand-in for the parts of Azure that a job's data asset registration talks to.

Served over HTTPS (azure-core sends bearer tokens over TLS only), it answers:
- `/metadata/endpoints`: the cloud metadata azure-ai-ml reads when `ARM_CLOUD_METADATA_URL` names it (the
  SDK's own route for sovereign clouds), so a real `MLClient` sends its Resource Manager calls here;
- `/msi/token`: the token endpoint an Azure ML compute gives its jobs (`MSI_ENDPOINT`, `MSI_SECRET`), for
  the one user-assigned identity `IDENTITY` only;
- `.../workspaces/<ws>/data/<name>/versions/<version>`: GET and PUT of data asset versions, kept in
  memory, with Azure ML's rule that a registered version is immutable (a PUT with another path is a 409).
Every request is recorded (`requests`); `python -m tests.azure_standin CERT KEY PORT` serves it alone (the
Azure ML rehearsal runs it so inside the tracking server's network namespace).
"""

from __future__ import annotations

import http.server
import json
import re
import ssl
import sys
import threading
import time
import urllib.parse
from typing import Any, ClassVar

IDENTITY = "11111111-2222-3333-4444-555555555555"
SECRET = "compute-secret"
_DATA_VERSION = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<workspace>[^/]+)/data/(?P<name>[^/]+)/versions/"
    r"(?P<version>[^/?]+)"
)


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """A quiet request handler whose every answer is a JSON document: the shape of the Azure endpoints
    the stand-ins play."""

    def answer(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class AzureStandIn(JsonHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    assets: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "query": query,
                "authorized": self.headers.get("Authorization", "").startswith("Bearer "),
                "body": body,
            }
        )
        if url.path == "/metadata/endpoints":
            return self.answer(200, self._cloud())
        if url.path == "/msi/token":
            return self._token(query)
        match = _DATA_VERSION.fullmatch(url.path)
        if match is None:
            return self.answer(404, {"error": {"code": "NotFound", "message": f"no route {url.path}"}})
        if not self.requests[-1]["authorized"]:
            return self.answer(401, {"error": {"code": "AuthenticationFailed", "message": "no token"}})
        key = (match["name"], match["version"])
        if self.command == "GET":
            if key not in self.assets:
                return self.answer(404, {"error": {"code": "UserError", "message": "Not found"}})
            return self.answer(200, self.assets[key])
        if key in self.assets and self.assets[key]["properties"]["dataUri"] != body["properties"]["dataUri"]:
            return self.answer(409, {"error": {"code": "UserError", "message": "version is immutable"}})
        self.assets[key] = {
            "id": url.path,
            "name": match["version"],
            "type": "Microsoft.MachineLearningServices/workspaces/data/versions",
            "properties": {**body["properties"], "isArchived": False, "isAnonymous": False},
        }
        return self.answer(201, self.assets[key])

    def _cloud(self) -> list[dict[str, Any]]:
        base = f"https://127.0.0.1:{self.server.server_port}/"
        return [
            {
                "name": "RehearsalCloud",
                "portal": "https://portal.rehearsal.example/",
                "resourceManager": base,
                "authentication": {"loginEndpoint": base, "audiences": [base]},
                "suffixes": {"storage": "core.rehearsal.example"},
            }
        ]

    def _token(self, query: dict[str, str]) -> None:
        if query.get("clientid") != IDENTITY or self.headers.get("secret") != SECRET:
            return self.answer(400, {"error": "invalid_request", "error_description": "no such identity"})
        expires = int(time.time()) + 3600
        return self.answer(
            200,
            {
                "access_token": f"token-for-{IDENTITY}",
                "expires_on": expires,
                "resource": query.get("resource"),
            },
        )


def serve(cert: str, key: str, port: int = 0) -> tuple[http.server.ThreadingHTTPServer, type[AzureStandIn]]:
    """Start the stand-in on 127.0.0.1 in a background thread; returns the server and its handler class
    (whose `requests` and `assets` are this server's own)."""
    handler = type("Handler", (AzureStandIn,), {"requests": [], "assets": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def job_environment(port: int, ca_bundle: str) -> dict[str, str]:
    """What a job's process needs to reach the stand-in as it would reach Azure: the cloud metadata, the
    compute's token endpoint, and trust in the stand-in's certificate."""
    base = f"https://127.0.0.1:{port}"
    return {
        "ARM_CLOUD_METADATA_URL": f"{base}/metadata/endpoints?api-version=2022-09-01",
        "MSI_ENDPOINT": f"{base}/msi/token",
        "MSI_SECRET": SECRET,
        "DEFAULT_IDENTITY_CLIENT_ID": IDENTITY,
        "REQUESTS_CA_BUNDLE": ca_bundle,
    }


if __name__ == "__main__":
    certificate, private_key, listen_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    running, _ = serve(certificate, private_key, listen_port)
    threading.Event().wait()
