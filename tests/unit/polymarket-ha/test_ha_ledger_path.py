"""polymarket-ha finds the ledger by asking the bot (``polymarket-bot config get DB_PATH``, issue 8) before a
replication or a promotion: its answer is the ledger, a failure is one error line (HAError) and nothing is sent
or promoted. The bot is played by a stand-in for polymarket_ha.run (the real one: tests/system/test_db_path.py)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import payload

ALT = "/var/lib/polymarket/alt-ledger.db"


def test_the_ledger_is_the_bots_db_path_with_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    ha = payload.ha()
    asked: list[tuple[list[str], dict[str, Any]]] = []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        asked.append((argv, kw))
        return subprocess.CompletedProcess(argv, 0, f"{ALT}\n", "")

    monkeypatch.setattr(ha, "run", run)
    assert ha.ledger_path() == Path(ALT)
    assert asked == [(["polymarket-bot", "config", "get", "DB_PATH"], {"cwd": "/", "timeout": 30})]


@pytest.mark.parametrize(("outcome", "needle"), [
    (subprocess.CompletedProcess([], 1, "", "error: DB_PATH: /srv/l is not a file directly in /var/lib/polymarket\n"),
     "DB_PATH: /srv/l is not a file directly in /var/lib/polymarket"),
    (subprocess.TimeoutExpired(["polymarket-bot"], 30), "took more than 30 s"),
    (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
    (subprocess.CompletedProcess([], 0, "\n", ""), "no path"),
])
def test_a_failed_lookup_is_one_error_and_nothing_is_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          outcome: Any, needle: str) -> None:  # fmt: skip
    ha = payload.ha()

    def run(argv: list[str], **kw: Any) -> Any:
        if argv[0] != "polymarket-bot":
            pytest.fail(f"ran {argv} after the ledger lookup failed")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(ha, "run", run)
    with pytest.raises(ha.HAError) as exc:
        ha.ledger_path()
    assert str(exc.value).startswith("cannot tell where the ledger is: polymarket-bot config get DB_PATH: ")
    assert needle in str(exc.value) and "\n" not in str(exc.value) and "hint" not in str(exc.value)
    # replicate on the active node stops there: no snapshot, no rsync (run fails the test if called).
    monkeypatch.setattr(ha, "settings_for_timer", lambda name: argparse.Namespace(ha_node=True, role="primary"))
    monkeypatch.setattr(ha, "vrrp_state", lambda: "MASTER")
    monkeypatch.setattr(ha, "holds_vip", lambda s: True)
    with pytest.raises(ha.HAError, match=needle):
        ha.cmd_replicate(argparse.Namespace(full=False))


@pytest.mark.parametrize("answer", ["/var/lib/polymarket/alt/ledger.db", "/etc/shadow", "/var/lib/polymarket"])
def test_an_answer_not_directly_in_the_state_directory_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                  answer: str) -> None:  # fmt: skip
    """The bot's answer is not trusted: a subdirectory of its (bot-owned) state directory could be swapped for a
    link between this check and root's writes (promotion's staged file and rename)."""
    ha = payload.ha()
    monkeypatch.setattr(ha, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 0, f"{answer}\n", ""))
    with pytest.raises(ha.HAError) as exc:
        ha.ledger_path()
    assert "\n" not in str(exc.value)
    assert f"the bot answered '{answer}': not a file directly in /var/lib/polymarket" in str(exc.value)


def test_a_state_directory_reached_through_a_link_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ha = payload.ha()
    (tmp_path / "real").mkdir()
    (tmp_path / "lib").symlink_to(tmp_path / "real")
    monkeypatch.setattr(ha, "LEDGER_DIR", tmp_path / "lib")
    monkeypatch.setattr(ha, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 0, f"{tmp_path}/lib/l.db", ""))
    with pytest.raises(ha.HAError, match="reached through no link"):
        ha.ledger_path()
    monkeypatch.setattr(ha, "LEDGER_DIR", tmp_path / "real")
    monkeypatch.setattr(ha, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 0, f"{tmp_path}/real/l.db", ""))
    assert ha.ledger_path() == tmp_path / "real" / "l.db"
