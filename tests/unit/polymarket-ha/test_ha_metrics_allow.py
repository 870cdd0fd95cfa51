"""polymarket-ha/metrics_allow (issue 10): HAProxy's exporter for a monitoring host of its own.

Empty (the default, polymarket-monitoring on the lb): the exporter listens on the lb's loopback only, as
before. Set: it also listens on the lb's own address, HAProxy denies every other source, and the firewall
opens 8405/tcp to those addresses only (tagged polymarket-ha, removed when the answer is emptied). The
firewall runs here against a fake ufw that keeps its rules in a file (never this machine's ufw).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests import payload

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "packages" / "polymarket-ha" / "polymarket_ha.py"
FIREWALL = REPO / "packages" / "polymarket-ha" / "firewall"
LB = 'ROLE="lb"\nOWN_ADDRESS="192.168.1.102"\nBACKENDS="192.168.1.100 192.168.1.101"\n'


def ha() -> ModuleType:
    return payload.ha()


def metrics_frontend(cfg: str) -> list[str]:
    """The lines of haproxy.cfg's frontend polymarket_metrics (up to the next blank line)."""
    start = cfg.index("frontend polymarket_metrics\n")
    return cfg[start:].split("\n\n", 1)[0].splitlines()


def haproxy_check(cfg: str, tmp_path: Path) -> None:
    """haproxy -c on the rendered file, when haproxy is installed on this machine (it is not by default: the
    text is asserted in any case)."""
    if shutil.which("haproxy") is None:
        return
    path = tmp_path / "haproxy.cfg"
    path.write_text("defaults\n    timeout connect 3s\n    timeout client 30s\n    timeout server 30s\n" + cfg)
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_without_metrics_allow_the_exporter_is_on_the_loopback_only(tmp_path: Path) -> None:
    mod = ha()
    cfg = mod.render_haproxy(mod.parse_settings(LB + 'METRICS_ALLOW=""\n'))
    assert metrics_frontend(cfg) == [
        "frontend polymarket_metrics",
        "    bind 127.0.0.1:8405",
        "    mode http",
        "    timeout client 30s",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    http-request deny",
    ]
    assert cfg == mod.render_haproxy(mod.parse_settings(LB))  # no METRICS_ALLOW line: the same file
    haproxy_check(cfg, tmp_path)


def test_metrics_allow_binds_the_own_address_for_those_sources_only(tmp_path: Path) -> None:
    mod = ha()
    cfg = mod.render_haproxy(mod.parse_settings(LB + 'METRICS_ALLOW="192.168.1.103  2001:DB8::5"\n'))
    assert metrics_frontend(cfg) == [
        "frontend polymarket_metrics",
        "    bind 127.0.0.1:8405",
        "    bind 192.168.1.102:8405",
        "    mode http",
        "    timeout client 30s",
        "    acl metrics_allowed src 127.0.0.1 192.168.1.103 2001:db8::5",
        # the deny comes first: a source not listed gets 403, /metrics included
        "    http-request deny unless metrics_allowed",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    http-request deny",
    ]
    # the traffic frontends are the same as without it
    plain = mod.render_haproxy(mod.parse_settings(LB))
    assert cfg.split("# HAProxy's own")[0] == plain.split("# HAProxy's own")[0]
    assert cfg.split("\nbackend polymarket_bots")[1] == plain.split("\nbackend polymarket_bots")[1]
    haproxy_check(cfg, tmp_path)


def check_value(question: str, value: str) -> subprocess.CompletedProcess[str]:
    """check-value as the config script and the postinst run it."""
    return subprocess.run([sys.executable, str(SCRIPT), "check-value", question, value],
                          capture_output=True, text=True, check=False)  # fmt: skip


@pytest.mark.parametrize("value", ["", "192.168.1.103", "192.168.1.103 10.0.0.7 2001:db8::5"])
def test_good_metrics_allow_answers(value: str) -> None:
    proc = check_value("metrics_allow", value)
    assert proc.returncode == 0 and proc.stderr == "", proc


@pytest.mark.parametrize("value", [
    "192.168.1.103\n10.0.0.7",  # a newline (or any control character) is refused, not made a space
    "192.168.1.103\t10.0.0.7",
    "192.168.1.103\x1b[2J",
    "a b;c",
    "300.1.1.1",
    "192.168.1.103 300.1.1.1",
    "192.168.1.0/24",  # addresses, not networks
    "192.168.1.103,10.0.0.7",
    "fe80::1%eth0",
    "-h",
    "10.0.0.7 src 0.0.0.0/0",
])  # fmt: skip
def test_bad_metrics_allow_answers_are_one_line(value: str) -> None:
    proc = check_value("metrics_allow", value)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "\x1b" not in proc.stderr and "\t" not in proc.stderr


