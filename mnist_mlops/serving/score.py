"""Entry script for the Azure ML inference server (`azmlinfsrv`), locally and on managed endpoints.

`init()` loads the model once and warms its compiled function; `run()` takes the raw HTTP request
(`@rawhttp`) so it can check the key, bound the body before reading it and answer 401/405/413/415/400
itself. Configuration comes from the environment (see `mnist_mlops.serving.config`).

The request id: the inference server takes the request's `x-request-id` (or makes a GUID) as
`flask.g.request_id`, logs it and echoes it in the `x-request-id` response header. The scorer keeps
that id when it is safe and replaces it otherwise; writing its choice back to `g.request_id` makes the
server's header and its own logs name the same id as the response body and the request log.

Logging: `logging.json` beside this script sets the server's loggers to WARNING (azmlinfsrv 1.5.1 ignores
AZUREML_LOG_LEVEL), so a request writes no log lines (at INFO it wrote three: an access line and two
of the server's); App Insights' loggers stay at INFO for their own handlers. The server reads a
`logging.json` from AML_APP_ROOT, else from the entry script's folder as resolved from its working
directory; `init()` applies this one itself, so the levels hold however the platform starts it.
"""

from collections.abc import Callable
from pathlib import Path

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse
from azureml_inference_server_http.log_config import load_logging_config
from flask import g
from werkzeug.exceptions import ClientDisconnected

from mnist_mlops.serving.config import scorer_from_environment
from mnist_mlops.serving.scorer import BODY_READ_SECONDS, REQUEST_ID_HEADER, BodyNotReceived, Scorer, encode

scorer: Scorer | None = None


def init() -> None:
    global scorer
    load_logging_config(str(Path(__file__).parent), silent=True)
    scorer = scorer_from_environment()


@rawhttp
def run(request: AMLRequest) -> AMLResponse:
    response = scorer.respond(
        method=request.method,
        authorization=request.headers.get("Authorization"),
        content_type=request.headers.get("Content-Type"),
        content_length=request.content_length,
        read_body=_body_reader(request),
        request_id=g.get("request_id") or request.headers.get(REQUEST_ID_HEADER),
        client_request_id=request.headers.get("x-ms-client-request-id"),
    )
    g.request_id = response.headers[REQUEST_ID_HEADER]
    headers = {"Content-Type": "application/json", **response.headers}
    return AMLResponse(encode(response), response.status, headers)


def _body_reader(request: AMLRequest) -> Callable[[int], bytes]:
    """The body's reads, each bounded by BODY_READ_SECONDS on gunicorn's socket: a stalled upload raises
    BodyNotReceived (the socket's timeout comes as TimeoutError, or through werkzeug's length-limited
    stream as a disconnected client)."""
    connection = request.environ.get("gunicorn.socket")
    if connection is not None:
        connection.settimeout(BODY_READ_SECONDS)

    def read(size: int) -> bytes:
        try:
            return request.stream.read(size)
        except (ClientDisconnected, OSError) as error:
            raise BodyNotReceived(str(error)) from None

    return read
