"""Inference for other processes on the device: a small HTTP API on loopback.

Any language can call it::

    curl -s localhost:8765/v1/predict -d '{"inputs": [0.31, 0.9, 61.2, ...]}'
    {"outputs": [[0.91, 0.07, 0.02]], "classes": ["normal"],
     "model": {"name": "pump-health", "version": 3, "sha256": "..."}}

``inputs`` is one sample (nested lists of the sample shape) or a batch (one more
leading dimension). Large inputs can be sent as raw little-endian tensor bytes instead:
``Content-Type: application/octet-stream``, ``X-Tensor-Shape: 64,3`` (a sample's or a
batch's shape) and ``X-Tensor-Dtype: float32`` (the default; see
:data:`edge_agent.inference.tensor_bytes.DTYPES`); a missing or malformed shape, an
unknown dtype or a byte length that is not the shape's answers 400. Errors
answer 400 (bad input), 503 (no model active) or 413 (a JSON body over 1 MiB, a raw
one over 16 MiB), with
``{"error": "<one line>"}``. In a batch, a row the schema refuses or whose output is
NaN does not fail the others: its output and class are ``null`` and ``"errors"`` lists
``{"row": i, "kind": "invalid_input" | "nan_output", "error": "<one line>"}``; only a
batch with no servable row answers 400. ``GET /v1/health`` reports the agent's state, and
``GET /v1/model`` the active model's input schema.

It binds 127.0.0.1 only: it has no authentication, so it must not face a network.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_agent.errors import PredictionError
from edge_agent.inference.prediction import Prediction
from edge_agent.inference.tensor_bytes import tensor_from_bytes

log = logging.getLogger("edgefleet.agent")
MAX_BODY_BYTES = 1 << 20
#: A raw tensor body (``application/octet-stream``) may be larger: it is not parsed.
MAX_TENSOR_BYTES = 16 << 20
SHAPE_HEADER = "X-Tensor-Shape"
DTYPE_HEADER = "X-Tensor-Dtype"


class LocalApi:
    """The loopback HTTP server; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self,
        predict: Callable[[Any], Prediction],
        health: Callable[[], dict[str, Any]],
        model_info: Callable[[], dict[str, Any] | None],
        port: int = 8765,
    ) -> None:
        """Bind the socket (serving starts with :meth:`start`).

        Raises:
            OSError: the port cannot be bound.
        """
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgefleet-agent"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per problem is logged by the agent, not per request

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/health":
                    self._send(HTTPStatus.OK, api.health())
                elif self.path == "/v1/model":
                    info = api.model_info()
                    if info is None:
                        self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no model is active"})
                    else:
                        self._send(HTTPStatus.OK, info)
                else:
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                if self.path != "/v1/predict":
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})
                    return
                content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
                raw = content_type.lower() == "application/octet-stream"
                limit = MAX_TENSOR_BYTES if raw else MAX_BODY_BYTES
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if length < 0 or length > limit:
                    self._send(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        {"error": f"body must be 0..{limit} bytes"},
                    )
                    self.close_connection = True
                    return
                try:
                    data = self.rfile.read(length)
                    if raw:
                        inputs: Any = tensor_from_bytes(
                            data,
                            self.headers.get(SHAPE_HEADER) or None,
                            self.headers.get(DTYPE_HEADER) or "float32",
                        )
                    else:
                        body = json.loads(data or b"null")
                        if not isinstance(body, dict) or "inputs" not in body:
                            raise PredictionError('body must be a JSON object {"inputs": [...]}')
                        inputs = body["inputs"]
                    result = api.predict(inputs)
                except (ValueError, PredictionError) as exc:
                    status = (
                        HTTPStatus.SERVICE_UNAVAILABLE
                        if "no model is active" in str(exc)
                        else HTTPStatus.BAD_REQUEST
                    )
                    self._send(status, {"error": str(exc).splitlines()[0]})
                    return
                self._send(HTTPStatus.OK, result.to_json())

        self.predict = predict
        self.health = health
        self.model_info = model_info
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="edgefleet-local-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)
