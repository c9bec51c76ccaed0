"""ArtifactStore: model files in a local directory, content-addressed by sha256 (blobs/ab/<hex>), plus
path-keyed files (files/...) for the MLflow artifact proxy; every write is atomic, no path escapes the root.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from registry.errors import ArtifactFetchFailed, ArtifactMismatch, InvalidArtifactPath, ResourceDoesNotExist

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"  # in-flight writes; never listed, never a valid blob name


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable, so a registered version never points at a vanished blob.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it: readers see all or nothing."""
    upload = Upload(path)
    try:
        upload.write(data)
    except BaseException:
        upload.abort()
        raise
    upload.commit()


class Upload:
    """A file being written: chunks go to a temp file beside the target, which commit() fsyncs and
    renames into place and abort() removes. Blocking; one writer."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        self.tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        if os.name == "posix":
            _fsync_dir(self.path.parent)

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


class ArtifactStore:
    """Files under `root`. Blob methods take a sha256 hex digest; file methods a relative POSIX path.

    Raises InvalidArtifactPath for a malformed digest or a path that is absolute or escapes the root,
    ResourceDoesNotExist for a missing blob or file.
    """

    def __init__(self, root: Path) -> None:
        root = Path(root)
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "files").mkdir(parents=True, exist_ok=True)
        # Resolved once, so the escape check compares real paths even when root is behind a symlink.
        self.root = root.resolve()
        self._blobs = self.root / "blobs"
        self._files = self.root / "files"

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # --- content-addressed blobs ---

    def path_for(self, sha256: str) -> Path:
        if not _SHA256_RE.fullmatch(sha256):
            raise InvalidArtifactPath(f"{sha256!r} is not a sha256 digest (64 lowercase hex digits)")
        return self._blobs / sha256[:2] / sha256

    def put_bytes(self, data: bytes) -> str:
        """Store `data` and return its sha256 hex digest; storing the same bytes again is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest)
        if not path.is_file():
            _write_atomic(path, data)
        return digest

    def put_verified(self, sha256: str, chunks: Iterable[bytes], max_bytes: int) -> None:
        """Store the blob `sha256` from `chunks` (a download): written to a temp file beside the blob,
        hashed on the way, and renamed into place only when it hashes to `sha256`, so no reader ever
        sees unverified bytes. Raises ArtifactMismatch, or ArtifactFetchFailed past `max_bytes`; what
        `chunks` raises propagates. Nothing is left behind on failure."""
        upload = Upload(self.path_for(sha256))
        try:
            digest, size = hashlib.sha256(), 0
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ArtifactFetchFailed(f"Artifact {sha256} is larger than the limit of {max_bytes} bytes")
                digest.update(chunk)
                upload.write(chunk)
            if digest.hexdigest() != sha256:
                raise ArtifactMismatch(f"Artifact {sha256}: the {size} bytes received hash to {digest.hexdigest()}; discarded")
        except BaseException:
            upload.abort()
            raise
        upload.commit()

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def read_bytes(self, sha256: str) -> bytes:
        try:
            return self.path_for(sha256).read_bytes()
        except FileNotFoundError:
            raise ResourceDoesNotExist(f"Artifact {sha256} not found") from None

    def delete(self, sha256: str) -> None:
        """Remove the blob; a missing blob is not an error."""
        self.path_for(sha256).unlink(missing_ok=True)

    # --- path-keyed files ---

    def resolve(self, relpath: str) -> Path:
        """The real path of `relpath` under the files root ("" is the root itself).

        Refuses NUL bytes, absolute paths, '..' components and symlinks that lead outside the root.
        """
        if "\x00" in relpath:
            raise InvalidArtifactPath(f"Artifact path {relpath!r} contains a NUL byte")
        pure = PurePosixPath(relpath)
        if pure.is_absolute():
            raise InvalidArtifactPath(f"Artifact path {relpath!r} is absolute")
        if ".." in pure.parts:
            raise InvalidArtifactPath(f"Artifact path {relpath!r} contains '..'")
        path = (self._files / pure).resolve()
        if not path.is_relative_to(self._files):
            raise InvalidArtifactPath(f"Artifact path {relpath!r} leads outside the artifact root")
        return path

    def write_file(self, relpath: str, data: bytes) -> None:
        path = self.resolve(relpath)
        if path == self._files or path.is_dir():
            raise InvalidArtifactPath(f"Artifact path {relpath!r} is a directory")
        _write_atomic(path, data)

    def open_upload(self, relpath: str) -> Upload:
        """An Upload to `relpath`, which becomes visible only on commit (all or nothing)."""
        path = self.resolve(relpath)
        if path == self._files or path.is_dir():
            raise InvalidArtifactPath(f"Artifact path {relpath!r} is a directory")
        return Upload(path)

    def read_file(self, relpath: str) -> bytes:
        path = self.resolve(relpath)
        if path.is_dir():
            raise InvalidArtifactPath(f"Artifact path {relpath!r} is a directory")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ResourceDoesNotExist(f"Artifact {relpath!r} not found") from None

    def list_dir(self, relpath: str = "") -> list[tuple[str, bool, int | None]]:
        """(name, is_dir, size in bytes or None for a directory) for each entry, by name; empty when
        `relpath` is missing or a file, as MLflow's list_artifacts does. Entries that are symlinks
        leading outside the root are left out."""
        directory = self.resolve(relpath)
        if not directory.is_dir():
            return []
        with os.scandir(directory) as it:
            found = sorted(it, key=lambda e: e.name)
        entries: list[tuple[str, bool, int | None]] = []
        for entry in found:
            if entry.name.startswith(_TMP_PREFIX):
                continue
            if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(self._files):
                continue
            if entry.is_dir():
                entries.append((entry.name, True, None))
            elif entry.is_file():
                entries.append((entry.name, False, entry.stat().st_size))
        return entries
