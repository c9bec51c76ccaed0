"""The comparison servers, each a `python -m` entry point that binds 127.0.0.1:<port>.

They run in different virtual environments (the gateway's, or the benchmark's own with FastAPI),
so this package imports only the standard library at module level.
"""

from __future__ import annotations

import argparse
from typing import Any


def arguments(description: str, *, model: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="the POST path to serve, e.g. /v1/models/small:predict")
    if model:
        parser.add_argument("--model", required=True, help="ONNX file to serve")
    return parser.parse_args()


def serve(app: Any, port: int) -> None:
    """The gateway's uvicorn settings (gateway/server.py): uvloop, httptools, no access log, no Server header."""
    import uvicorn

    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            server_header=False,
        )
    ).run()
