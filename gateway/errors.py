"""Gateway errors and the one table that maps them (and registry errors) to HTTP statuses.

GatewayError
 ├── InvalidInput          400  malformed body, wrong dtype/shape, bad parameter
 │    └── InvalidPolicy    422  a well-formed route policy that cannot apply (unknown model, bad weights)
 ├── Unauthorized          401  admin call without a bearer token
 ├── Forbidden             403  admin call with the wrong token
 ├── NotFound              404
 │    ├── RouteNotFound         unknown route / model name
 │    └── VersionNotFound       unknown version of a known model
 ├── PayloadTooLarge       413  body over the configured limit
 ├── Unavailable           503  not ready, draining, a version that failed to load
 │    └── Overloaded       503  + Retry-After: the model's queue is full; retry shortly
 ├── DeadlineExceeded      504  the request's deadline passed; its work was abandoned
 └── InferenceFailed       500  the runtime raised on a validated input
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from featurestore import errors as fs
from registry import errors as reg


class GatewayError(Exception):
    """Base of the serving errors; the message is shown to the caller as is."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(GatewayError):
    code = "invalid_input"


class InvalidPolicy(InvalidInput):
    code = "invalid_policy"


class Unauthorized(GatewayError):
    code = "unauthorized"


class Forbidden(GatewayError):
    code = "forbidden"


class NotFound(GatewayError):
    code = "not_found"


class RouteNotFound(NotFound):
    code = "route_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"


class Unavailable(GatewayError):
    code = "unavailable"


class Overloaded(Unavailable):
    code = "overloaded"
    retry_after_s = 1


class GatewayTimeout(GatewayError):
    code = "deadline_exceeded"


class InferenceFailed(GatewayError):
    code = "inference_failed"


# Looked up along the MRO, so a subclass inherits its parent's status unless listed.
STATUS_FOR: dict[type[Exception], int] = {
    GatewayError: 500,
    InvalidInput: 400,
    InvalidPolicy: 422,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    Unavailable: 503,
    InferenceFailed: 500,
    GatewayTimeout: 504,
    reg.RegistryError: 500,
    reg.ResourceDoesNotExist: 404,
    reg.ResourceAlreadyExists: 400,
    reg.InvalidParameterValue: 400,
    reg.StoreUnavailable: 503,
    reg.ArtifactTooLarge: 413,
    fs.FeatureStoreError: 500,
    fs.InvalidFeatureView: 422,
    fs.InvalidFeatureRequest: 400,
    fs.PlanMismatch: 422,
    fs.UnknownView: 404,
    fs.UnknownFeature: 404,
    fs.UnknownFeatureService: 404,
    fs.EntityNotFound: 404,
    fs.OnlineStoreUnavailable: 503,
    fs.IngestError: 400,
}


def status_for(exc: Exception) -> int:
    """HTTP status of an error: the entry of the nearest class in its MRO, else 500."""
    for cls in type(exc).__mro__:
        status = STATUS_FOR.get(cls)
        if status is not None:
            return status
    return 500


def render_error(message: str) -> bytes:
    """The v1/v2 error body: {"error": "<message>"} (tritonclient and kserve read exactly this key)."""
    return orjson.dumps({"error": message})
