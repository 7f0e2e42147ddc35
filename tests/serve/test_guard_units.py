"""The guard's parts on their own: token buckets, client addresses and Host names."""

from __future__ import annotations

from ghostfacenets.serve.guard import host_allowed, host_name
from ghostfacenets.serve.ratelimit import RateLimiter, client_key, retry_after


def test_token_bucket_with_a_clock() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == 0.5  # a token comes back every 0.5 s
    assert limiter.take("other") == 0.0
    now[0] = 0.25
    assert limiter.wait("k") == 0.25
    now[0] = 0.5
    assert limiter.take("k") == 0.0 and limiter.take("k") == 0.5
    now[0] = 100.0
    assert [limiter.take("k") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]  # never more than the burst
    limiter.forget("k")
    assert limiter.take("k") == 0.0
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"


def test_the_table_stays_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_entries=100)
    for i in range(10_000):
        limiter.take(i)
    assert len(limiter._buckets) == 100


def test_client_addresses() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key(None) == "unknown"


def test_host_names() -> None:
    loopback = ("localhost", "127.0.0.1", "::1")
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("LocalHost.") == "localhost"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("[::1]x") is None and host_name("a b") is None and host_name("h:port") is None
    assert host_allowed(host_name("[::1]:80"), loopback)
    assert not host_allowed(host_name("attacker.example:8000"), loopback)
    assert not host_allowed(host_name("127.0.0.1.attacker.example"), loopback)
    assert not host_allowed(None, ("*",))
    assert host_allowed("faces.example.org", ("*.example.org",))
    assert not host_allowed("example.org.evil", ("*.example.org",))
    assert host_allowed("anything", ("*",))
