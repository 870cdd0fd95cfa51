"""Unit tests of polymarket-compliance's functions (/usr/sbin/polymarket-compliance of polymarket-hardening,
loaded by tests.payload): the score, report rotation, the ufw controls. The .deb's content: tests/package."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests import payload


def compliance_module() -> ModuleType:
    return payload.compliance()


def test_compliance_score_ignores_not_applicable() -> None:
    mod = compliance_module()
    c = mod.Control
    controls = [c("a", "a", "1", "1", mod.Status.PASS), c("b", "b", "1", "0", mod.Status.FAIL),
                c("c", "c", "1", "-", mod.Status.NA, "container")]  # fmt: skip
    assert mod.score(controls) == 50.0
    text = mod.to_text(controls, mod.Config(threshold=95, keep=3), "now")
    assert "failing controls: b" in text and "NOT COMPLIANT" in text


def test_reports_are_rotated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = compliance_module()
    monkeypatch.setattr(mod, "REPORT_DIR", tmp_path / "compliance")
    monkeypatch.setattr(mod, "OLD_REPORT_DIR", tmp_path / "old-compliance")
    controls = [mod.Control("a", "a", "1", "1", mod.Status.PASS)]
    cfg = mod.Config(threshold=95, keep=2)
    for stamp in ("20260101T060000Z", "20260102T060000Z", "20260103T060000Z"):
        mod.write_reports(controls, cfg, stamp, stamp)
    names = sorted(p.name for p in (tmp_path / "compliance").iterdir())
    assert names == [
        "compliance-20260102T060000Z.json", "compliance-20260102T060000Z.txt",
        "compliance-20260103T060000Z.json", "compliance-20260103T060000Z.txt",
        "latest.json", "latest.txt",
    ]  # fmt: skip
    assert '"time": "20260103T060000Z"' in (tmp_path / "compliance" / "latest.json").read_text()


UFW_STATUS = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     LIMIT IN    Anywhere                   # polymarket-hardening
80/tcp                     ALLOW IN    Anywhere                   # polymarket-hardening
443/tcp                    ALLOW IN    Anywhere                   # polymarket-hardening
8080/tcp                   ALLOW IN    Anywhere
9090/tcp                   ALLOW IN    10.1.0.0/16                # polymarket-hardening
9100/tcp                   ALLOW IN    10.1.0.0/16                # polymarket-hardening
22/tcp (v6)                LIMIT IN    Anywhere (v6)              # polymarket-hardening
"""


def test_ufw_controls_name_a_world_open_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = compliance_module()
    monkeypatch.setattr(mod, "run", lambda argv: (0, UFW_STATUS))
    controls = {c.id: c for c in mod.check_ufw({"ALLOW_USERS": "admin", "ADMIN_NETWORK": "10.1.0.0/16"})}
    status = {cid: c.status.value for cid, c in controls.items()}
    assert status == {
        "ufw.status": "pass", "ufw.default-incoming": "pass", "ufw.default-outgoing": "pass",
        "ufw.ssh-limit": "pass", "ufw.allow-80": "pass", "ufw.allow-443": "pass",
        "ufw.8080-not-public": "fail", "ufw.8080-admin": "fail",
        "ufw.9090-not-public": "pass", "ufw.9090-admin": "pass",
        "ufw.9100-not-public": "pass", "ufw.9100-admin": "pass",
    }  # fmt: skip
    assert "ufw.8080-not-public" in mod.CRITICAL
