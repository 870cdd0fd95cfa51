"""Outside review of validate-config, prune and URL settings (issue 7, items 8, 9, 11).

The xfail markers name the defect; the owners remove them with the fix.
"""

from __future__ import annotations

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
