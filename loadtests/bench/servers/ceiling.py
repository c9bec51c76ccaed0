"""The framework ceiling: an empty Starlette endpoint that reads the body and returns a constant JSON.

The most any Starlette-routed gateway can do per request on these uvicorn settings.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loadtests.bench.servers import arguments, serve

PREDICTIONS = b'{"predictions":[[0.5]]}'
HEALTHY = b'{"ok":true}'


async def predict(request: Request) -> Response:
    await request.body()
    return Response(PREDICTIONS, media_type="application/json")


async def health(request: Request) -> Response:
    return Response(HEALTHY, media_type="application/json")


def create_app(path: str) -> Starlette:
    return Starlette(routes=[Route(path, predict, methods=["POST"]), Route("/health", health, methods=["GET"])])


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    serve(create_app(args.path), args.port)
