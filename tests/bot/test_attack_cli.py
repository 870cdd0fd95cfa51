"""Outside review of validate-config, prune and URL settings (issue 7, items 8, 9, 11).

The xfail markers name the defect; the owners remove them with the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from polymarket_bot import config
from polymarket_bot.errors import ConfigError
from test_config_cli import run_cli, write


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "issue 7 item 11 (review): _url lets urlsplit's ValueError escape for a broken IPv6 literal "
    "('http://[::1', 'http://[]:80'), so load() stops at the first one: validate-config prints "
    "'error: ValueError: Invalid IPv6 URL' without file, line or key, and hides every other problem "
    "(README: 'error: FILE:LINE: KEY: ...')."))
@pytest.mark.parametrize("url", ["http://[::1", "http://[]:80", "http://[::1]x:80"])
def test_attack_broken_ipv6_url_is_one_line_naming_file_line_and_key(tmp_path: Path, url: str) -> None:
    env = write(tmp_path, f"POLYMARKET_CLOB_URL={url}\nFIXED_AMOUNT_USD=0\n")
    with pytest.raises(ConfigError) as exc:
        config.load(env, {})
    ps = list(exc.value.problems)
    assert len(ps) == 2, ps
    assert ps[0].startswith(f"{env}:1: POLYMARKET_CLOB_URL: "), ps
    assert ps[1].startswith(f"{env}:2: FIXED_AMOUNT_USD: "), ps


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "issue 7 items 8/9 (review): prune opens the ledger with Ledger(), which mkdirs DB_PATH's "
    "directories and creates and migrates the database. 'sudo polymarket-bot prune' on a host whose "
    "service has not created its ledger yet leaves a root-owned 0644 trade_history.db that the "
    "service (User=polymarket-bot) cannot write: the crash loop item 8 fixed for validate-config."))
def test_attack_prune_without_a_ledger_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "lib" / "polymarket" / "trade_history.db"
    env = write(tmp_path, f"DB_PATH={db}\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = run_cli("--config", str(env), "prune", "--days", "90")
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, (r.returncode, r.stdout, r.stderr)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "issue 7 item 8 (review): check_ledger_path calls Path.exists(), which raises PermissionError "
    "when a directory on the way cannot be searched (e.g. /var/lib/polymarket 0700 root after a "
    "restore). validate-config, the unit's ExecStartPre, then prints 'error: PermissionError: [Errno "
    "13] ...' without 'DB_PATH:' or a hint (README: 'error: DB_PATH: ...' when not readable/writable)."))
@pytest.mark.parametrize("under", ["ledger.db", "sub/ledger.db"])
def test_attack_db_path_under_an_unsearchable_directory_is_a_db_path_error(under: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="attack-db-path-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o755)
        env = base / "env"
        env.write_text(f"DB_PATH={locked / under}\n")
        env.chmod(0o644)  # readable by the unprivileged user below
        locked.chmod(0o000)
        e = {k: v for k, v in os.environ.items() if k not in {s.key for s in config.SETTINGS}}
        e["PYTHONPATH"] = str(Path(config.__file__).resolve().parents[1])
        def drop() -> None:
            if os.geteuid() == 0:  # root searches any directory: ask as nobody
                os.setgid(65534)
                os.setuid(65534)

        r = subprocess.run([sys.executable, "-m", "polymarket_bot", "--config", str(env), "validate-config"],
                           capture_output=True, text=True, env=e, timeout=60, preexec_fn=drop,
                           stdin=subprocess.DEVNULL)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert r.returncode == 1, r.stderr
        assert errors and all(line.startswith("error: DB_PATH: ") for line in errors), r.stderr
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)
