"""An outside review of "Secrets at rest" (issue 7), in a booted trixie container.

The upgrade from the release before (secrets in plaintext in the .env conffile) when the
administrator takes the package's new .env at dpkg's conffile prompt ("Y", or
--force-confnew): dpkg moves the old file to .env.dpkg-old before the postinst runs, and
``secret migrate`` looks only at .env.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.system.conftest import deb
from tests.system.harness import Container

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
HEX = KEY[2:]
TOKEN = "dashboard-secret-token-0123456789"
# The last commit whose shipped .env still held the secrets (the release before issue 7's change).
PREVIOUS_ENV_COMMIT = "3748f91^"


def previous_env() -> str:
    return subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[2]), "show",
                           f"{PREVIOUS_ENV_COMMIT}:packages/polymarket-bot/debian-overlay/env/.env"],
                          capture_output=True, text=True, check=True).stdout


def test_upgrade_taking_the_new_conffile_still_moves_the_secrets_into_credentials(
        container: Container, dist: Path) -> None:
    c = container
    new = deb(dist, "polymarket-bot")
    c.install_debs([new])  # the dependencies, and the .deb in /var/cache/polymarket-test
    # The release before: same payload, version 0.9.0, the .env it shipped.
    c.sh(f"rm -rf /root/old && dpkg-deb -R /var/cache/polymarket-test/{new.name} /root/old && "
         "sed -i 's/^Version: .*/Version: 0.9.0/' /root/old/DEBIAN/control")
    c.sh("cat > /root/old/etc/polymarket/.env", input=previous_env())
    c.sh("dpkg-deb -b /root/old /root/old.deb >/dev/null && dpkg --purge polymarket-bot && "
         "DEBIAN_FRONTEND=noninteractive dpkg -i /root/old.deb")
    # The operator of that release put the secrets where it said.
    c.sh(f"sed -i 's/^PRIVATE_KEY=.*/PRIVATE_KEY={KEY}/; s/^API_SECRET_KEY=.*/API_SECRET_KEY={TOKEN}/' "
         "/etc/polymarket/.env")
    c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg -i --force-confnew /var/cache/polymarket-test/{new.name}")
    listing = c.sh("polymarket-bot secret list").stdout
    left = c.sh(f"grep -rlI -e {HEX} -e {TOKEN} /etc/polymarket", check=False).stdout.split()
    assert left == [], f"plaintext secrets left in {left}"
    assert "PRIVATE_KEY     credential" in listing and "API_SECRET_KEY  credential" in listing, listing
