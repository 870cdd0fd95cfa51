"""DB_PATH has one owner (issue 8): ``polymarket-bot config get KEY`` prints what the service resolves, and
validate-config (the unit's ExecStartPre) refuses a ledger that is not a file directly in /var/lib/polymarket.

polymarket-ha and polymarket-backup, root, ask ``config get DB_PATH`` and act on that file: it must never
name a place outside the bot's state directory, nor a subdirectory of it (the bot's user owns the directory and
could swap the subdirectory for a link between root's check and root's write), nor a link it planted, and
no secret may ever come out of it. Run as the CLI runs, in a child process; the state directory is moved
into tmp_path through $POLYMARKET_STATE_DIRECTORY, or left at its real default where the test says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KEY, ROOT

PKG = ROOT / "packages" / "polymarket-bot"


def cli(env_file: Path, *args: str, state: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    e = {"PATH": os.environ["PATH"], "PYTHONPATH": str(PKG), "LC_ALL": "C.UTF-8", **env}
    if state is not None:
        e["POLYMARKET_STATE_DIRECTORY"] = state
    return subprocess.run([sys.executable, "-m", "polymarket_bot", "--config", str(env_file), *args],
                          capture_output=True, text=True, env=e, timeout=60, stdin=subprocess.DEVNULL)


def env_file(tmp: Path, text: str) -> Path:
    p = tmp / "env"
    p.write_text(text)
    p.chmod(0o600)
    return p


def one_error(r: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    return errors[0]


def test_config_get_prints_what_the_service_resolves(tmp_path: Path) -> None:
    state = tmp_path / "lib"
    f = env_file(tmp_path, f"# a comment\nDB_PATH=\"{state}/alt-ledger.db\"  # moved\nFIXED_AMOUNT_USD=12.5\n"
                           f"COPY_LEADERS=0x{'A' * 40}, 0x{'1' * 40}\n")  # fmt: skip
    assert cli(f, "config", "get", "DB_PATH", state=str(state)).stdout == f"{state}/alt-ledger.db\n"
    assert cli(f, "config", "get", "FIXED_AMOUNT_USD").stdout == "12.5\n"
    assert cli(f, "config", "get", "COPY_LEADERS").stdout == f"0x{'a' * 40},0x{'1' * 40}\n"
    assert cli(f, "config", "get", "TRADING_MODE").stdout == "dry-run\n"  # the default
    assert cli(f, "config", "get", "FIXED_AMOUNT_USD", FIXED_AMOUNT_USD="7").stdout == "7\n"  # as run: env wins
    # Without the override, the real default state directory and DB_PATH.
    assert cli(env_file(tmp_path, ""), "config", "get", "DB_PATH").stdout == "/var/lib/polymarket/trade_history.db\n"


@pytest.mark.parametrize("key", ["PRIVATE_KEY", "API_SECRET_KEY", "ENCRYPTION_KEY"])
def test_config_get_never_prints_a_secret(tmp_path: Path, key: str) -> None:
    f = env_file(tmp_path, f"PRIVATE_KEY={KEY}\nAPI_SECRET_KEY=tok-{'x' * 40}\nENCRYPTION_KEY=enc-{'y' * 40}\n")
    r = cli(f, "config", "get", key)
    assert r.stdout == "" and f"config get: {key} is a secret, never printed" in one_error(r)
    assert KEY[2:] not in r.stderr and "x" * 40 not in r.stderr and "y" * 40 not in r.stderr


def test_config_get_refuses_an_unknown_key_and_a_key_in_a_free_form_setting(tmp_path: Path) -> None:
    f = env_file(tmp_path, f"ENVIRONMENT={KEY[2:]}\n")
    r = cli(f, "config", "get", "NO_SUCH_KEY")
    assert r.stdout == "" and "'NO_SUCH_KEY' is not a setting" in one_error(r)
    r = cli(f, "config", "get", "ENVIRONMENT")  # a wallet key pasted into the wrong setting
    assert r.stdout == "" and KEY[2:] not in r.stderr and "64 hex digits" in one_error(r)


@pytest.mark.parametrize("db", ["/var/tmp/ledger.db", "/var/lib/polymarket", "/var/lib/polymarket/../x/l.db",
                                "/var/lib/polymarket-ha/replica/trade_history.db", "/var/lib/polymarketx/l.db",
                                "/var/lib/polymarket/alt/ledger.db", "/var/lib/polymarket/a/b/l.db"])
def test_a_db_path_not_directly_in_the_state_directory_is_refused_by_both(tmp_path: Path, db: str) -> None:
    f = env_file(tmp_path, f"DB_PATH={db}\n")
    for args in (("validate-config",), ("config", "get", "DB_PATH")):
        r = cli(f, *args)
        assert r.stdout == "" and f"DB_PATH: {db} is not a file directly in /var/lib/polymarket" in one_error(r), args


def test_a_subdirectory_is_refused_even_when_it_is_a_plain_directory_today(tmp_path: Path) -> None:
    """The bot's user owns the state directory: a subdirectory, plain at the check, may be a link at root's
    write; and one already swapped is refused too, nothing written where it points."""
    state, elsewhere = tmp_path / "lib", tmp_path / "etc"
    (state / "plain").mkdir(parents=True)
    elsewhere.mkdir()
    (state / "alt").symlink_to(elsewhere)
    for sub in ("plain", "alt"):
        f = env_file(tmp_path, f"DB_PATH={state}/{sub}/ledger.db\n")
        for args in (("validate-config",), ("config", "get", "DB_PATH")):
            r = cli(f, *args, state=str(state))
            assert "is not a file directly in" in one_error(r) and r.stdout == "", (sub, args)
    assert list(elsewhere.iterdir()) == []


def test_a_state_directory_reached_through_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "lib").symlink_to(real)
    f = env_file(tmp_path, f"DB_PATH={tmp_path}/lib/ledger.db\n")
    r = cli(f, "config", "get", "DB_PATH", state=str(tmp_path / "lib"))
    assert "leads through a symbolic link" in one_error(r) and r.stdout == ""


def test_validate_config_accepts_a_db_path_directly_in_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "lib"
    state.mkdir()
    r = cli(env_file(tmp_path, f"DB_PATH={state}/alt-ledger.db\n"), "validate-config", state=str(state))
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    # Set in the service's environment instead (a drop-in): the helpers would not see it, and are told so.
    r = cli(env_file(tmp_path, ""), "validate-config", state=str(state), DB_PATH=f"{state}/alt-ledger.db")
    assert r.returncode == 0 and "warning: DB_PATH: set in the environment" in r.stderr