@pytest.mark.parametrize("line", ['METRICS_ALLOW="300.1.1.1"', 'METRICS_ALLOW="a b;c"',
                                  'METRICS_ALLOW="10.0.0.7\x1b"'])  # fmt: skip
def test_a_bad_hand_edited_metrics_allow_is_refused(line: str) -> None:
    mod = ha()
    with pytest.raises(mod.HAError) as err:
        mod.parse_settings(LB + line + "\n")
    assert "METRICS_ALLOW" in str(err.value) and "\n" not in str(err.value)


def test_the_postinst_writes_and_the_config_script_asks_metrics_allow() -> None:
    """The answer reaches ha.conf (postinst) and a hand edit of ha.conf goes back into debconf (config)."""
    postinst = (REPO / "debian" / "polymarket-ha.postinst").read_text()
    config = (REPO / "debian" / "polymarket-ha.config").read_text()
    templates = (REPO / "debian" / "polymarket-ha.templates").read_text()
    assert "answer metrics_allow\n" in postinst and 'METRICS_ALLOW="$metrics_allow"\n' in postinst
    assert "METRICS_ALLOW:metrics_allow" in config
    assert 'lb) questions="own_address backends metrics_allow" ;;' in config
    assert "Template: polymarket-ha/metrics_allow\nType: string\nDefault:\n" in templates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_haproxy_answers_the_listed_source_only(tmp_path: Path) -> None:
    """With haproxy on this machine (not by default: the rendered text is asserted above in any case), the
    rendered frontend run for real on loopback addresses: 127.0.0.2 is the lb's own address, 127.0.0.4 the
    listed monitoring host, 127.0.0.3 anyone else (403, /metrics included); /stats is 403 for everyone."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        return
    mod = ha()
    metrics, http = free_port(), free_port()
    cfg = mod.render_haproxy(mod.parse_settings(
        'ROLE="lb"\nOWN_ADDRESS="127.0.0.2"\nBACKENDS="127.0.0.5 127.0.0.6"\nMETRICS_ALLOW="127.0.0.4"\n'))
    cfg = cfg.replace(":8405\n", f":{metrics}\n").replace(":8080", f":{http}")
    path = tmp_path / "haproxy.cfg"
    path.write_text("defaults\n    timeout connect 3s\n    timeout client 30s\n    timeout server 30s\n" + cfg)
    proc = subprocess.Popen([haproxy, "-db", "-f", str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def status(source: str, dest: str, path: str = "/metrics") -> int:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((dest, metrics), timeout=5, source_address=(source, 0)) as s:
                    s.sendall(f"GET {path} HTTP/1.0\r\nHost: lb\r\n\r\n".encode())
                    return int(s.recv(64).split()[1])
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    try:
        assert status("127.0.0.4", "127.0.0.2") == 200
        assert status("127.0.0.1", "127.0.0.1") == 200  # the loopback, as without metrics_allow
        assert status("127.0.0.3", "127.0.0.2") == 403
        assert status("127.0.0.3", "127.0.0.1") == 403
        assert status("127.0.0.4", "127.0.0.2", "/stats") == 403
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the firewall, against a fake ufw ------------------------------------------------------------------------

FAKE_UFW = r"""#!/bin/sh
# A fake ufw: its rules, one "RULE comment 'TAG'" a line, in $UFW_STATE; an existing rule is not added twice.
case "$1" in
    status) echo "Status: active" ;;
    show) echo "Added user rules (see 'ufw status' for running firewall):"; sed 's/^/ufw /' "$UFW_STATE" ;;
    --force)
        shift 2
        rule="$*"
        grep -vxF "$rule comment 'polymarket-ha'" "$UFW_STATE" >"$UFW_STATE.new" || true
        mv "$UFW_STATE.new" "$UFW_STATE"
        ;;
    *)
        # RULE... comment TAG
        rule=$(printf '%s\n' "$*" | sed 's/ comment \([^ ]*\)$//')
        tag=$(printf '%s\n' "$*" | sed -n 's/.* comment \([^ ]*\)$/\1/p')
        # as ufw: "Skipping adding existing rule"
        grep -qxF "$rule comment '$tag'" "$UFW_STATE" || echo "$rule comment '$tag'" >>"$UFW_STATE"
        ;;
