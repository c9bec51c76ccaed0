"""The floor: a raw ASGI app on the same uvicorn settings that reads the body and returns a constant JSON,
with no framework at all. What uvicorn, httptools, uvloop and the kernel cost per request by themselves."""

from __future__ import annotations

from typing import Any

from loadtests.bench.servers import arguments, serve

PREDICTIONS = b'{"predictions":[[0.5]]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(PREDICTIONS))]
START = {"type": "http.response.start", "status": 200, "headers": HEADERS}
BODY = {"type": "http.response.body", "body": PREDICTIONS}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to open
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # read the whole body, as the other servers do
        message = await receive()
        more = message.get("more_body", False)
    await send(START)
    await send(BODY)


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    serve(app, args.port)
