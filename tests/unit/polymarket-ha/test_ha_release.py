"""A planned switchover hands the trading lease over at once (issue 11, "Done means": rolling upgrade).

The lease keeper that stops cleanly writes "nobody" into its lease file, records in etcd that it gave its lease
up (only while the leader key is still its own) and revokes it; the peer's keeper that takes the key and finds
that very lease released needs no TTL wait. A key that vanished any other way (expired: the holder died or was
cut off) still makes the new holder wait TTL since it last saw the old key.
"""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests import payload


@pytest.fixture
def ha() -> ModuleType:
    return payload.ha()


class MiniEtcd:
    """The few calls of the lease keeper, on one in-memory key space (leases, txn compares on VALUE and LEASE)."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[str, str]] = {}  # key -> (value, lease)
        self.leases: set[str] = set()
        self.ids = itertools.count(100)
        self.revision = 1

    def expire(self, lease: str) -> None:
        self.leases.discard(lease)
        self.kv = {k: v for k, v in self.kv.items() if v[1] != lease}

    def _range(self, key: str) -> dict[str, Any]:
        if key not in self.kv:
            return {"response_range": {"kvs": []}}
        value, lease = self.kv[key]
        return {"response_range": {"kvs": [{"key": key, "value": value, "lease": lease}]}}

    def _holds(self, c: dict[str, Any]) -> bool:
        got = self.kv.get(c["key"])
        if c["target"] == "CREATE":
            return bool((got is None) == (c["create_revision"] == "0"))
        if c["target"] == "VALUE":
            return got is not None and got[0] == c["value"]
        if c["target"] == "LEASE":
            return got is not None and got[1] == c["lease"]
        raise AssertionError(c)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/v3/lease/grant":
            lease = str(next(self.ids))
            self.leases.add(lease)
            return {"ID": lease, "TTL": str(body["TTL"])}
        if path == "/v3/lease/revoke":
            self.expire(str(body["ID"]))
            return {}
        if path == "/v3/lease/timetolive":  # etcd: TTL -1 for a lease it does not know (expired, revoked)
            return {"ID": body["ID"], "TTL": "5" if body["ID"] in self.leases else "-1"}
        if path == "/v3/lease/keepalive":
            return {"ID": body["ID"], "TTL": "6" if body["ID"] in self.leases else "0"}
        if path == "/v3/kv/range":
            found: dict[str, Any] = self._range(body["key"])["response_range"]
            return found
        if path == "/v3/kv/txn":
            ok = all(self._holds(c) for c in body["compare"])
            self.revision += 1
            out: list[dict[str, Any]] = []
            for op in body.get("success" if ok else "failure", []):
                if "requestPut" in op:
                    put = op["requestPut"]
                    self.kv[put["key"]] = (put["value"], str(put.get("lease", "0")))
                    out.append({"response_put": {}})
                else:
                    out.append(self._range(op["requestRange"]["key"]))
            return {"header": {"revision": str(self.revision)}, "succeeded": ok, "responses": out}
        raise AssertionError(path)


def record(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def holder_of(etcd: MiniEtcd, ha: ModuleType) -> str:
    got = etcd.kv.get(base64.b64encode(ha.LEADER_KEY.encode()).decode())
    return base64.b64decode(got[0]).decode() if got else ""


def pair(ha: ModuleType, tmp_path: Path) -> tuple[MiniEtcd, Any, Any]:
    etcd = MiniEtcd()
    primary = ha.LeaseKeeper("primary", etcd, tmp_path / "primary.lease")
    standby = ha.LeaseKeeper("standby", etcd, tmp_path / "standby.lease")
    primary.other_seen -= ha.LEASE_TTL  # started long ago: valid at once
    primary.step()
    assert record(tmp_path / "primary.lease")["deadline"] > 0
    standby.step()  # sees the primary's key: a follower
    assert record(tmp_path / "standby.lease")["holder"] == "primary"
    return etcd, primary, standby


def test_a_released_lease_is_taken_over_at_once(ha: ModuleType, tmp_path: Path) -> None:
    etcd, primary, standby = pair(ha, tmp_path)
    primary.release()  # systemctl stop polymarket-ha-lease (polymarket-ha switchover)
    assert record(tmp_path / "primary.lease")["holder"] == ""
    assert holder_of(etcd, ha) == ""
    standby.step()
    taken = record(tmp_path / "standby.lease")
    assert holder_of(etcd, ha) == "standby"
    assert taken["holder"] == "standby" and taken["deadline"] > ha.boottime(), taken  # no TTL wait


def test_a_lease_etcd_expired_is_taken_over_without_a_second_wait(ha: ModuleType, tmp_path: Path) -> None:
    """The holder died (no release): etcd expires its lease TTL after the last keepalive it received, after the
    holder's own deadline (counted from when it sent that keepalive). The new holder trades at once."""
    etcd, primary, standby = pair(ha, tmp_path)
    etcd.expire(primary.lease_id)
    standby.step()
    taken = record(tmp_path / "standby.lease")
    assert holder_of(etcd, ha) == "standby"
    assert taken["deadline"] > ha.boottime(), taken


