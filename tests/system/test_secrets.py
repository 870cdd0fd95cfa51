"""polymarket-bot's secrets at rest, in a booted trixie container: encrypted systemd credentials.

What an outsider sees: the bytes of /etc/polymarket/credentials/*.cred and of .env on disk, the
service's answers (/health mode, /system behind the token) and the orders the fake exchange
accepted, signed by the wallet whose key exists only as a credential.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.harness import Container
from tests.system.test_backup import require_restic

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
HEX = KEY[2:]
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"  # of KEY
TOKEN = "dashboard-secret-token-0123456789"
LEADER = "0x" + "ab" * 20
FAKE = "http://127.0.0.1:8900"
CRED = "/etc/polymarket/credentials"
SETTINGS = {
    "TRADING_MODE": "live", "COPY_LEADERS": LEADER, "POLYMARKET_DATA_API_URL": FAKE,
    "POLYMARKET_CLOB_URL": FAKE, "POLYMARKET_GAMMA_URL": FAKE, "POLL_INTERVAL": "0.2",
    "STOP_LOSS_PERCENTAGE": "0",
}


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


def health(c: Container) -> dict[str, object]:
    out = c.sh("curl -s http://127.0.0.1:8080/health", check=False).stdout
    try:
        result = json.loads(out)
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}


def orders(c: Container) -> list[dict[str, object]]:
    result = json.loads(c.sh(f"curl -sf {FAKE}/_control/orders").stdout)
    assert isinstance(result, list)
    return result


def set_env(c: Container, settings: dict[str, str]) -> None:
    """Edit the conffile in place, as an operator would: owner and mode stay."""
    c.sh("; ".join(f"sed -i '/^{k}=/d' /etc/polymarket/.env" for k in settings))
    c.sh("cat >> /etc/polymarket/.env", input="".join(f"{k}={v}\n" for k, v in settings.items()))


def start_fake_exchange(c: Container) -> None:
    c.sh("systemd-run --unit=fake-exchange --property=Restart=on-failure "
         "python3 -m polymarket_bot.fake_exchange --port 8900 --demo")
    wait(lambda: http_code(c, f"{FAKE}/time") == "200", what="the fake exchange")
    c.sh(f"curl -sf -X POST --data-binary @- {FAKE}/_control/balance",
         input=json.dumps({"address": ADDRESS, "usd": 5000}))


def restart_and_wait(c: Container, mode: str) -> None:
    c.sh("systemctl reset-failed polymarket-bot")  # the unit's start limit is 5 in 5 minutes; tests restart more
    c.sh("systemctl restart polymarket-bot")
    wait(lambda: health(c).get("mode") == mode, what=f"/health mode {mode}")


def assert_no_plaintext_on_disk(c: Container, *values: str) -> None:
    for path in (c.path("/etc/polymarket/.env"), *sorted(c.path(CRED).iterdir())):
        data = path.read_bytes()
        for v in values:
            assert v.encode() not in data and v.upper().encode() not in data, f"{v[:6]}... in {path}"


def a_copied_order_is_signed_by_the_wallet(c: Container) -> None:
    c.sh(f"curl -sf -X POST --data-binary @- {FAKE}/_control/trade",
         input=json.dumps({"proxyWallet": LEADER, "side": "BUY", "asset": "1001", "size": 40, "price": 0.5}))
    wait(lambda: len(orders(c)) >= 1, what="the copied order at the fake exchange")
    order = orders(c)[-1]["order"]
    assert isinstance(order, dict) and str(order["maker"]).lower() == ADDRESS.lower()


@pytest.fixture
def bot(container: Container, dist: Path) -> Container:
    container.install_debs([deb(dist, "polymarket-bot")])
    return container


def test_secret_set_from_stdin_reaches_the_service_and_only_ciphertext_is_on_disk(bot: Container) -> None:
    c = bot
    start_fake_exchange(c)
    set_env(c, SETTINGS)
    # Not provisioned: the unit starts anyway (dry-run, dashboard pages refused).
    restart_and_wait(c, "dry-run")
    assert c.sh("systemctl is-active polymarket-bot").stdout.strip() == "active"
    assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "401"

    c.sh("polymarket-bot secret set PRIVATE_KEY", input=KEY + "\n")
    r = c.sh("polymarket-bot secret set API_SECRET_KEY", input=TOKEN)
    assert TOKEN not in r.stdout + r.stderr
    assert c.sh(f"stat -c '%a %U %G' {CRED} {CRED}/PRIVATE_KEY.cred").stdout.split("\n")[:2] == [
        "700 root root", "600 root root"]
    assert_no_plaintext_on_disk(c, HEX, TOKEN)
    listing = c.sh("polymarket-bot secret list").stdout
    assert HEX not in listing and TOKEN not in listing and ADDRESS in listing

    restart_and_wait(c, "live")  # live needs the key: the credential reached the process
    assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "200"
    a_copied_order_is_signed_by_the_wallet(c)
    # Not in the unit's environment, the process's environment or the journal.
    pid = c.sh("systemctl show -P MainPID polymarket-bot").stdout.strip()
    assert HEX not in c.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout
    assert HEX not in c.sh("systemctl show polymarket-bot").stdout
    assert HEX not in c.sh("journalctl --no-pager -o cat").stdout
    assert c.sh("polymarket-bot validate-config").returncode == 0


def test_upgrade_and_restart_move_plaintext_secrets_out_of_the_env_file(bot: Container) -> None:
    c = bot
    start_fake_exchange(c)
    # An env file of the release before: the secrets in plaintext.
    set_env(c, {**SETTINGS, "PRIVATE_KEY": KEY, "API_SECRET_KEY": TOKEN})
    c.sh("chmod 600 /etc/polymarket/.env")
    before = c.path("/etc/polymarket/.env").read_text()
    # The upgrade: the package's postinst runs "configure" with the version before.
    out = c.sh("DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold /var/cache/polymarket-test/polymarket-bot_*.deb")
    assert HEX not in out.stdout + out.stderr and TOKEN not in out.stdout + out.stderr
    after = c.path("/etc/polymarket/.env").read_text()
    assert_no_plaintext_on_disk(c, HEX, TOKEN)
    assert c.sh("stat -c '%a %U %G' /etc/polymarket/.env").stdout.strip() == "600 polymarket-bot polymarket-bot"
    # The rest of the file is kept, line for line; the secrets' lines are blank.
    changed = {"PRIVATE_KEY": "PRIVATE_KEY=", "API_SECRET_KEY": "API_SECRET_KEY="}
    expect = [changed.get(line.split("=")[0], line) for line in before.splitlines()]
    assert [line for line in after.splitlines() if not line.startswith("# ") or line in before] == expect
    restart_and_wait(c, "live")
    assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "200"
    a_copied_order_is_signed_by_the_wallet(c)
    # Idempotent: a second configure changes nothing.
    creds = {p.name: p.read_bytes() for p in c.path(CRED).iterdir()}
    c.sh("dpkg-reconfigure -f noninteractive polymarket-bot")
    assert c.path("/etc/polymarket/.env").read_text() == after
    assert {p.name: p.read_bytes() for p in c.path(CRED).iterdir()} == creds

    # Later, an operator pastes a secret into the env file and restarts: moved before the start.
    set_env(c, {"ENCRYPTION_KEY": "pasted-encryption-key-42"})
    restart_and_wait(c, "live")
    assert_no_plaintext_on_disk(c, "pasted-encryption-key-42")
    assert (c.path(CRED) / "ENCRYPTION_KEY.cred").exists()
    # One that differs from its credential is never overwritten: it stays, the credential is used,
    # and the migration unit fails where systemctl --failed shows it.
    set_env(c, {"API_SECRET_KEY": "another-token-9876543210"})
    restart_and_wait(c, "live")
    assert "API_SECRET_KEY=another-token-9876543210" in c.path("/etc/polymarket/.env").read_text()
    assert c.sh("systemctl is-failed polymarket-bot-secrets", check=False).stdout.strip() == "failed"
    assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "200"


def test_credentials_of_another_host_key_stop_the_start_until_re_provisioned(bot: Container) -> None:
    """A restore onto a new host: the .cred files came back, the host key did not."""
    c = bot
    c.sh("polymarket-bot secret set API_SECRET_KEY", input=TOKEN)
    restart_and_wait(c, "dry-run")
    assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "200"
    c.sh("rm /var/lib/systemd/credential.secret")  # the new host's key differs
    r = c.sh("polymarket-bot secret list", check=False)
    assert r.returncode == 4 and "undecryptable" in r.stdout and "secret set API_SECRET_KEY" in r.stdout
    c.sh("systemctl restart polymarket-bot", check=False)
    wait(lambda: c.sh("systemctl is-failed polymarket-bot", check=False).stdout.strip() in ("failed", "activating"),
         what="the refused start")
    assert http_code(c, "http://127.0.0.1:8080/health") == "000"
    assert "status=243/CREDENTIALS" in c.sh("journalctl -u polymarket-bot --no-pager -o cat").stdout
    c.sh("polymarket-bot secret set API_SECRET_KEY", input=TOKEN)
    restart_and_wait(c, "dry-run")
    assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "200"


def test_in_an_autoinstall_chroot_the_migration_waits_for_the_first_start(tree: Path, dist: Path) -> None:
    package = deb(dist, "polymarket-bot")
    (tree / "var/cache/polymarket-test").mkdir(parents=True, exist_ok=True)
    (tree / "var/cache/polymarket-test" / package.name).write_bytes(package.read_bytes())
    harness.chroot_sh(tree, "DEBIAN_FRONTEND=noninteractive apt-get install -y "
                            f"/var/cache/polymarket-test/{package.name}")
    # late-commands write the wallet key into the env file (the old way)
    env = tree / "etc/polymarket/.env"
    env.write_text(env.read_text() + f"PRIVATE_KEY={KEY}\nAPI_SECRET_KEY={TOKEN}\n")
    assert not (tree / "var/lib/systemd/credential.secret").exists()  # no host key made in the chroot
    c = Container(tree, "pmsecchroot")
    try:
        c.start()
        wait(lambda: health(c).get("mode") == "dry-run", what="the first start")  # TRADING_MODE stays dry-run
        assert_no_plaintext_on_disk(c, HEX, TOKEN)
        assert sorted(p.name for p in c.path(CRED).iterdir()) == ["API_SECRET_KEY.cred", "PRIVATE_KEY.cred"]
        assert http_code(c, "http://127.0.0.1:8080/system", f"Authorization: Bearer {TOKEN}") == "200"
        assert ADDRESS in c.sh("polymarket-bot secret list").stdout
    finally:
        c.stop()


def test_a_backup_of_etc_polymarket_holds_only_ciphertext_and_no_host_key(container: Container, dist: Path) -> None:
    c = container
    require_restic(c)
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-backup")])
    c.sh("polymarket-bot secret set PRIVATE_KEY", input=KEY)
    set_env(c, {"API_SECRET_KEY": TOKEN})  # and one left in plaintext by hand, moved at the next start
    restart_and_wait(c, "dry-run")
    c.sh("polymarket-backup backup")
    restic = ("restic --no-cache -r /var/backups/polymarket/restic "
              "--password-file /etc/polymarket-backup/repository-password")
    files = c.sh(f"{restic} ls latest").stdout.split()
    assert f"{CRED}/PRIVATE_KEY.cred" in files and f"{CRED}/API_SECRET_KEY.cred" in files
    assert not [f for f in files if "credential.secret" in f]  # the host key stays on the host
    saved = c.sh(f"{restic} dump latest {CRED}/PRIVATE_KEY.cred").stdout
    assert saved.encode() == c.path(f"{CRED}/PRIVATE_KEY.cred").read_bytes()
    for path in ("/etc/polymarket/.env", f"{CRED}/PRIVATE_KEY.cred", f"{CRED}/API_SECRET_KEY.cred"):
        data = c.sh(f"{restic} dump latest {path}").stdout
        assert HEX not in data and HEX.upper() not in data and TOKEN not in data, path
