"""Registry errors, each carrying a stable MLflow error code; no HTTP imports.

RegistryError
 ├── ResourceDoesNotExist        RESOURCE_DOES_NOT_EXIST
 ├── ResourceAlreadyExists       RESOURCE_ALREADY_EXISTS
 ├── InvalidParameterValue       INVALID_PARAMETER_VALUE
 │    ├── InvalidModelFile       (a corrupt or non-ONNX file at registration)
 │    └── InvalidArtifactPath    (a path that escapes the artifact root)
 ├── StoreUnavailable            TEMPORARILY_UNAVAILABLE (the database cannot be reached)
 ├── ArtifactTooLarge            RESOURCE_EXHAUSTED (an upload over --max-artifact-bytes)
 └── ArtifactFetchFailed         TEMPORARILY_UNAVAILABLE (the registry service did not deliver a model file)
      └── ArtifactMismatch       (the delivered bytes do not hash to the registered sha256)
"""

from __future__ import annotations

from typing import ClassVar


class RegistryError(Exception):
    """Base of every registry error; `code` is the MLflow error code name."""

    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ResourceDoesNotExist(RegistryError):
    code = "RESOURCE_DOES_NOT_EXIST"


class ResourceAlreadyExists(RegistryError):
    code = "RESOURCE_ALREADY_EXISTS"


class InvalidParameterValue(RegistryError):
    code = "INVALID_PARAMETER_VALUE"


class InvalidModelFile(InvalidParameterValue):
    """The file is not a valid ONNX model (or has no usable signature)."""


class InvalidArtifactPath(InvalidParameterValue):
    """An artifact path is absolute, malformed or escapes the store's root."""


class StoreUnavailable(RegistryError):
    code = "TEMPORARILY_UNAVAILABLE"


class ArtifactTooLarge(RegistryError):
    code = "RESOURCE_EXHAUSTED"


class ArtifactFetchFailed(RegistryError):
    """A model file could not be fetched from the registry service (unreachable, error status, too large,
    too slow); nothing was stored, and a later sync tries again."""

    code = "TEMPORARILY_UNAVAILABLE"


class ArtifactMismatch(ArtifactFetchFailed):
    """The bytes delivered for a sha256 hash to something else; they were discarded unseen."""
