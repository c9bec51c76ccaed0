"""The inference layer's path matching and header picking (pure)."""

from __future__ import annotations

import pytest

from gateway.inference import RequestHeaders, match_inference_path


class TestMatchInferencePath:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("/v2/models/churn/infer", ("v2", "churn", None)),
            ("/v2/models/churn/versions/2/infer", ("v2", "churn", "2")),
            ("/v1/models/churn:predict", ("v1", "churn", None)),
            ("/v1/models/a.b-c_d:predict", ("v1", "a.b-c_d", None)),
        ],
    )
    def test_inference_paths_are_recognised(self, path: str, expected: tuple[str, str, str | None]) -> None:
        """v1 predict and v2 infer paths (with or without a version) give protocol, name and version."""
        assert match_inference_path(path) == expected

    @pytest.mark.parametrize(
        "path",
        [
            "/v2/models//infer",
            "/v2/models/churn/versions//infer",
            "/v2/models/churn/extra/2/infer",
            "/v2/models/churn/ready",
            "/v1/models/:predict",
            "/v1/models/a/b:predict",
            "/v2/health/ready",
            "/admin/routes/churn",
        ],
    )
    def test_other_paths_go_to_the_router(self, path: str) -> None:
        """Anything that is not exactly an inference path is left to Starlette."""
        assert match_inference_path(path) is None


class TestRequestHeaders:
    def test_picks_the_four_headers_it_needs(self) -> None:
        """Content-Length, Content-Encoding, Inference-Header-Content-Length and X-Gateway-Key are picked out."""
        h = RequestHeaders([
            (b"host", b"x"), (b"content-length", b"12"), (b"inference-header-content-length", b"8"),
            (b"content-encoding", b"gzip"), (b"x-gateway-key", b"user-1"),
        ])
        assert (h.content_length, h.header_length, h.content_encoding, h.sticky_key) == (b"12", b"8", b"gzip", b"user-1")

    def test_absent_headers_are_none(self) -> None:
        """Headers that were not sent read as None."""
        h = RequestHeaders([(b"host", b"x")])
        assert (h.content_length, h.header_length, h.content_encoding, h.sticky_key) == (None, None, None, None)
