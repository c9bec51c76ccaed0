"""ArtifactStore on a real directory: content addressing, atomic writes, and no escape from the root."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.artifacts import ArtifactStore
from registry.errors import ArtifactFetchFailed, ArtifactMismatch, InvalidArtifactPath, ResourceDoesNotExist


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TestBlobs:
    def test_put_returns_sha256_and_stores_under_prefix(self, artifact_store: ArtifactStore) -> None:
        """put_bytes returns the sha256 hex digest and stores the bytes at blobs/<first two>/<digest>."""
        data = b"model bytes"
        digest = artifact_store.put_bytes(data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert artifact_store.path_for(digest) == artifact_store.root / "blobs" / digest[:2] / digest
        assert artifact_store.exists(digest)
        assert artifact_store.read_bytes(digest) == data

    def test_put_is_idempotent_and_leaves_no_temp_files(self, artifact_store: ArtifactStore) -> None:
        """Storing the same bytes twice gives the same digest and one file, with no temp files left over."""
        first = artifact_store.put_bytes(b"same")
        mtime = artifact_store.path_for(first).stat().st_mtime_ns
        assert artifact_store.put_bytes(b"same") == first
        assert artifact_store.path_for(first).stat().st_mtime_ns == mtime
        assert all_files(artifact_store.root) == [f"blobs/{first[:2]}/{first}"]

    def test_empty_bytes(self, artifact_store: ArtifactStore) -> None:
        """Zero-length content is a valid blob."""
        digest = artifact_store.put_bytes(b"")
        assert artifact_store.read_bytes(digest) == b""

    def test_delete(self, artifact_store: ArtifactStore) -> None:
        """delete removes the blob, and deleting a missing blob is not an error."""
        digest = artifact_store.put_bytes(b"x")
        artifact_store.delete(digest)
        assert not artifact_store.exists(digest)
        artifact_store.delete(digest)

    def test_missing_blob(self, artifact_store: ArtifactStore) -> None:
        """Reading a digest that was never stored raises ResourceDoesNotExist."""
        with pytest.raises(ResourceDoesNotExist):
            artifact_store.read_bytes("0" * 64)

    @pytest.mark.parametrize("digest", ["", "A" * 64, "a" * 63, "a" * 65, "../" + "a" * 61, "z" * 64])
    def test_malformed_digest(self, artifact_store: ArtifactStore, digest: str) -> None:
        """Anything but 64 lowercase hex digits is refused as InvalidArtifactPath, by every blob method."""
        for call in (artifact_store.path_for, artifact_store.exists, artifact_store.read_bytes, artifact_store.delete):
            with pytest.raises(InvalidArtifactPath):
                call(digest)

    def test_store_reopens_on_existing_root(self, tmp_path: Path) -> None:
        """A second store on the same root sees the blobs of the first."""
        digest = ArtifactStore(tmp_path / "a").put_bytes(b"kept")
        assert ArtifactStore(tmp_path / "a").read_bytes(digest) == b"kept"


class TestVerifiedWrites:
    def test_chunks_that_hash_right_become_the_blob(self, artifact_store: ArtifactStore) -> None:
        """Streamed chunks are stored under their digest once they hash to it."""
        digest = hashlib.sha256(b"abcdef").hexdigest()
        artifact_store.put_verified(digest, iter([b"abc", b"def"]), max_bytes=6)
        assert artifact_store.read_bytes(digest) == b"abcdef"

    @pytest.mark.parametrize(
        ("chunks", "max_bytes", "error"),
        [
            ([b"abc", b"xyz"], 100, ArtifactMismatch),
            ([b"abc", b"def"], 5, ArtifactFetchFailed),
        ],
    )
    def test_wrong_or_oversized_bytes_leave_nothing(
        self, artifact_store: ArtifactStore, chunks: list[bytes], max_bytes: int, error: type[Exception]
    ) -> None:
        """A mismatch or a stream past the limit raises and leaves neither the blob nor a temp file."""
        digest = hashlib.sha256(b"abcdef").hexdigest()
        with pytest.raises(error):
            artifact_store.put_verified(digest, iter(chunks), max_bytes=max_bytes)
        assert not artifact_store.exists(digest)
        assert all_files(artifact_store.root) == []

    def test_a_stream_that_breaks_leaves_nothing(self, artifact_store: ArtifactStore) -> None:
        """What the chunk source raises (a dropped connection) propagates; the temp file is removed."""
        def broken() -> Iterator[bytes]:
            yield b"abc"
            raise ConnectionResetError("peer went away")

        digest = hashlib.sha256(b"abcdef").hexdigest()
        with pytest.raises(ConnectionResetError):
            artifact_store.put_verified(digest, broken(), max_bytes=100)
        assert all_files(artifact_store.root) == []


class TestFiles:
    def test_write_then_read_creates_parents(self, artifact_store: ArtifactStore) -> None:
        """write_file creates intermediate directories under files/ and read_file returns the bytes."""
        artifact_store.write_file("run1/model/model.onnx", b"abc")
        assert artifact_store.read_file("run1/model/model.onnx") == b"abc"
        assert (artifact_store.root / "files" / "run1" / "model" / "model.onnx").read_bytes() == b"abc"

    def test_overwrite_replaces_whole_file(self, artifact_store: ArtifactStore) -> None:
        """Writing a shorter file over a longer one leaves exactly the new content."""
        artifact_store.write_file("a.txt", b"a long first version")
        artifact_store.write_file("a.txt", b"short")
        assert artifact_store.read_file("a.txt") == b"short"

    def test_failed_write_keeps_old_content_and_no_temp_file(self, artifact_store: ArtifactStore) -> None:
        """A write that fails midway leaves the previous file intact and removes its temp file."""
        artifact_store.write_file("a.txt", b"old")
        with pytest.raises(TypeError):
            artifact_store.write_file("a.txt", "not bytes")  # type: ignore[arg-type]
        assert artifact_store.read_file("a.txt") == b"old"
        assert all_files(artifact_store.root) == ["files/a.txt"]

    def test_missing_file(self, artifact_store: ArtifactStore) -> None:
        """Reading a path that does not exist raises ResourceDoesNotExist."""
        with pytest.raises(ResourceDoesNotExist):
            artifact_store.read_file("nope.txt")

    def test_directory_is_not_a_file(self, artifact_store: ArtifactStore) -> None:
        """Reading or overwriting a directory, or the root, is refused."""
        artifact_store.write_file("d/f", b"x")
        for path in ("d", ""):
            with pytest.raises(InvalidArtifactPath):
                artifact_store.read_file(path)
            with pytest.raises(InvalidArtifactPath):
                artifact_store.write_file(path, b"y")

    def test_inner_dotdot_free_paths_resolve_inside(self, artifact_store: ArtifactStore) -> None:
        """Plain relative paths, with or without './' and repeated slashes, resolve under files/."""
        files = artifact_store.root / "files"
        assert artifact_store.resolve("") == files
        assert artifact_store.resolve("a/b.txt") == files / "a" / "b.txt"
        assert artifact_store.resolve("./a//b.txt") == files / "a" / "b.txt"


class TestEscapes:
    @pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "..", "a/..", "a\x00b", "//etc/passwd"])
    def test_refused_paths(self, artifact_store: ArtifactStore, path: str) -> None:
        """Absolute paths, '..' components and NUL bytes are refused by resolve, read, write and list."""
        with pytest.raises(InvalidArtifactPath):
            artifact_store.resolve(path)
        with pytest.raises(InvalidArtifactPath):
            artifact_store.read_file(path)
        with pytest.raises(InvalidArtifactPath):
            artifact_store.write_file(path, b"x")
        with pytest.raises(InvalidArtifactPath):
            artifact_store.list_dir(path)

    def test_write_outside_leaves_nothing_outside(self, artifact_store: ArtifactStore, tmp_path: Path) -> None:
        """A refused '../' write creates no file outside the files root."""
        with pytest.raises(InvalidArtifactPath):
            artifact_store.write_file("../../escaped.txt", b"x")
        assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))

    def test_symlink_pointing_outside(self, artifact_store: ArtifactStore, tmp_path: Path) -> None:
        """A symlink inside the root that leads outside cannot be read, written through or listed."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_text("secret")
        files = artifact_store.root / "files"
        (files / "link").symlink_to(outside, target_is_directory=True)
        (files / "filelink").symlink_to(outside / "secret.txt")
        for path in ("link", "link/secret.txt", "filelink"):
            with pytest.raises(InvalidArtifactPath, match="outside"):
                artifact_store.resolve(path)
        with pytest.raises(InvalidArtifactPath):
            artifact_store.read_file("link/secret.txt")
        with pytest.raises(InvalidArtifactPath):
            artifact_store.write_file("link/new.txt", b"x")
        assert not (outside / "new.txt").exists()
        assert artifact_store.list_dir("") == []

    def test_symlink_inside_root_is_followed(self, artifact_store: ArtifactStore) -> None:
        """A symlink that stays inside the root works like the path it points to."""
        artifact_store.write_file("real/f.txt", b"x")
        files = artifact_store.root / "files"
        (files / "alias").symlink_to(files / "real", target_is_directory=True)
        assert artifact_store.read_file("alias/f.txt") == b"x"
        assert [name for name, _, _ in artifact_store.list_dir("")] == ["alias", "real"]


class TestListDir:
    def test_entries_sorted_with_sizes(self, artifact_store: ArtifactStore) -> None:
        """list_dir gives (name, is_dir, size) sorted by name, None as the size of a directory."""
        artifact_store.write_file("run/model.onnx", b"12345")
        artifact_store.write_file("run/MLmodel", b"ab")
        artifact_store.write_file("run/data/sample.json", b"{}")
        assert artifact_store.list_dir("run") == [("MLmodel", False, 2), ("data", True, None), ("model.onnx", False, 5)]
        assert artifact_store.list_dir("") == [("run", True, None)]
        assert artifact_store.list_dir("run/data") == [("sample.json", False, 2)]

    def test_missing_or_file_lists_nothing(self, artifact_store: ArtifactStore) -> None:
        """A missing directory, or a path that is a file, lists as empty."""
        artifact_store.write_file("f.txt", b"x")
        assert artifact_store.list_dir("nope") == []
        assert artifact_store.list_dir("f.txt") == []

    def test_files_and_blobs_do_not_mix(self, artifact_store: ArtifactStore) -> None:
        """Content-addressed blobs never appear among path-keyed files."""
        artifact_store.put_bytes(b"blob")
        assert artifact_store.list_dir("") == []
