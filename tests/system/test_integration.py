"""The packages together on one node: the bot's /compliance page shows the
report that polymarket-hardening's daily audit writes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.system.conftest import deb
from tests.system.harness import Container
from tests.system.test_bot import TOKEN, wait


def test_compliance_report_reaches_the_dashboard(container: Container, dist: Path) -> None:
    c = container
    c.install_debs([deb(dist, "polymarket-hardening"), deb(dist, "polymarket-bot")])
    c.sh(f"sed -i 's/^API_SECRET_KEY=.*/API_SECRET_KEY={TOKEN}/' /etc/polymarket/.env")
    c.sh("systemctl restart polymarket-bot")
    # The audit as the timer runs it: the real unit, with its sandbox.
    c.sh("systemctl start polymarket-compliance.service", check=False)
    report = json.loads(c.sh("cat /var/lib/polymarket-hardening/compliance/latest.json").stdout)
    assert c.sh("stat -c '%a %U %G' /var/lib/polymarket-hardening/compliance/latest.json").stdout.split() == [
        "640",
        "root",
        "polymarket-bot",
    ]
    # With the bot installed, the env file controls are live and pass.
    env = {ctl["id"]: ctl for ctl in report["controls"]}["files.env"]
    assert env["status"] == "pass", env
    wait(lambda: "8080" in c.sh("ss -Hltn").stdout, what="the dashboard")
    page = c.sh(f"curl -sf -H 'Authorization: Bearer {TOKEN}' http://127.0.0.1:8080/compliance").stdout
    assert str(report["score"]) in page or f"{report['score']:g}" in page, page[:500]
