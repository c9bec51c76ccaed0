"""RegistryClient: what a gateway replica reads from the registry service (`gateway registry serve`) over
HTTP rather than from its own disk: model files by sha256, streamed into the local ArtifactStore and
verified before they become visible. Blocking, like RegistryStore: callers run it in a thread."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx

from registry.api import BLOBS
from registry.artifacts import ArtifactStore
from registry.errors import ArtifactFetchFailed

log = logging.getLogger("registry.client")

_CHUNK_BYTES = 1 << 20
_IO_TIMEOUT_S = 30.0  # connect and each read; the whole download has its own, longer deadline
_ERROR_BODY_BYTES = 4096  # how much of an error answer is read to quote its message


def _reason(response: httpx.Response) -> str:
    """The message of an error answer (MLflow's {"error_code", "message"} or plain text), bounded."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= _ERROR_BODY_BYTES:
            break
    text = body[:_ERROR_BODY_BYTES].decode("utf-8", "replace")
    try:
        fields = json.loads(text)
    except ValueError:
        return text.strip() or response.reason_phrase
    return str(fields.get("message", text)) if isinstance(fields, dict) else text


class RegistryClient:
    """The registry service at `base_url`. One connection per download: downloads are rare (one per new
    model file on a replica) and run off the request path, so no pool is kept open between them."""

    def __init__(self, base_url: str, *, max_bytes: int, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    def fetch_artifact(self, sha256: str, into: ArtifactStore) -> None:
        """Download the model file `sha256` into `into`, unless it is there already; it becomes visible
        only once its bytes hash to `sha256` (the digest the registry recorded for the version).

        Raises InvalidArtifactPath for a malformed digest, ArtifactMismatch for bytes that hash to
        anything else, ArtifactFetchFailed when the service is unreachable, answers an error, sends more
        than `max_bytes` or takes longer than `timeout_s`. Nothing is stored on failure.
        """
        into.path_for(sha256)  # a malformed digest never reaches the URL
        if into.exists(sha256):
            return
        url = f"{self.base_url}{BLOBS}/{sha256}"
        started = time.monotonic()
        timeout = httpx.Timeout(min(self.timeout_s, _IO_TIMEOUT_S))
        try:
            with httpx.Client(timeout=timeout) as client, client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ArtifactFetchFailed(f"{url} answered {response.status_code}: {_reason(response)}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise ArtifactFetchFailed(
                        f"Artifact {sha256} is {declared} bytes, over the limit of {self.max_bytes} (--artifact-max-bytes)"
                    )
                into.put_verified(sha256, self._chunks(response, started + self.timeout_s, sha256), self.max_bytes)
                size = response.num_bytes_downloaded
        except httpx.HTTPError as exc:
            raise ArtifactFetchFailed(
                f"Artifact {sha256} could not be fetched from {self.base_url}: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("fetched artifact %s (%d bytes) from %s in %.2f s", sha256[:12], size, self.base_url,
                 time.monotonic() - started)

    def _chunks(self, response: httpx.Response, deadline: float, sha256: str) -> Iterator[bytes]:
        for chunk in response.iter_bytes(_CHUNK_BYTES):
            if time.monotonic() > deadline:
                raise ArtifactFetchFailed(
                    f"Artifact {sha256} took longer than {self.timeout_s:g} s to download (--artifact-timeout)"
                )
            yield chunk
