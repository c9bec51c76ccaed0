"""Feature store errors, each with a stable `code`; no HTTP imports (callers map classes to statuses).

FeatureStoreError                  feature_store_error
 ├── InvalidFeatureView            invalid_feature_view      a view definition that fails validation
 ├── InvalidFeatureRequest         invalid_feature_request   a malformed feature ref, entity key or value
 ├── PlanMismatch                  feature_plan_mismatch     declared features don't fit the model input
 ├── UnknownView                   unknown_feature_view      a ref names no registered feature view
 ├── UnknownFeature                unknown_feature           a ref names a feature its view lacks
 ├── UnknownFeatureService         unknown_feature_service   a request names no registered feature service
 ├── EntityNotFound                entity_not_found          an entity has no (fresh) row in a view
 ├── OnlineStoreUnavailable        online_store_unavailable  the online store failed or timed out
 └── IngestError                   ingest_error              a file that cannot be ingested (names row and column)
"""

from __future__ import annotations

from typing import ClassVar


class FeatureStoreError(Exception):
    """Base of every feature store error; the message names the thing and the reason."""

    code: ClassVar[str] = "feature_store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidFeatureView(FeatureStoreError):
    code = "invalid_feature_view"


class InvalidFeatureRequest(FeatureStoreError):
    code = "invalid_feature_request"


class PlanMismatch(FeatureStoreError):
    code = "feature_plan_mismatch"


class UnknownView(FeatureStoreError):
    code = "unknown_feature_view"


class UnknownFeature(FeatureStoreError):
    code = "unknown_feature"


class UnknownFeatureService(FeatureStoreError):
    code = "unknown_feature_service"


class EntityNotFound(FeatureStoreError):
    code = "entity_not_found"


class OnlineStoreUnavailable(FeatureStoreError):
    code = "online_store_unavailable"


class IngestError(FeatureStoreError):
    code = "ingest_error"