def test_a_key_deleted_while_its_lease_lives_makes_the_new_holder_wait(ha: ModuleType, tmp_path: Path) -> None:
    """The key gone while its lease still runs (deleted by hand): the old holder's deadline may be ahead."""
    etcd, primary, standby = pair(ha, tmp_path)
    del etcd.kv[base64.b64encode(ha.LEADER_KEY.encode()).decode()]
    standby.step()
    taken = record(tmp_path / "standby.lease")
    assert holder_of(etcd, ha) == "standby"
    assert taken["deadline"] == 0 and taken["waiting_until"] > ha.boottime(), taken
    assert primary.lease_id in etcd.leases


def test_etcd_unable_to_say_makes_the_new_holder_wait(ha: ModuleType, tmp_path: Path) -> None:
    etcd, primary, standby = pair(ha, tmp_path)
    etcd.expire(primary.lease_id)
    real = etcd.call

    def failing(path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/v3/lease/timetolive":
            raise ha.HAError("etcd: timed out")
        return real(path, body)

    etcd.call = failing  # type: ignore[method-assign]
    standby.step()
    taken = record(tmp_path / "standby.lease")
    assert holder_of(etcd, ha) == "standby" and taken["deadline"] == 0, taken


def test_a_release_of_another_lease_does_not_count(ha: ModuleType, tmp_path: Path) -> None:
    """An old release (an earlier switchover's lease) in etcd, then the key goes under a live lease: a wait."""
    etcd, _primary, standby = pair(ha, tmp_path)
    etcd.kv[base64.b64encode(ha.RELEASED_KEY.encode()).decode()] = (base64.b64encode(b"42").decode(), "0")
    del etcd.kv[base64.b64encode(ha.LEADER_KEY.encode()).decode()]
    standby.step()
    assert record(tmp_path / "standby.lease")["deadline"] == 0


def test_a_keeper_that_lost_the_key_records_no_release(ha: ModuleType, tmp_path: Path) -> None:
    """The primary's lease expired and the standby took the key; the primary stopping now writes nothing that
    could let a third campaign skip its wait (the compare: the key still under its own lease)."""
    etcd, primary, standby = pair(ha, tmp_path)
    stale = primary.lease_id
    etcd.expire(stale)
    standby.step()
    primary.release()  # it still believes it holds lease `stale`
    assert base64.b64encode(ha.RELEASED_KEY.encode()).decode() not in etcd.kv
    assert holder_of(etcd, ha) == "standby"


def test_the_keeper_records_its_generation_before_its_first_valid_deadline(ha: ModuleType, tmp_path: Path) -> None:
    """The leader key's create revision (the txn's header revision): what a promotion compares with a replica's."""
    etcd, primary, standby = pair(ha, tmp_path)
    taken_at = etcd.revision
    assert (tmp_path / "primary.lease.generation").read_text() == "2\n"  # the first txn: revision 2
    assert not (tmp_path / "standby.lease.generation").exists()
    primary.release()
    standby.step()
    assert record(tmp_path / "standby.lease")["deadline"] > 0
    assert int((tmp_path / "standby.lease.generation").read_text()) > taken_at


def test_a_campaign_that_saw_its_own_lease_takes_no_shortcut(ha: ModuleType, tmp_path: Path) -> None:
    """A campaign retried after a timeout can find its own first attempt as the holder (and revoke that lease):
    its own lease gone says nothing about the other holder's deadline: the wait stays."""
    etcd, primary, standby = pair(ha, tmp_path)
    standby.other_lease, standby.other_holder = "999", "standby"  # what such a retry leaves
    del etcd.kv[base64.b64encode(ha.LEADER_KEY.encode()).decode()]
    standby.step()
    taken = record(tmp_path / "standby.lease")
    assert holder_of(etcd, ha) == "standby" and taken["deadline"] == 0, taken
    assert primary.lease_id in etcd.leases
