"""uvicorn's httptools protocol with a bound on the bytes of a request's head: past it, 431 and close."""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
_BODY = orjson.dumps({"error": f"request line and headers exceed {MAX_HEAD_BYTES} bytes"})
_REPLY_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
              b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools buffers a header value until it ends, without limit (a 64 MB header is served).
    Count the bytes of chunks that leave a request's head incomplete; past MAX_HEAD_BYTES answer 431
    and close. Buffering is bounded by the limit plus one read (uvloop reads at most 256 KiB).

    Whether a message's head is complete is read off uvicorn's own state rather than by hooking its
    parser callbacks (two Python calls more per request): `on_message_begin` builds a new scope and
    `on_headers_complete` builds the cycle around that same scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_scope: object = None  # the message whose head bytes are being counted

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # no head pending: the common case
            super().data_received(data)
            return
        super().data_received(data)
        cycle = self.cycle
        if (cycle is None or cycle.scope is not self.scope) and not self.transport.is_closing():
            if self._head_scope is not self.scope:  # a new message: count from zero
                self._head_scope, self._head_bytes = self.scope, 0
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(_REPLY_431)
                self.transport.close()