esac
"""


class Firewall:
    """packages/polymarket-ha/firewall run with this test's ha.conf, a fake ufw and not in a chroot."""

    def __init__(self, tmp_path: Path) -> None:
        self.conf = tmp_path / "ha.conf"
        self.state = tmp_path / "ufw-rules"
        self.state.write_text("allow 22/tcp comment 'admin'\n")  # someone else's rule: never touched
        bin_ = tmp_path / "bin"
        bin_.mkdir()
        for name, text in {
            "ufw": FAKE_UFW,
            "ischroot": "#!/bin/sh\nexit 1\n",
            "systemd-detect-virt": "#!/bin/sh\nexit 1\n",
            "polymarket-ha": f'#!/bin/sh\nexec {sys.executable} {SCRIPT} "$1" --settings {self.conf} "$2"\n',
        }.items():
            (bin_ / name).write_text(text)
            (bin_ / name).chmod(0o755)
        script = FIREWALL.read_text().replace("/usr/sbin/polymarket-ha", str(bin_ / "polymarket-ha"))
        assert script.count(str(bin_ / "polymarket-ha")) >= 5
        script = script.replace("SETTINGS=/etc/polymarket-ha/ha.conf\n", f"SETTINGS={self.conf}\n", 1)
        assert str(self.conf) in script
        self.script = tmp_path / "firewall"
        self.script.write_text(script)
        self.env = {"PATH": f"{bin_}:{os.environ['PATH']}", "UFW_STATE": str(self.state), "LC_ALL": "C.UTF-8"}

    def run(self, settings: str) -> subprocess.CompletedProcess[str]:
        self.conf.write_text(settings)
        return subprocess.run(["sh", str(self.script)], capture_output=True, text=True, env=self.env, check=False)

    def rules(self) -> list[str]:
        return self.state.read_text().splitlines()


ETCD = ["allow from 192.168.1.100 to any port 2379:2380 proto tcp comment 'polymarket-ha'",
        "allow from 192.168.1.101 to any port 2379:2380 proto tcp comment 'polymarket-ha'"]  # fmt: skip


def test_the_firewall_opens_8405_to_metrics_allow_only_and_closes_it_when_emptied(tmp_path: Path) -> None:
    fw = Firewall(tmp_path)
    proc = fw.run(LB + 'METRICS_ALLOW="192.168.1.103 2001:db8::5"\n')
    assert proc.returncode == 0, proc.stderr
    assert fw.rules() == ["allow 22/tcp comment 'admin'", *ETCD,
                          "allow from 192.168.1.103 to any port 8405 proto tcp comment 'polymarket-ha'",
                          "allow from 2001:db8::5 to any port 8405 proto tcp comment 'polymarket-ha'"]  # fmt: skip
    # run again (every boot): nothing added twice
    assert fw.run(LB + 'METRICS_ALLOW="192.168.1.103 2001:db8::5"\n').returncode == 0
    assert len(fw.rules()) == 5
    # one address dropped: its rule goes, the other stays
    assert fw.run(LB + 'METRICS_ALLOW="192.168.1.103"\n').returncode == 0
    assert fw.rules() == ["allow 22/tcp comment 'admin'", *ETCD,
                          "allow from 192.168.1.103 to any port 8405 proto tcp comment 'polymarket-ha'"]  # fmt: skip
    # a bad hand edit: one error line, the rules in place untouched
    bad = fw.run(LB + 'METRICS_ALLOW="300.1.1.1"\n')
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and len(fw.rules()) == 4, bad.stderr
    # emptied: port 8405 closed again, the etcd rules and the admin's rule stay
    assert fw.run(LB + 'METRICS_ALLOW=""\n').returncode == 0
    assert fw.rules() == ["allow 22/tcp comment 'admin'", *ETCD]


def test_the_firewall_of_an_lb_without_metrics_allow_opens_no_8405(tmp_path: Path) -> None:
    fw = Firewall(tmp_path)
    assert fw.run(LB).returncode == 0
    assert fw.rules() == ["allow 22/tcp comment 'admin'", *ETCD]


def test_a_node_opens_its_bot_port_to_the_lb_whose_haproxy_checks_it(tmp_path: Path) -> None:
    """HAProxy on the lb (the witness) checks /health and forwards to port 8080 of both nodes: opened to it, not
    only to the peer (an lb outside polymarket-hardening's admin_network saw no bot at all)."""
    fw = Firewall(tmp_path)
    node = ('ROLE="primary"\nOWN_ADDRESS="192.168.1.100"\nPEER_ADDRESS="192.168.1.101"\n'
            'VIRTUAL_IP="192.168.1.10/24"\nINTERFACE="enp1s0"\nROUTER_ID="51"\nWITNESS_ADDRESS="192.168.1.102"\n')
    proc = fw.run(node)
    assert proc.returncode == 0, proc.stderr
    assert "allow from 192.168.1.102 to any port 8080 proto tcp comment 'polymarket-ha'" in fw.rules()
    assert "allow from 192.168.1.101 to any port 8080 proto tcp comment 'polymarket-ha'" in fw.rules()


