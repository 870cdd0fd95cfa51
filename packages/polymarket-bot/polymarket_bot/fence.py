"""The fence of polymarket-ha's trading lease (issue 11): "leader trade K is copied by the lease holder",
recorded in etcd before the order for K leaves, and read back by a node at its promotion.

The bot holds no etcd credential. It asks the lease keeper of its own node over a unix socket
(FENCE_SOCKET, root:polymarket-bot 0660, the caller's uid checked): one JSON line in, one out. The keeper
writes K with an etcd transaction that succeeds only while the leader key is still this node's, under
this node's lease: a node that lost the lease cannot record, so it cannot send. The keys expire by an
etcd lease of MAX_TRADE_AGE_SECONDS plus a margin, so the key space stays small.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

TIMEOUT = 2.0  # seconds for one request: the keeper's etcd call has a 1 s deadline per member
KEY_MARGIN = 120  # seconds a copied key outlives MAX_TRADE_AGE_SECONDS (clock skew, the keeper's buckets)


class FenceError(Exception):
    """The keeper could not be asked or could not ask etcd: whether K is recorded is not known."""


class Fenced(FenceError):
    """etcd refused: this node does not hold the leader key (any more)."""


class Fence:
    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.last_ms = 0.0  # the round trip of the last request (for the log and the measurements)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n") and len(data) < 1 << 24:
                    # the timeout bounds the whole answer, not each recv (a keeper trickling bytes)
                    left = started + self.timeout - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("timed out")
                    s.settimeout(left)
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    data += chunk
        except OSError as exc:
            raise FenceError(f"the lease keeper at {self.path} can't be asked: {exc.strerror or exc}") from None
        finally:
            self.last_ms = (time.monotonic() - started) * 1000
        try:
            answer = json.loads(data)
        except ValueError:
            raise FenceError(f"the lease keeper at {self.path} answered no JSON line") from None
        if not isinstance(answer, dict):
            raise FenceError(f"the lease keeper at {self.path} answered {type(answer).__name__}")
        if not answer.get("ok"):
            why = str(answer.get("error") or "refused")[:300]
            raise Fenced(why) if answer.get("fenced") else FenceError(why)
        return answer

    def record(self, key: str, ttl: int, order: str = "") -> None:
        """K recorded under this node's lease; raises Fenced (not the holder) or FenceError (unknown)."""
        self._ask({"op": "record", "key": key, "ttl": int(ttl), "order": order})

    def forget(self, key: str) -> None:
        """K recorded, then not sent (the lease ran out meanwhile): deleted, while this node still holds the
        leader key, so that the next holder copies the trade; raises Fenced or FenceError otherwise."""
        self._ask({"op": "forget", "key": key})

    def copied(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Every key recorded by any holder and not expired, with what was recorded (holder, at, order),
        and the generation of this node's lease (the leader key's create revision); read in one etcd
        transaction that succeeds only while this node holds the key."""
        answer = self._ask({"op": "copied"})
        keys = answer.get("keys")
        if not isinstance(keys, dict):
            raise FenceError("the lease keeper's list of copied keys is not a mapping")
        return {str(k): v if isinstance(v, dict) else {} for k, v in keys.items()}, int(answer.get("generation") or 0)
