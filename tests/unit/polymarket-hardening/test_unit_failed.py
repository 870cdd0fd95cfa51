"""polymarket-hardening's unit-failed (what polymarket-failure@.service runs): counts, the textfile for the node
exporter, and the names a non-root user could plant on the way (files and directories in tmp_path stand in
for /var/lib/polymarket-hardening/unit-failures and /var/lib/prometheus/node-exporter)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests import payload


def mod() -> ModuleType:
    return payload.load("polymarket-hardening", "unit-failed")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    state, text = tmp_path / "state", tmp_path / "node-exporter"
    state.mkdir()
    text.mkdir()
    return state, text


def prom(text: Path) -> str:
    return (text / "polymarket-failures.prom").read_text()


def test_counts_per_unit_and_writes_a_valid_textfile(dirs: tuple[Path, Path]) -> None:
    state, text = dirs
    m = mod()
    assert m.count("polymarket-backup.service", 1000.0, str(state), str(text)) == (1, "", "")
    assert m.count("polymarket-backup.service", 2000.0, str(state), str(text))[0] == 2
    assert m.count("polymarket-bot.service", 3000.0, str(state), str(text))[0] == 1
    out = prom(text)
    assert 'polymarket_unit_failures_total{unit="polymarket-backup.service"} 2\n' in out
    assert 'polymarket_unit_failures_total{unit="polymarket-bot.service"} 1\n' in out
    assert 'polymarket_unit_last_failure_timestamp_seconds{unit="polymarket-backup.service"} 2000\n' in out
    assert oct((text / "polymarket-failures.prom").stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in text.iterdir()) == ["polymarket-failures.prom"]   # no temporary left
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: make test-deps")
    check = subprocess.run([promtool, "check", "metrics"], input=out, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_escaped_unit_name_keeps_the_textfile_valid(dirs: tuple[Path, Path]) -> None:
    """systemd escapes some characters of a unit name as \\xNN; the format wants the backslash doubled, or the
    node exporter drops the whole file (every unit's count with it)."""
    state, text = dirs
    m = mod()
    m.count("polymarket-backup.service", 1.0, str(state), str(text))
    m.count("polymarket-ha\\x2dx.service", 2.0, str(state), str(text))
    out = prom(text)
    assert 'unit="polymarket-ha\\\\x2dx.service"} 1' in out
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: make test-deps"
    check = subprocess.run([promtool, "check", "metrics"], input=out, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_symlink_planted_as_the_textfile_is_replaced_not_followed(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    state, text = dirs
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    (text / "polymarket-failures.prom").symlink_to(victim)
    assert mod().count("polymarket-ha-replicate.service", 1.0, str(state), str(text))[2] == ""
    assert victim.read_text() == "root's file\n"
    assert not (text / "polymarket-failures.prom").is_symlink() and "polymarket-ha-replicate" in prom(text)


def test_a_symlinked_textfile_directory_is_refused_but_the_failure_still_counted(tmp_path: Path) -> None:
    state, elsewhere = tmp_path / "state", tmp_path / "etc"
    state.mkdir()
    elsewhere.mkdir()
    (tmp_path / "prometheus").mkdir()
    link = tmp_path / "prometheus" / "node-exporter"
    link.symlink_to(elsewhere)
    n, _, error = mod().count("polymarket-backup.service", 1.0, str(state), str(link))
    assert n == 1 and "not written" in error and "symlink" in error
    assert list(elsewhere.iterdir()) == []
    assert json.loads((state / "counts.json").read_text())["units"]["polymarket-backup.service"]["failures"] == 1


def test_no_textfile_directory_counts_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    n, note, error = mod().count("polymarket-backup.service", 1.0, str(state), str(tmp_path / "absent"))
    assert (n, error) == (1, "") and "does not exist" in note


def test_a_damaged_state_file_starts_afresh(dirs: tuple[Path, Path]) -> None:
    state, text = dirs
    (state / "counts.json").write_text('{"units": {"x\\n} 9": {"failures": 1, "last": 0}}}')
    n, note, _ = mod().count("polymarket-backup.service", 1.0, str(state), str(text))
    assert n == 1 and "not valid" in note and "x\n" not in prom(text)


def _fail_many(state: str, text: str) -> None:
    m = mod()
    for _ in range(20):
        m.count("polymarket-backup.service", 1.0, state, text)


def test_concurrent_handlers_lose_no_failure(dirs: tuple[Path, Path]) -> None:
    state, text = dirs
    procs = [multiprocessing.get_context("fork").Process(target=_fail_many, args=(str(state), str(text)))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert 'polymarket_unit_failures_total{unit="polymarket-backup.service"} 80\n' in prom(text)


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["../../etc/passwd"], ["bad name.service"],
                                  ['x"} 1\nevil.service'], ["polymarket-backup"]])
def test_bad_argument_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert mod().main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_result_from_systemd_monitor_variables() -> None:
    how = mod().result_of("polymarket-backup.service", {"MONITOR_SERVICE_RESULT": "exit-code",
                                                        "MONITOR_EXIT_CODE": "exited", "MONITOR_EXIT_STATUS": "1"})
    assert how == "result=exit-code exit-code=exited status=1"
    assert os.sep not in how