# -- the config script, with a fake debconf (answers in a file, nobody to ask: noninteractive) ----------------

FAKE_CONFMODULE = r"""# A fake /usr/share/debconf/confmodule: answers in $FAKE_DEBCONF (QUESTION=VALUE, the last one
# wins), no frontend (db_input returns 30, as noninteractive does).
db_get() { RET=$(sed -n "s|^$1=||p" "$FAKE_DEBCONF" | tail -n 1); }
db_set() { printf '%s=%s\n' "$1" "$2" >>"$FAKE_DEBCONF"; }
db_input() { return 30; }
db_go() { :; }
db_subst() { :; }
db_fset() { :; }
"""


class ConfigScript:
    """debian/polymarket-ha.config run with this test's ha.conf, debconf answers and polymarket-ha (``old``: one
    from before metrics_allow, which knows neither the key nor the question: exit 2, as argparse's usage)."""

    def __init__(self, tmp_path: Path, *, old: bool = False) -> None:
        self.conf = tmp_path / "ha.conf"
        self.db = tmp_path / "debconf"
        bin_ = tmp_path / "bin"
        bin_.mkdir()
        refuse = ('case "$*" in *METRICS_ALLOW*|*metrics_allow*) echo "error: unknown key" >&2; exit 2;; esac\n'
                  if old else "")  # fmt: skip
        wrapper = bin_ / "polymarket-ha"
        wrapper.write_text(f'#!/bin/sh\n{refuse}if [ "$1" = get ]; then shift; '
                           f'exec {sys.executable} {SCRIPT} get --settings {self.conf} "$@"; fi\n'
                           f'exec {sys.executable} {SCRIPT} "$@"\n')  # fmt: skip
        wrapper.chmod(0o755)
        (tmp_path / "confmodule").write_text(FAKE_CONFMODULE)
        script = (REPO / "debian" / "polymarket-ha.config").read_text()
        for old_text, new_text in (("/usr/share/debconf/confmodule", str(tmp_path / "confmodule")),
                                   ("SETTINGS=/etc/polymarket-ha/ha.conf\n", f"SETTINGS={self.conf}\n"),
                                   ("POLYMARKET_HA=/usr/sbin/polymarket-ha\n", f"POLYMARKET_HA={wrapper}\n")):
            assert script.count(old_text) == 1, old_text
            script = script.replace(old_text, new_text)
        self.script = tmp_path / "config"
        self.script.write_text(script)
        self.env = {"PATH": f"{bin_}:{os.environ['PATH']}", "FAKE_DEBCONF": str(self.db), "LC_ALL": "C.UTF-8"}

    def run(self, settings: str, answers: dict[str, str]) -> subprocess.CompletedProcess[str]:
        self.conf.write_text(settings)
        self.db.write_text("".join(f"polymarket-ha/{q}={v}\n" for q, v in answers.items()))
        return subprocess.run(["sh", str(self.script)], capture_output=True, text=True, env=self.env, check=False)

    def answer(self, question: str) -> str:
        found = [line.split("=", 1)[1] for line in self.db.read_text().splitlines()
                 if line.startswith(f"polymarket-ha/{question}=")]  # fmt: skip
        return found[-1] if found else ""


LB_ANSWERS = {"role": "lb", "own_address": "192.168.1.102", "backends": "192.168.1.100 192.168.1.101"}


def test_the_config_script_takes_a_hand_edited_metrics_allow_back(tmp_path: Path) -> None:
    config = ConfigScript(tmp_path)
    proc = config.run(LB + 'METRICS_ALLOW="192.168.1.103"\n', LB_ANSWERS)
    assert proc.returncode == 0, proc.stderr
    assert config.answer("metrics_allow") == "192.168.1.103"


@pytest.mark.parametrize("bad", ["a b;c", "300.1.1.1", "192.168.1.103 192.168.1.0/24"])
def test_the_config_script_refuses_a_bad_metrics_allow_with_one_line(tmp_path: Path, bad: str) -> None:
    proc = ConfigScript(tmp_path).run(LB, {**LB_ANSWERS, "metrics_allow": bad})
    assert proc.returncode == 1, proc
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: metrics_allow"), proc.stderr


def test_an_upgrades_preconfigure_with_the_old_polymarket_ha_does_not_fail(tmp_path: Path) -> None:
    """Before an upgrade's unpack the config script runs with the installed polymarket-ha, which knows no
    METRICS_ALLOW (get exits 2): skipped, not a failed preconfigure; the other keys are still read back."""
    config = ConfigScript(tmp_path, old=True)
    proc = config.run(LB.replace("192.168.1.102", "192.168.1.112"), LB_ANSWERS)
    assert proc.returncode == 0, proc.stderr
    assert config.answer("own_address") == "192.168.1.112"
