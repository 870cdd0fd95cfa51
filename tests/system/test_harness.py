"""The harness itself: a container boots systemd, and the chroot is fenced."""

from pathlib import Path

from tests.system import harness


def test_container_boots_systemd_with_private_network(container: harness.Container) -> None:
    assert container.sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")
    links = container.sh("ip -o link show").stdout
    assert "lo" in links and "eth0" not in links
    assert container.sh("systemctl is-active ssh").stdout.strip() == "active"


def test_chroot_runs_in_its_own_network_namespace(tree: Path) -> None:
    before = harness.host_sysctls(["net.ipv4.ip_forward"])
    out = harness.chroot_sh(tree, "ischroot; echo rc=$?; cat /etc/debian_version; sysctl -qw net.ipv4.ip_forward=1")
    assert "rc=0" in out.stdout
    # The tree is the suite POLYMARKET_TEST_SUITE chose (trixie is 13, bookworm 12).
    assert out.stdout.splitlines()[1].split(".")[0] == {"trixie": "13", "bookworm": "12"}[harness.SUITE]
    assert harness.host_sysctls(["net.ipv4.ip_forward"]) == before
