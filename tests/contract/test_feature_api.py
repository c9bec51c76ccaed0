"""The Feast-shaped feature endpoints on a real uvicorn server and socket, driven by httpx, on every
backend (memory, redis): exact response shapes, Feast's gotchas, and our error statuses."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette

from featurestore.api import FeatureAPI, StaticCatalog, feature_routes
from featurestore.online import OnlineStore, StoreOptions, open_online_store
from featurestore.views import FeatureView

EPOCH = "1970-01-01T00:00:00Z"
NOW = 1_795_737_600_000  # 2026-11-27T00:00:00Z
DAY_MS = 86_400_000
CUSTOMER_STATS = FeatureView.from_dict("customer_stats", {
    "entity": "customer_id",
    "ttl_seconds": 86_400,
    "features": [
        {"name": "total_spend", "dtype": "float32", "default": 0.0},
        {"name": "num_orders", "dtype": "int64", "default": 0},
        {"name": "plan", "dtype": "string", "default": "none"},
    ],
})
CUSTOMER_FLAGS = FeatureView.from_dict("customer_flags", {
    "entity": "customer_id", "features": [{"name": "plan", "dtype": "string"}, {"name": "churned", "dtype": "bool"}],
})
CATALOG = StaticCatalog.of(CUSTOMER_STATS, CUSTOMER_FLAGS, services={"churn_v1": ["customer_stats:total_spend", "customer_stats:plan"]})
SEED = {  # what the Feast SDK's write_to_online_store sends (naive UTC timestamps with microseconds)
    "feature_view_name": "customer_stats",
    "df": {
        "customer_id": [1001, 1002],
        "total_spend": [120.5, 33.0],
        "num_orders": [4, 1],
        "plan": ["basic", "free"],
        "event_timestamp": ["2026-11-26T21:04:31.966170", "2026-11-26T20:04:31.000001"],
        "created": ["2026-11-26T21:04:31.966174", "2026-11-26T20:04:31.000002"],
    },
    "allow_registry_cache": False,
}
FEATURES = ["customer_stats:total_spend", "customer_stats:num_orders", "customer_stats:plan"]


class Clock:
    """A settable epoch-ms clock for the API, so tests drive TTLs."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class ReadyServer(uvicorn.Server):
    """A uvicorn server that signals once it is started (no polling, no sleeps) and exposes its loop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.loop = asyncio.get_running_loop()
            self.ready.set()


class Swappable:
    """An ASGI app forwarding to the app the current test installed, so one server serves the module."""

    def __init__(self) -> None:
        self.app: Starlette | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@dataclass
class Harness:
    client: httpx.Client  # one keep-alive client for the module (building one costs ~25 ms)
    swappable: Swappable
    loop: asyncio.AbstractEventLoop

    def install(self, store: OnlineStore, clock: Clock) -> None:
        """Serve the feature routes over `store` from now on."""
        self.swappable.app = Starlette(routes=feature_routes(FeatureAPI(store, CATALOG, clock)))

    def close(self, store: OnlineStore) -> None:
        """Close a store on the server's loop, where its connections live."""
        asyncio.run_coroutine_threadsafe(store.close(), self.loop).result(5)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """One real uvicorn server on a pre-bound loopback socket, run from a thread, for the module."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    swappable = Swappable()
    # uvloop, as the gateway serves; the plain asyncio loop adds a ~40 ms delayed-ACK stall per request here.
    server = ReadyServer(uvicorn.Config(swappable, log_level="warning", lifespan="off", loop="uvloop"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert server.ready.wait(10) and server.loop is not None, "the server did not start"
        with httpx.Client(base_url="http://{}:{}".format(*sock.getsockname()), timeout=5) as client:
            yield Harness(client, swappable, server.loop)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


OPTIONS = StoreOptions(read_timeout_s=1.0, write_timeout_s=1.0, connect_timeout_s=0.2)


@dataclass
class Served:
    client: httpx.Client
    clock: Clock

    def post(self, path: str, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post(f"/features/{path}", content=content, headers={"content-type": "application/json"})

    def read(self, **body: Any) -> dict[str, Any]:
        response = self.post("get-online-features", body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture(params=["memory", "redis"])
def served(request: pytest.FixtureRequest, harness: Harness) -> Iterator[Served]:
    """The feature routes over a fresh store of each backend, seeded with two customers the way the SDK writes."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    store, clock = open_online_store(url, OPTIONS), Clock(NOW)
    harness.install(store, clock)
    try:
        s = Served(harness.client, clock)
        assert s.post("write-to-online-store", SEED).status_code == 200
        yield s
    finally:
        harness.close(store)


