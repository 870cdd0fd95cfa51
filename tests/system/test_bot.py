"""polymarket-bot installed from its .deb in a booted trixie container.

The fake exchange (the package's own polymarket_bot.fake_exchange) runs in
the same container on 127.0.0.1, as a transient systemd unit; the bot is the
real service under systemd, with its real unit and sandbox.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system.conftest import deb
from tests.system.harness import Container

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
LEADER = "0x" + "ab" * 20
FAKE = "http://127.0.0.1:8900"
TOKEN = "dashboard-test-token"


def wait(pred: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def http_code(c: Container, url: str, *headers: str) -> str:
    hdr = " ".join(f"-H '{h}'" for h in headers)
    return c.sh(f"curl -s -o /dev/null -w '%{{http_code}}' {hdr} {url}", check=False).stdout.strip()


def fake(c: Container, path: str, body: dict[str, object] | None = None) -> object:
    if body is None:
        out = c.sh(f"curl -sf {FAKE}{path}").stdout
    else:
        out = c.sh(f"curl -sf -X POST --data-binary @- {FAKE}{path}", input=json.dumps(body)).stdout
    return json.loads(out)


def orders(c: Container) -> list[object]:
    result = fake(c, "/_control/orders")
    assert isinstance(result, list)
    return result


def sql(c: Container, query: str) -> str:
    return c.sh(f'sqlite3 /var/lib/polymarket/trade_history.db "{query}"').stdout.strip()


@pytest.fixture
def bot(container: Container, dist: Path) -> Container:
    container.install_debs([deb(dist, "polymarket-bot")])
    return container


def configure_for_fake(c: Container) -> None:
    """Point the installed bot at the fake exchange, live mode, one leader."""
    c.sh(
        "systemd-run --unit=fake-exchange --property=Restart=on-failure "
        "python3 -m polymarket_bot.fake_exchange --port 8900 --demo"
    )
    wait(lambda: http_code(c, f"{FAKE}/time") == "200", what="the fake exchange")
    me = c.sh(
        "python3 -c 'from polymarket_bot import crypto; from polymarket_bot.secrets import Secret; "
        f'print(crypto.address_of(Secret("{KEY}")))\''
    ).stdout.strip()
    fake(c, "/_control/balance", {"address": me, "usd": 5000})
    settings = {
        "PRIVATE_KEY": KEY,
        "TRADING_MODE": "live",
        "COPY_LEADERS": LEADER,
        "POLYMARKET_DATA_API_URL": FAKE,
        "POLYMARKET_CLOB_URL": FAKE,
        "POLYMARKET_GAMMA_URL": FAKE,
        "API_SECRET_KEY": TOKEN,
        "POLL_INTERVAL": "0.2",
        "STOP_LOSS_PERCENTAGE": "0",
    }
    # Edit the conffile in place, as an operator would: owner and mode stay.
    script = "; ".join(f"sed -i '/^{k}=/d' /etc/polymarket/.env" for k in settings)
    c.sh(script)
    c.sh("cat >> /etc/polymarket/.env", input="".join(f"{k}={v}\n" for k, v in settings.items()))
    c.sh("systemctl restart polymarket-bot")
    wait(lambda: http_code(c, "http://127.0.0.1:8080/health") == "200", what="/health 200")


def test_installs_as_a_sandboxed_service_with_the_plans_layout(bot: Container) -> None:
    c = bot
    wait(lambda: c.sh("systemctl is-active polymarket-bot", check=False).stdout.strip() == "active", what="active")
    stat = c.sh("stat -c '%n %a %U %G' /etc/polymarket /etc/polymarket/.env /var/lib/polymarket /var/log/polymarket")
    assert stat.stdout.split("\n")[:4] == [
        "/etc/polymarket 750 root polymarket-bot",
        "/etc/polymarket/.env 600 polymarket-bot polymarket-bot",
        "/var/lib/polymarket 750 polymarket-bot polymarket-bot",
        "/var/log/polymarket 750 polymarket-bot polymarket-bot",
    ]
    user = c.sh("getent passwd polymarket-bot").stdout.strip().split(":")
    assert user[6] == "/usr/sbin/nologin"
    assert "sudo" not in c.sh("id -nG polymarket-bot").stdout.split()
    assert c.sh("dpkg-query -W -f='${Conffiles}' polymarket-bot").stdout.strip().startswith("/etc/polymarket/.env ")
    # Listens on loopback only by default.
    wait(lambda: ":8080" in c.sh("ss -Hltn").stdout, what="the dashboard listener")
    listening = c.sh("ss -Hltn").stdout
    assert re.search(r"127\.0\.0\.1:8080\b", listening) and not re.search(r"(0\.0\.0\.0|\*|\[::\]):8080\b", listening)
    exposure = c.sh("systemd-analyze security polymarket-bot.service --no-pager").stdout
    level = float(re.search(r"Overall exposure level for polymarket-bot\.service: ([0-9.]+)", exposure).group(1))  # type: ignore[union-attr]
    assert level <= 2.0, exposure[-3000:]
    # The prune job is scheduled.
    assert c.sh("systemctl is-enabled polymarket-bot-prune.timer").stdout.strip() == "enabled"


def test_a_leader_buy_becomes_one_accepted_order_and_survives_restart(bot: Container) -> None:
    c = bot
    configure_for_fake(c)
    health = json.loads(c.sh("curl -s http://127.0.0.1:8080/health").stdout)
    assert health["mode"] == "live"
    fake(c, "/_control/trade", {"proxyWallet": LEADER, "side": "BUY", "asset": "1001", "size": 40, "price": 0.5})
    wait(lambda: len(orders(c)) == 1, what="the copied order at the fake exchange")
    order = orders(c)[0]
    assert isinstance(order, dict)
    wait(lambda: sql(c, "select count(*) from orders where status != 'sending'") == "1", what="the ledger row")
    assert sql(c, "select count(*) from leader_trades") == "1"
    assert sql(c, "select decision from decisions") == "copied"
    # Restart mid-stream: no duplicate order, no second ledger row.
    c.sh("systemctl restart polymarket-bot")
    wait(lambda: http_code(c, "http://127.0.0.1:8080/health") == "200", what="/health after restart")
    time.sleep(2)
    assert len(orders(c)) == 1
    assert sql(c, "select count(*) from leader_trades") == "1"
    assert sql(c, "select count(*) from orders") == "1"
    # A second trade after the restart is copied: the high-water mark moved on, not past it.
    fake(c, "/_control/trade", {"proxyWallet": LEADER, "side": "BUY", "asset": "1001", "size": 20, "price": 0.5})
    wait(lambda: len(orders(c)) == 2, what="the second order")
    # The key never reaches the journal.
    journal = c.sh("journalctl -u polymarket-bot --no-pager -o cat").stdout
    assert KEY[2:] not in journal and KEY[2:].upper() not in journal
    logfile = c.sh("cat /var/log/polymarket/bot.log").stdout
    assert "listening on" in logfile and KEY[2:] not in logfile


def test_dashboard_pages_need_the_token(bot: Container) -> None:
    c = bot
    configure_for_fake(c)
    assert http_code(c, "http://127.0.0.1:8080/system") == "401"
    assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "200"
    assert http_code(c, "http://127.0.0.1:8080/system", "Authorization: Bearer wrong") == "401"


def test_purge_removes_data_remove_keeps_it(bot: Container) -> None:
    c = bot
    wait(lambda: c.sh("test -e /var/lib/polymarket/trade_history.db", check=False).returncode == 0, what="ledger")
    c.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y polymarket-bot")
    assert c.sh("test -e /var/lib/polymarket/trade_history.db", check=False).returncode == 0
    assert c.sh("test -e /etc/polymarket/.env", check=False).returncode == 0
    c.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-bot")
    for path in ("/var/lib/polymarket", "/etc/polymarket/.env", "/var/log/polymarket"):
        assert c.sh(f"test -e {path}", check=False).returncode != 0, f"{path} survived purge"
