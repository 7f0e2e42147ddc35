"""Token buckets per API key and per client address, in a table of bounded size.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; a request takes one or is refused with the
seconds until one is back (the ``Retry-After`` of a 429). The table forgets the buckets used least recently beyond
``max_entries``, so that a caller sending a new key or address with every request cannot grow memory; a forgotten
bucket comes back full, which costs such a caller nothing it could not get by waiting.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class RateLimiter:
    """``take(key)``: 0.0 when ``key`` may go on now, else the seconds until it may (nothing is taken then)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        max_entries: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_entries < 1:
            raise ValueError("a rate limiter needs rate > 0, burst >= 1 and max_entries >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_entries = max_entries
        self._clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def wait(self, key: Hashable) -> float:
        """The seconds until ``key`` may go on (0.0: now), without taking anything."""
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: Hashable) -> float:
        """Take one token of ``key``: 0.0 when there was one, else the seconds until there is (nothing taken)."""
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_entries:
            self._buckets.popitem(last=False)
        return 0.0

    def forget(self, key: Hashable) -> None:
        """Drop the bucket of ``key`` (one that should not have been counted, e.g. an unknown API key)."""
        self._buckets.pop(key, None)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def client_key(host: str | None) -> str:
    """The address a client is counted by: IPv4 as it is, IPv6 by its /64 network (one subscriber's usual share,
    which a single host can fill with addresses), anything else (a Unix socket, no address) as given."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