def as_sdk_dict(data: dict[str, Any]) -> dict[str, list[Any]]:
    """What Feast's RemoteOnlineStore builds: feature_names[i] -> results[i].values."""
    return {name: col["values"] for name, col in zip(data["metadata"]["feature_names"], data["results"], strict=True)}


class TestGetOnlineFeatures:
    def test_feast_response_shape(self, served: Served) -> None:
        """The captured Feast request gets the captured shape: column-major, join key first, unknown entity
        as null / NOT_FOUND / epoch, RFC 3339 second-precision timestamps."""
        data = served.read(features=FEATURES, entities={"customer_id": [1001, 1002, 9999]})
        assert data == {
            "metadata": {"feature_names": ["customer_id", "total_spend", "num_orders", "plan"]},
            "results": [
                {"values": [1001, 1002, 9999], "statuses": ["PRESENT"] * 3, "event_timestamps": [EPOCH] * 3},
                {"values": [120.5, 33.0, None], "statuses": ["PRESENT", "PRESENT", "NOT_FOUND"],
                 "event_timestamps": ["2026-11-26T21:04:31Z", "2026-11-26T20:04:31Z", EPOCH]},
                {"values": [4, 1, None], "statuses": ["PRESENT", "PRESENT", "NOT_FOUND"],
                 "event_timestamps": ["2026-11-26T21:04:31Z", "2026-11-26T20:04:31Z", EPOCH]},
                {"values": ["basic", "free", None], "statuses": ["PRESENT", "PRESENT", "NOT_FOUND"],
                 "event_timestamps": ["2026-11-26T21:04:31Z", "2026-11-26T20:04:31Z", EPOCH]},
            ],
        }

    def test_sdk_style_request(self, served: Served) -> None:
        """The SDK's body (with its extra flags) parses, and its to_dict() view of the answer is right."""
        data = served.read(entities={"customer_id": [1002]}, full_feature_names=False,
                           include_feature_view_version_metadata=False, features=FEATURES)
        assert as_sdk_dict(data) == {"customer_id": [1002], "total_spend": [33.0], "num_orders": [1], "plan": ["free"]}

    def test_float32_values_stay_short(self, served: Served) -> None:
        """A float32 0.1 is sent as 0.1, not as its float64 widening 0.10000000149011612."""
        assert served.post("write-to-online-store", {"feature_view_name": "customer_stats", "df": {
            "customer_id": [7], "total_spend": [0.1], "num_orders": [1], "plan": ["x"]}}).status_code == 200
        response = served.post("get-online-features", {"features": ["customer_stats:total_spend"], "entities": {"customer_id": [7]}})
        assert b'"values":[0.1]' in response.content

    def test_full_feature_names(self, served: Served) -> None:
        """full_feature_names names columns view__feature, which also lets two views share a feature name."""
        data = served.read(features=["customer_stats:plan", "customer_flags:plan"], entities={"customer_id": [1001]}, full_feature_names=True)
        assert as_sdk_dict(data) == {"customer_id": [1001], "customer_stats__plan": ["basic"], "customer_flags__plan": [None]}

    def test_feature_service(self, served: Served) -> None:
        """A feature_service name returns its projection."""
        data = served.read(feature_service="churn_v1", entities={"customer_id": [1001, 1002]})
        assert as_sdk_dict(data) == {"customer_id": [1001, 1002], "total_spend": [120.5, 33.0], "plan": ["basic", "free"]}

    def test_ttl_outside_max_age(self, served: Served) -> None:
        """Past the view's TTL a value is null with OUTSIDE_MAX_AGE and its real event time."""
        served.clock.now_ms = NOW + DAY_MS  # customer 1001 is now 26.9 h old, past the 24 h TTL
        data = served.read(features=["customer_stats:num_orders"], entities={"customer_id": [1001]})
        assert data["results"][1] == {"values": [None], "statuses": ["OUTSIDE_MAX_AGE"], "event_timestamps": ["2026-11-26T21:04:31Z"]}

    def test_only_entities(self, served: Served) -> None:
        """With no features the answer holds the join-key columns alone (an empty batch included)."""
        assert as_sdk_dict(served.read(entities={"customer_id": [1, 2]})) == {"customer_id": [1, 2]}
        assert as_sdk_dict(served.read(features=FEATURES, entities={"customer_id": []})) == {
            "customer_id": [], "total_spend": [], "num_orders": [], "plan": []
        }

    @pytest.mark.parametrize(
        ("body", "status", "code", "message"),
        [
            ({"features": ["customer_stats:nope"], "entities": {"customer_id": [1]}}, 404, "unknown_feature",
             "feature view 'customer_stats' has no feature 'nope'"),
            ({"features": ["nope:total_spend"], "entities": {"customer_id": [1]}}, 404, "unknown_feature_view",
             "no feature view named 'nope'"),
            ({"feature_service": "nope", "entities": {"customer_id": [1]}}, 404, "unknown_feature_service",
             "no feature service named 'nope'"),
            ({"features": FEATURES}, 422, "invalid_feature_request", "'entities' is required"),
            ({"features": FEATURES, "entities": [1001]}, 422, "invalid_feature_request", "'entities' must be an object"),
            ({"features": FEATURES, "entities": {"customer_id": [1], "x": [1, 2]}}, 422, "invalid_feature_request",
             "must have equal lengths"),
            ({"features": FEATURES, "entities": {"user_id": [1]}}, 422, "invalid_feature_request",
             "no column 'customer_id', the join key of feature view 'customer_stats'"),
            ({"features": FEATURES, "entities": {"customer_id": [True]}}, 422, "invalid_feature_request",
             "entity key 'customer_id': True is not an entity key"),
            ({"features": "customer_stats:plan", "entities": {"customer_id": [1]}}, 422, "invalid_feature_request",
             "'features' must be a list"),
            ({"features": ["plan"], "entities": {"customer_id": [1]}}, 422, "invalid_feature_request", "expected 'view:feature'"),
            ({"features": ["request:amount"], "entities": {"customer_id": [1]}}, 422, "invalid_feature_request",
             "request features are not served here"),
            ({"features": ["customer_stats:plan", "customer_flags:plan"], "entities": {"customer_id": [1]}}, 422,
             "invalid_feature_request", "'plan' appears in several views; set full_feature_names"),
            ({"features": FEATURES, "entities": {"customer_id": [1]}, "full_feature_names": "yes"}, 422,
             "invalid_feature_request", "'full_feature_names' must be a bool"),
            (b"{not json", 422, "invalid_feature_request", "not valid JSON"),
        ],
    )
    def test_errors(self, served: Served, body: Any, status: int, code: str, message: str) -> None:
        """Unknown names are 404s and malformed requests 422s, each a JSON object naming the problem."""
        response = served.post("get-online-features", body)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == code and message in response.json()["error"]

    def test_errors_keep_the_connection(self, served: Served) -> None:
        """An error answer leaves the keep-alive connection usable (Feast's 500s close it)."""
        assert served.post("get-online-features", {"features": ["customer_stats:nope"], "entities": {"customer_id": [1]}}).status_code == 404
        assert served.read(features=FEATURES, entities={"customer_id": [1001]})["results"][1]["values"] == [120.5]


