"""The fence of polymarket-ha's lease and the promotion that reads it (issue 11, items 2 and 3).

Two bots (primary and standby) on two ledgers, the project's fake exchange, and for each node the lease
keeper's real fence socket (polymarket_ha.FenceServer) in front of one in-memory etcd that evaluates the
transactions' compares as etcd does. The exchange's order list is the witness: which leader trade each
order copies (each trade has its own size, so each copy its own amount), and how many times."""

from __future__ import annotations

import base64
import contextlib
import importlib.machinery
import importlib.util
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, Harness
from polymarket_bot import server
from polymarket_bot.engine import Engine
from test_lease import write_lease


def load_ha() -> ModuleType:
    path = ROOT / "packages" / "polymarket-ha" / "polymarket_ha.py"
    loader = importlib.machinery.SourceFileLoader("polymarket_ha", str(path))
    spec = importlib.util.spec_from_loader("polymarket_ha", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["polymarket_ha"] = module
    loader.exec_module(module)
    return module


ha = load_ha()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeEtcd:
    """etcd's v3 JSON gateway for what the lease keeper asks: lease grants, transactions whose compares
    (VALUE, LEASE) are evaluated on the keys, puts and ranges. One instance is the cluster both nodes see."""

    def __init__(self) -> None:
        self.kv: dict[bytes, dict[str, Any]] = {}
        self.revision = 1
        self.next_lease = 100
        self.lock = threading.Lock()
        self.down = False
        self.puts: list[tuple[str, int]] = []  # (key, self.witness() then) of every put
        self.witness: Any = lambda: 0

    def take(self, name: str) -> str:
        """The leader key for ``name`` under a new lease, as a campaign that won would leave it."""
        lease = str(self.call("/v3/lease/grant", {"TTL": 6})["ID"])
        with self.lock:
            self.revision += 1
            self.kv[ha.LEADER_KEY.encode()] = {"value": name.encode(), "lease": lease, "create": self.revision}
        return lease

    def _compare(self, c: dict[str, Any]) -> bool:
        kv = self.kv.get(base64.b64decode(c["key"]))
        if c["target"] == "VALUE":
            return kv is not None and kv["value"] == base64.b64decode(c["value"])
        if c["target"] == "LEASE":
            return (kv["lease"] if kv else "0") == str(c["lease"])
        raise AssertionError(f"compare target {c['target']} not faked")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise ha.HAError("etcd: connection refused")
        with self.lock:
            if path == "/v3/lease/grant":
                self.next_lease += 1
                return {"ID": str(self.next_lease), "TTL": str(body["TTL"])}
            assert path == "/v3/kv/txn", path
            ok = all(self._compare(c) for c in body["compare"])
            responses: list[dict[str, Any]] = []
            for op in body["success" if ok else "failure"]:
                if "requestPut" in op:
                    put = op["requestPut"]
                    key = base64.b64decode(put["key"])
                    self.revision += 1
                    old = self.kv.get(key)
                    self.kv[key] = {"value": base64.b64decode(put["value"]), "lease": str(put.get("lease", "0")),
                                    "create": old["create"] if old else self.revision}
                    self.puts.append((key.decode(), self.witness()))
                    responses.append({"response_put": {}})
                elif "requestDeleteRange" in op:
                    self.kv.pop(base64.b64decode(op["requestDeleteRange"]["key"]), None)
                    responses.append({"response_delete_range": {}})
                else:
                    rng = op["requestRange"]
                    start = base64.b64decode(rng["key"])
                    end = base64.b64decode(rng["range_end"]) if "range_end" in rng else None
                    keys = sorted(k for k in self.kv if (k == start if end is None else start <= k < end))
                    responses.append({"response_range": {"kvs": [
                        {"key": b64(k), "value": b64(self.kv[k]["value"]), "lease": self.kv[k]["lease"],
                         "create_revision": str(self.kv[k]["create"])} for k in keys]}})
            return {"header": {"revision": str(self.revision)}, "succeeded": ok, "responses": responses}

    def copied(self) -> list[str]:
        return sorted(k.decode()[len(ha.COPIED_PREFIX):] for k in self.kv if k.startswith(ha.COPIED_PREFIX.encode()))


class Node:
    def __init__(self, name: str, etcd: FakeEtcd, tmp: Path) -> None:
        self.keeper = ha.LeaseKeeper(name, etcd, tmp / f"keeper-{name}")
        self.fence = ha.FenceServer(self.keeper, etcd, tmp / f"fence-{name}.sock", uids={0, os.getuid()})
        self.sock = self.fence.listen()
        threading.Thread(target=self.fence.serve, args=(self.sock,), daemon=True).start()


@pytest.fixture
def pair(h: Harness) -> Iterator[tuple[FakeEtcd, Node, Node]]:
    etcd = FakeEtcd()
    nodes = Node("primary", etcd, h.tmp), Node("standby", etcd, h.tmp)
    yield etcd, *nodes
    for n in nodes:
        n.sock.close()


def bot(h: Harness, node: str, **over: Any) -> Engine:
    settings: dict[str, Any] = {
        "LEASE_FILE": h.tmp / f"lease-{node}", "LEASE_NODE": node, "FENCE_SOCKET": h.tmp / f"fence-{node}.sock",
        "DB_PATH": h.tmp / f"{node}.db", "SIZING_MODE": "ratio", "SIZE_RATIO": "0.1",
        "MAX_TRADE_AGE_SECONDS": "600", "MAX_POSITION_SIZE": "100000", "MAX_DAILY_VOLUME": "100000"}
    settings.update(over)
    return h.engine(**settings)


def hold(h: Harness, etcd: FakeEtcd, nodes: dict[str, Node], name: str, valid: bool = True) -> None:
    """``name`` takes the leader key; its lease file names it (valid for trading or not yet); the other
    node's lease file names the holder too, as the keepers write them."""
    lease = etcd.take(name)
    for n, node in nodes.items():
        node.keeper.lease_id = lease if n == name else ""
        write_lease(h.tmp / f"lease-{n}", name, 30 if valid else -1)


def trade(h: Harness, i: int, ago: float) -> None:
    """Leader trade i: 100 + 2i shares at 0.5, copied at SIZE_RATIO 0.1 for 5 + 0.1 i USD."""
    h.trade(ago=ago, size=100 + 2 * i, transactionHash=f"0x{i:064x}")


def copies(h: Harness) -> dict[int, int]:
    """How many exchange orders copy each leader trade."""
    out: dict[int, int] = {}
    for o in h.ex.s.orders:
        i = round((int(o["order"]["makerAmount"]) / 1e6 - 5) / 0.1)
        out[i] = out.get(i, 0) + 1
    return out


def snapshot(src: Path, dest: Path) -> None:
    """What polymarket-ha's replication ships: an online-backup copy of the ledger at this moment."""
    with contextlib.closing(sqlite3.connect(src)) as con, contextlib.closing(sqlite3.connect(dest)) as out:
        con.backup(out)


def test_every_order_is_recorded_in_etcd_under_the_lease_before_it_leaves(h: Harness, pair: Any) -> None:
    etcd, p, s = pair
    hold(h, etcd, {"primary": p, "standby": s}, "primary")
    a = bot(h, "primary")
    etcd.witness = lambda: len(h.ex.s.orders)
    for i in (1, 2, 3):
        trade(h, i, ago=5 - i)
    a.poll_once()
    assert copies(h) == {1: 1, 2: 1, 3: 1}
    keys = [a.ledger.fence_key(int(o["id"]), "") for o in a.ledger.orders()]
    assert sorted(keys) == etcd.copied() and len(keys) == 3
    # each key was put when the exchange had received only the orders of the trades before it
    assert [(k[len(ha.COPIED_PREFIX):], n) for k, n in etcd.puts] == [(k, i) for i, k in enumerate(keys)]
    # the copied keys live under a lease of their own (MAX_TRADE_AGE_SECONDS + margin), not the 6 s one
    leases = {v["lease"] for k, v in etcd.kv.items() if k.startswith(ha.COPIED_PREFIX.encode())}
    assert len(leases) == 1 and leases != {etcd.kv[ha.LEADER_KEY.encode()]["lease"]}
    assert [ttl for ttl in p.fence.buckets] == [600 + 120]


def test_a_node_that_lost_the_key_in_etcd_cannot_record_so_it_does_not_send(h: Harness, pair: Any) -> None:
    etcd, p, s = pair
    hold(h, etcd, {"primary": p, "standby": s}, "primary")
    a = bot(h, "primary")
    trade(h, 1, ago=3)
    a.poll_once()
    # The key moves to the standby in etcd while the primary's local lease file still shows time left
    # (the case the file alone cannot see: a keeper frozen between its last renewal and now).
    etcd.take("standby")
    trade(h, 2, ago=2)
    a.poll_once()
    assert copies(h) == {1: 1}
    assert ("skipped", "no_lease: fence: primary does not hold /polymarket/leader") in h.decisions(a)
    assert server.health(a)[1]["role"] == "passive"
    # the keeper gone (socket absent): no order either
    p.sock.close()
    (h.tmp / "fence-primary.sock").unlink()
    trade(h, 3, ago=1)
    a.poll_once()
    assert copies(h) == {1: 1}


def test_a_key_recorded_for_an_order_that_did_not_leave_is_taken_back(h: Harness, pair: Any) -> None:
    """The deadline runs out during the fence's round trip: the order is not sent, and its key is deleted from
    etcd while this node still holds the leader key, so the next holder copies the trade (not a miss)."""
    etcd, p, s = pair
    nodes = {"primary": p, "standby": s}
    hold(h, etcd, nodes, "primary")
    a = bot(h, "primary")
    b = bot(h, "standby")
    def expire() -> int:  # the deadline passes during the fence's round trip
        write_lease(h.tmp / "lease-primary", "primary", -1)
        return 0

    etcd.witness = expire
    trade(h, 1, ago=3)
    a.poll_once()
    b.poll_once()
    assert copies(h) == {} and etcd.copied() == []
    assert h.decisions(a)[0][1].startswith("no_lease: the lease expired")
    etcd.witness = lambda: 0
    hold(h, etcd, nodes, "standby")
    b.poll_once()
    assert copies(h) == {1: 1}


def test_promotion_on_a_stale_replica_copies_nothing_twice_and_misses_nothing(h: Harness, pair: Any) -> None:
    """Item 3: the standby is promoted on a replica of the primary's ledger taken before the primary's last
    copies (the replication timer stopped); those copies are in etcd, so they are not copied again, and
    the trades of the failover window (seen by the standby while passive) are copied once."""
    etcd, p, s = pair
    nodes = {"primary": p, "standby": s}
    hold(h, etcd, nodes, "primary")
    a = bot(h, "primary")
    b = bot(h, "standby")
    trade(h, 1, ago=300)
    a.poll_once()
    b.poll_once()                                  # passive: sees trade 1 as the primary's
    snapshot(h.tmp / "primary.db", h.tmp / "replica.db")   # the last replication before the failover
    for i in range(2, 8):
        trade(h, i, ago=300 - 20 * i)
        a.poll_once()
        b.poll_once()
    assert copies(h) == {i: 1 for i in range(1, 8)}
    # the primary dies; trades 8 and 9 appear while the standby waits for the lease
    trade(h, 8, ago=30)
    hold(h, etcd, nodes, "standby", valid=False)
    b.poll_once()
    trade(h, 9, ago=5)
    b.poll_once()
    assert copies(h) == {i: 1 for i in range(1, 8)}
    # Promotion as polymarket-ha does it: the standby's bot restarted on the adopted replica.
    b.ledger.close()
    h.engines.remove(b)
    (h.tmp / "replica.db").replace(h.tmp / "standby.db")
    for suffix in ("-wal", "-shm"):
        (h.tmp / f"standby.db{suffix}").unlink(missing_ok=True)
    hold(h, etcd, nodes, "standby")
    b = bot(h, "standby")
    b.poll_once()
    b.poll_once()
    assert copies(h) == {i: 1 for i in range(1, 10)}
    assert b.ledger.get_mark("lease_generation") == etcd.kv[ha.LEADER_KEY.encode()]["create"]


def test_trades_seen_while_passive_stay_copyable_after_promotion(h: Harness, pair: Any) -> None:
    """Item 2: the standby keeps its own ledger (no replica). What it saw while passive is copied once at
    its promotion, unless the primary copied it (etcd says so) or it is older than MAX_TRADE_AGE_SECONDS."""
    etcd, p, s = pair
    nodes = {"primary": p, "standby": s}
    hold(h, etcd, nodes, "primary")
    a = bot(h, "primary", MAX_TRADE_AGE_SECONDS="60")
    b = bot(h, "standby", MAX_TRADE_AGE_SECONDS="60")
    trade(h, 1, ago=50)                            # copied by the primary, seen by the standby
    a.poll_once()
    b.poll_once()
    trade(h, 2, ago=40)                            # the primary dies before its poll: nobody copied it
    trade(h, 3, ago=10)
    b.poll_once()
    assert ("skipped", "passive") in h.decisions(b)
    assert copies(h) == {1: 1}
    # the standby takes the lease; the keeper waits TTL before the lease file is valid: still passive
    hold(h, etcd, nodes, "standby", valid=False)
    b.poll_once()
    assert copies(h) == {1: 1}
    # trade 2 is older than MAX_TRADE_AGE_SECONDS by the promotion (30 s passed, as far as the standby's
    # ledger is concerned): not copied any more
    with b.ledger.lock:
        b.ledger.db.execute("UPDATE leader_trades SET trade_ts = trade_ts - 30 WHERE tx_hash=?", (f"0x{2:064x}",))
    hold(h, etcd, nodes, "standby")
    b.poll_once()
    assert copies(h) == {1: 1, 3: 1}
    decisions = dict((d["size"], (d["decision"], d["reason"])) for d in b.ledger.decisions(100) if d["size"])
    assert decisions[102][0] == "skipped" and decisions[102][1].startswith("copied_by_peer")
    assert decisions[106][0] == "copied"
    b.poll_once()
    assert copies(h) == {1: 1, 3: 1}


def test_a_start_on_an_adopted_replica_sends_nothing_for_a_trade_etcd_has(h: Harness, pair: Any) -> None:
    """The replica was taken between the old holder's decision and its order: the decision is pending with no
    order. The old holder's order left (its key is in etcd). The new holder's bot starts with a valid lease:
    nothing for that trade is sent, not even by the start's resolution of open decisions."""
    etcd, p, s = pair
    nodes = {"primary": p, "standby": s}
    hold(h, etcd, nodes, "primary")
    a = bot(h, "primary")
    trade(h, 1, ago=5)
    a.poll_once()
    assert copies(h) == {1: 1}
    snapshot(h.tmp / "primary.db", h.tmp / "standby.db")
    with contextlib.closing(sqlite3.connect(h.tmp / "standby.db")) as db, db:  # as if before the order
        db.execute("DELETE FROM orders")
        db.execute("UPDATE decisions SET decision='pending', reason=''")
    hold(h, etcd, nodes, "standby")
    b = bot(h, "standby")
    b.warm_up()  # as run() does before its first poll
    b.poll_once()
    assert copies(h) == {1: 1}
    assert h.decisions(b)[0] == ("skipped", "copied_by_peer: primary")


def test_promotion_waits_for_the_records_of_etcd(h: Harness, pair: Any) -> None:
    """While the copied keys cannot be read (etcd without a majority, the keeper busy), a node that holds a
    valid lease file stays passive: nothing is sent on a ledger that may not know the last copies."""
    etcd, p, s = pair
    hold(h, etcd, {"primary": p, "standby": s}, "standby")
    etcd.down = True
    b = bot(h, "standby")
    trade(h, 1, ago=5)
    b.poll_once()
    assert copies(h) == {} and server.health(b)[1]["role"] == "passive"
    etcd.down = False
    b.poll_once()
    assert copies(h) == {1: 1} and server.health(b)[1]["role"] == "active"


def test_fence_socket_refuses_other_users_and_bad_requests(h: Harness, pair: Any) -> None:
    etcd, p, _s = pair
    from polymarket_bot.fence import Fence, FenceError
    fence = Fence(h.tmp / "fence-primary.sock")
    with pytest.raises(FenceError, match="does not hold"):
        fence.record("k", 60)                        # nobody holds the key yet
    hold(h, etcd, {"primary": p, "standby": _s}, "primary")
    for bad in ({"op": "record", "key": "", "ttl": 60}, {"op": "record", "key": "a\nb", "ttl": 60},
                {"op": "record", "key": "k", "ttl": True}, {"op": "record", "key": "k", "ttl": 10**9},
                {"op": "drop"}):
        with pytest.raises(FenceError):
            fence._ask(bad)
    assert etcd.copied() == []
    p.fence.uids = {12345}
    with pytest.raises(FenceError, match="refused: not polymarket-bot or root"):
        fence.record("k", 60)
    assert etcd.copied() == []
    assert oct((h.tmp / "fence-primary.sock").stat().st_mode & 0o777) == "0o660"
    json.dumps(fence.last_ms)
