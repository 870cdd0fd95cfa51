"""Outside review of validate-config, prune and URL settings (issue 7, items 8, 9, 11).

Each was an xfail(strict) naming the defect until the fix.
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


@pytest.mark.parametrize("url", ["http://[::1", "http://[]:80", "http://[::1]x:80"])
def test_attack_broken_ipv6_url_is_one_line_naming_file_line_and_key(tmp_path: Path, url: str) -> None:
    env = write(tmp_path, f"POLYMARKET_CLOB_URL={url}\nFIXED_AMOUNT_USD=0\n")
    with pytest.raises(ConfigError) as exc:
        config.load(env, {})
    ps = list(exc.value.problems)
    assert len(ps) == 2, ps
    assert ps[0].startswith(f"{env}:1: POLYMARKET_CLOB_URL: "), ps
    assert ps[1].startswith(f"{env}:2: FIXED_AMOUNT_USD: "), ps


def test_attack_prune_without_a_ledger_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "lib" / "polymarket" / "trade_history.db"
    env = write(tmp_path, f"DB_PATH={db}\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = run_cli("--config", str(env), "prune", "--days", "90")
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, (r.returncode, r.stdout, r.stderr)


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


def test_attack_url_with_userinfo_is_refused_not_silently_stripped(tmp_path: Path) -> None:
    """The client sends no credentials from a URL: 'user:pass@' would be dropped without a word."""
    env = write(tmp_path, "POLYMARKET_CLOB_URL=https://alice:hunter2@clob.example:443\n")
    with pytest.raises(ConfigError) as exc:
        config.load(env, {})
    ps = list(exc.value.problems)
    assert len(ps) == 1 and ps[0].startswith(f"{env}:1: POLYMARKET_CLOB_URL: ") and "user:password@" in ps[0], ps
    assert "hunter2" not in ps[0], ps
