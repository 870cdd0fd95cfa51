"""polymarket-backup finds the ledger by asking the bot (``polymarket-bot config get DB_PATH``, issue 8): its
answer is the ledger, and every way the question can fail is one error line and exit status 3, never a backup
that leaves the ledger out. The bot is played by a stand-in for subprocess.run (the real one: tests/system)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests import payload

ALT = "/var/lib/polymarket/alt-ledger.db"


def with_bot(monkeypatch: pytest.MonkeyPatch, answer: Callable[..., Any]) -> ModuleType:
    mod = payload.backup()
    fake = SimpleNamespace(run=answer, DEVNULL=subprocess.DEVNULL, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(mod, "subprocess", fake)
    return mod


def says(stdout: str, stderr: str = "", code: int = 0) -> Callable[..., Any]:
    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        assert argv == ["polymarket-bot", "config", "get", "DB_PATH"]
        assert kw["timeout"] == 30 and set(kw["env"]) == {"PATH", "LC_ALL"}  # a deadline; no DB_PATH of ours
        return subprocess.CompletedProcess(argv, code, stdout, stderr)
    return run


def test_the_ledger_is_the_bots_db_path(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = with_bot(monkeypatch, says(f"{ALT}\n"))
    assert mod.ledger_path(mod.Config()) == Path(ALT)


@pytest.mark.parametrize(("answer", "needle"), [
    (says("", "error: environment: DB_PATH: /var/tmp/l.db is not a file directly in /var/lib/polymarket\n", 1),
     "DB_PATH: /var/tmp/l.db is not a file directly in /var/lib/polymarket"),
    (says("", "", 1), "exit status 1"),
    (says("relative.db\n"), "exit status 0"),
])
def test_a_refused_or_odd_answer_is_one_error(monkeypatch: pytest.MonkeyPatch, answer: Any, needle: str) -> None:
    mod = with_bot(monkeypatch, answer)
    with pytest.raises(mod.BackupError) as exc:
        mod.ledger_path(mod.Config())
    assert exc.value.code == mod.EXIT_CONFIG and "\n" not in str(exc.value)
    assert str(exc.value).startswith("cannot tell where the ledger is: polymarket-bot config get DB_PATH: ")
    assert needle in str(exc.value) and "hint" not in str(exc.value)


def test_a_missing_or_hung_bot_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(argv: list[str], **kw: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    def hung(argv: list[str], **kw: Any) -> Any:
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    for answer, needle in ((missing, "No such file or directory"), (hung, "took more than 30 s")):
        mod = with_bot(monkeypatch, answer)
        with pytest.raises(mod.BackupError, match=needle) as exc:
            mod.ledger_path(mod.Config())
        assert exc.value.code == mod.EXIT_CONFIG and "polymarket-bot installed" in exc.value.hint


def test_an_old_ledger_line_is_a_note_when_it_agrees_and_refused_when_not(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    mod = with_bot(monkeypatch, says(f"{ALT}\n"))
    conf = tmp_path / "backup.conf"
    conf.write_text(f"LEDGER={ALT}\n")
    assert mod.ledger_path(mod.load_config(conf)) == Path(ALT)
    assert "LEDGER is no longer read" in caplog.text
    conf.write_text("LEDGER=/var/lib/polymarket/trade_history.db\n")
    with pytest.raises(mod.BackupError, match=f"LEDGER=/var/lib/polymarket/trade_history.db is not the bot's "
                                              f"DB_PATH \\({ALT}\\)") as exc:
        mod.ledger_path(mod.load_config(conf))
    assert exc.value.code == mod.EXIT_CONFIG
    # The shipped backup.conf has none.
    shipped = (payload.PACKAGES / "polymarket-backup" / "backup.conf").read_text().splitlines()
    assert not [line for line in shipped if line.startswith("LEDGER")]


@pytest.mark.parametrize("answer", ["/var/lib/polymarket/alt/ledger.db", "/etc/shadow", "/var/lib/polymarket"])
def test_an_answer_not_directly_in_the_state_directory_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                  answer: str) -> None:  # fmt: skip
    """The bot's answer is not trusted: a subdirectory of its (bot-owned) state directory could be swapped for a
    link between this check and root's writes (restore's install_ledger and replace)."""
    mod = with_bot(monkeypatch, says(f"{answer}\n"))
    with pytest.raises(mod.BackupError) as exc:
        mod.ledger_path(mod.Config())
    assert exc.value.code == mod.EXIT_CONFIG and "\n" not in str(exc.value)
    assert f"answered '{answer}', not a file directly in /var/lib/polymarket" in str(exc.value)


def test_a_state_directory_reached_through_a_link_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mod = with_bot(monkeypatch, says(f"{tmp_path}/lib/ledger.db\n"))
    (tmp_path / "real").mkdir()
    (tmp_path / "lib").symlink_to(tmp_path / "real")
    monkeypatch.setattr(mod, "LEDGER_DIR", tmp_path / "lib")
    with pytest.raises(mod.BackupError, match="reached through no link") as exc:
        mod.ledger_path(mod.Config())
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(mod, "LEDGER_DIR", tmp_path / "real")  # the same answer, no link: taken
    monkeypatch.setattr(mod, "subprocess", SimpleNamespace(
        run=says(f"{tmp_path}/real/ledger.db\n"), DEVNULL=subprocess.DEVNULL, TimeoutExpired=subprocess.TimeoutExpired))
    assert mod.ledger_path(mod.Config()) == tmp_path / "real" / "ledger.db"
