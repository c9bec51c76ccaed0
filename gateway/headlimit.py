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
    and close. Buffering is bounded by the limit plus one read (uvloop reads at most 256 KiB)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        was_in_head = self._in_head
        super().data_received(data)
        if was_in_head and self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(_REPLY_431)
                self.transport.close()
