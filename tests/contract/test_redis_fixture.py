"""The Redis test fixture gives each test an empty, private Redis."""

from __future__ import annotations

import redis


def test_redis_is_private_and_empty(redis_url: str) -> None:
    """A test starts with no keys and can write to its Redis."""
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set("gateway:test", b"1")
    assert client.get("gateway:test") == b"1"
    client.close()
