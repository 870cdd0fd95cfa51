"""A small JSON-over-HTTP client on the standard library.

Keeps one persistent connection per thread and host, retries 429, 5xx, network
errors, timeouts and malformed JSON with exponential backoff (honouring Retry-After),
and never retries a 4xx business answer.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

log = logging.getLogger(__name__)


class HttpError(Exception):
    """A request that did not produce a usable answer."""

    def __init__(self, message: str, status: int = 0, body: Any = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retryable = retryable


class RateLimiter:
    """Token bucket: at most ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def _take(self) -> bool:
        """Refill by the time elapsed and take a token if there is one (hold the lock)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    @classmethod
    def window(cls, limit: int, seconds: float) -> RateLimiter:
        """At most ``limit`` requests in any sliding window of ``seconds``: a burst of a tenth of
        the limit, refilled so that burst + refill over the window stays within it."""
        burst = max(1.0, limit / 10)
        return cls((limit - burst) / seconds, burst)

    def try_acquire(self) -> bool:
        """Take a token if one is available now; never waits."""
        with self.lock:
            return self._take()

    def acquire(self) -> None:
        while True:
            with self.lock:
                if self._take():
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


class JsonClient:
    def __init__(
        self,
        base_url: str,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        limiter: RateLimiter | None = None,
        on_request: Callable[[str, bool], None] | None = None,
        path_limiters: Mapping[str, RateLimiter] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.limiter = limiter
        self.on_request = on_request
        self.path_limiters = dict(path_limiters or {})  # a published per-endpoint limit, its own budget
        self.local = threading.local()
        self.last_ok = 0.0
        self.requests = 0

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
        self.local.conn = None

    def _once(self, method: str, path: str, body: str | None, headers: Mapping[str, str]) -> Any:
        per_path = self.path_limiters.get(path.split("?", 1)[0])
        if per_path is not None:
            per_path.acquire()
        if self.limiter is not None:
            self.limiter.acquire()
        self.requests += 1
        hdrs = {"Accept": "application/json", "User-Agent": "polymarket-bot", **headers}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        conn = self._conn()
        try:
            conn.request(method, self.prefix + path, body=body.encode() if body is not None else None,
                         headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            self._drop()
            raise HttpError(f"{method} {path}: network error: {exc.__class__.__name__}: {exc}",
                            retryable=True) from None
        if resp.getheader("Connection", "").lower() == "close":
            self._drop()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
            if resp.status < 400:
                raise HttpError(f"{method} {path}: malformed JSON from the server", resp.status,
                                raw[:200].decode("utf-8", "replace"), retryable=True) from None
        if resp.status == 429 or resp.status >= 500:
            err = HttpError(f"{method} {path}: HTTP {resp.status}", resp.status, data, retryable=True)
            retry_after = resp.getheader("Retry-After")
            if retry_after:
                try:
                    err.retry_after = float(retry_after)  # type: ignore[attr-defined]
                except ValueError:
                    pass
            raise err
        if resp.status >= 400:
            msg = data.get("error") if isinstance(data, dict) else None
            raise HttpError(f"{method} {path}: HTTP {resp.status}: {msg or raw[:200]!r}", resp.status, data)
        self.last_ok = time.time()
        return data

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                body: str | None = None, headers: Mapping[str, str] | None = None,
                sign: Callable[[], Mapping[str, str]] | None = None) -> Any:
        """``sign`` makes fresh auth headers for each attempt (timestamps)."""
        if params:
            path = path + "?" + urlencode({k: v for k, v in params.items() if v is not None})
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            if sign is not None:
                hdrs.update(sign())
            try:
                result = self._once(method, path, body, hdrs)
                if self.on_request:
                    self.on_request(path, True)
                return result
            except HttpError as exc:
                if self.on_request:
                    self.on_request(path, False)
                if not exc.retryable or attempt >= self.retries:
                    raise
                delay = min(self.max_backoff, self.backoff * (2**attempt))
                delay = max(delay, min(self.max_backoff, getattr(exc, "retry_after", 0.0)))
                log.warning("%s; retry %d/%d in %.2fs", exc, attempt + 1, self.retries, delay)
                time.sleep(delay)
                attempt += 1

    def get(self, path: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        text = body if isinstance(body, str) or body is None else json.dumps(body, separators=(",", ":"))
        return self.request("POST", path, body=text, **kw)
