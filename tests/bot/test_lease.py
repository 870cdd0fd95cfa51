"""The trading lease of polymarket-ha (issue 11): with LEASE_FILE set, an order leaves only while the
lease names this node, is of this boot and its CLOCK_BOOTTIME deadline is ahead, checked right before
the order is sent. The fake exchange's order log is the truth."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import Harness
from polymarket_bot import server


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def write_lease(path: Path, holder: str, seconds_left: float, boot: str | None = None) -> None:
    deadline = time.clock_gettime(time.CLOCK_BOOTTIME) + seconds_left
    path.write_text(json.dumps({"holder": holder, "deadline": deadline, "clock": "CLOCK_BOOTTIME",
                                "boot_id": boot if boot is not None else boot_id(), "ttl": 6}))


def test_no_order_without_a_valid_lease_for_this_node(h: Harness) -> None:
    lease = h.tmp / "lease"
    e = h.engine(LEASE_FILE=lease, LEASE_NODE="primary")
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()                                             # no lease file at all
    write_lease(lease, "standby", 5)
    h.trade(ago=4, transactionHash="0x2")
    e.poll_once()                                             # the peer holds it
    write_lease(lease, "primary", -0.1)
    h.trade(ago=3, transactionHash="0x3")
    e.poll_once()                                             # ours, but expired
    write_lease(lease, "primary", 5, boot="another-boot")
    h.trade(ago=3, transactionHash="0x3b")
    e.poll_once()                                             # ours, from before a reboot
    lease.write_text("{not json")
    h.trade(ago=3, transactionHash="0x3c")
    e.poll_once()
    assert h.ex.s.orders == []
    assert server.health(e)[1]["role"] == "passive"
    write_lease(lease, "primary", 5)
    h.trade(ago=2, transactionHash="0x4")
    e.poll_once()
    assert len(h.ex.s.orders) == 1                            # held and valid: trades
    assert server.health(e)[1]["role"] == "active"


def test_the_lease_is_checked_again_right_before_the_order_leaves(h: Harness) -> None:
    lease = h.tmp / "lease"
    e = h.engine(LEASE_FILE=lease, LEASE_NODE="primary")
    write_lease(lease, "primary", 5)
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()
    assert len(h.ex.s.orders) == 1
    # Valid when the poll starts, expired by the time the order is signed and about to leave: the order
    # book answers late (a slow exchange, or this process stopped between the two).
    write_lease(lease, "primary", 0.4)
    h.ex.add_fault("/book", "hold", 1, 0.8)
    h.trade(ago=2, transactionHash="0x2")
    e.poll_once()
    assert len(h.ex.s.orders) == 1
    assert ("skipped", "no_lease: the lease expired") in [(d, r[:27]) for d, r in h.decisions(e)]
    assert e.metrics.get("polymarket_trades_skipped_total", reason="no_lease") == 1


def test_without_lease_file_nothing_changes(h: Harness) -> None:
    e = h.engine()
    h.trade(ago=2, transactionHash="0x1")
    e.poll_once()
    assert len(h.ex.s.orders) == 1