class TestWrites:
    def test_push_answers_empty_200(self, served: Served) -> None:
        """/push answers 200 with an empty body and no content type, and the pushed row is then served
        with the pushed event time."""
        response = served.post("push", {"push_source_name": "customer_stats_push", "to": "online", "df": {
            "customer_id": [1002], "total_spend": [99.5], "num_orders": [2], "plan": ["basic"],
            "event_timestamp": ["2026-11-26T22:04:56"], "created": ["2026-11-26T22:04:56"]}})
        assert (response.status_code, response.content) == (200, b"")
        assert "content-type" not in response.headers
        data = served.read(features=FEATURES, entities={"customer_id": [1002]})
        assert as_sdk_dict(data) == {"customer_id": [1002], "total_spend": [99.5], "num_orders": [2], "plan": ["basic"]}
        assert data["results"][1]["event_timestamps"] == ["2026-11-26T22:04:56Z"]

    def test_push_source_is_the_view_name(self, served: Served) -> None:
        """A push source may also be named exactly like its feature view; rows without event time get the clock's."""
        response = served.post("push", {"push_source_name": "customer_flags", "df": {"customer_id": [5], "plan": ["pro"], "churned": [True]}})
        assert response.status_code == 200
        data = served.read(features=["customer_flags:churned"], entities={"customer_id": [5]})
        assert data["results"][1] == {"values": [True], "statuses": ["PRESENT"], "event_timestamps": ["2026-11-27T00:00:00Z"]}

    def test_write_to_online_store_answers_null(self, served: Served) -> None:
        """/write-to-online-store answers 200 with the JSON body null."""
        response = served.post("write-to-online-store", SEED)
        assert (response.status_code, response.content, response.headers["content-type"]) == (200, b"null", "application/json")

    @pytest.mark.parametrize(
        ("path", "body", "status", "message"),
        [
            ("push", {"push_source_name": "nope", "df": {"customer_id": [1]}}, 422, "unable to find push source 'nope'"),
            ("push", {"push_source_name": "customer_stats_push", "df": {}, "to": "offline"}, 422, "no offline store"),
            ("push", {"push_source_name": "customer_stats_push", "df": {}, "to": "elsewhere"}, 422,
             "'elsewhere' is not a supported push format"),
            ("push", {"df": {}}, 422, "'push_source_name' is required"),
            ("push", {"push_source_name": "customer_stats"}, 422, "'df' is required"),
            ("write-to-online-store", {"feature_view_name": "nope", "df": {}}, 404, "no feature view named 'nope'"),
            ("write-to-online-store", {"feature_view_name": "customer_stats", "df": {"customer_id": [1], "plan": ["x"]}}, 422,
             "'df' has no column total_spend, num_orders of feature view 'customer_stats'"),
            ("write-to-online-store", {"feature_view_name": "customer_stats", "df": {
                "customer_id": [1, 2], "total_spend": [1.0, "lots"], "num_orders": [1, 2], "plan": ["a", "b"]}}, 422,
             "row 1, column 'total_spend' (float32): 'lots' is not a number"),
            ("write-to-online-store", {"feature_view_name": "customer_stats", "df": {
                "customer_id": [1], "total_spend": [1.0], "num_orders": [1], "plan": ["a"], "event_timestamp": ["noon"]}}, 422,
             "row 0, column 'event_timestamp'"),
        ],
    )
    def test_write_errors(self, served: Served, path: str, body: Any, status: int, message: str) -> None:
        """Bad writes are refused with a JSON error naming the problem, and write nothing."""
        response = served.post(path, body)
        assert response.status_code == status and message in response.json()["error"]
        assert served.read(features=["customer_stats:plan"], entities={"customer_id": [1]})["results"][1]["values"] == [None]

    def test_health(self, served: Served) -> None:
        """/health answers 200 with an empty body while the store answers."""
        response = served.client.get("/features/health")
        assert (response.status_code, response.content) == (200, b"")


def test_store_down_is_503(harness: Harness) -> None:
    """With Redis unreachable, reads, writes and health answer 503 with the store's error, quickly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = open_online_store(f"redis://127.0.0.1:{port}/0", OPTIONS)
    harness.install(store, Clock(NOW))
    client = harness.client
    try:
        for response in (
            client.post("/features/get-online-features", json={"features": FEATURES, "entities": {"customer_id": [1]}}),
            client.post("/features/write-to-online-store", json=SEED),
            client.get("/features/health"),
        ):
            assert response.status_code == 503
            assert response.json()["code"] == "online_store_unavailable"
            assert f"127.0.0.1:{port}" in response.json()["error"]
    finally:
        harness.close(store)
