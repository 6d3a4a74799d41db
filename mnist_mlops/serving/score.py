"""Entry script for the Azure ML inference server (`azmlinfsrv`), locally and on managed endpoints.

`init()` loads the model once and warms its compiled function; `run()` takes the raw HTTP request
(`@rawhttp`) so it can check the key, bound the body before reading it and answer 401/405/413/415/400
itself. Configuration comes from the environment (see `mnist_mlops.serving.config`).
"""

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

from mnist_mlops.serving.config import scorer_from_environment
from mnist_mlops.serving.scorer import Scorer, encode

scorer: Scorer | None = None


def init() -> None:
    global scorer
    scorer = scorer_from_environment()


@rawhttp
def run(request: AMLRequest) -> AMLResponse:
    response = scorer.respond(
        method=request.method,
        authorization=request.headers.get("Authorization"),
        content_type=request.headers.get("Content-Type"),
        content_length=request.content_length,
        read_body=request.stream.read,
    )
    headers = {"Content-Type": "application/json", **response.headers}
    return AMLResponse(encode(response), response.status, headers)
