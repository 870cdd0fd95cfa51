"""The signed apt repository end to end: apt refuses tampering; a node upgrades and rolls back.

Works with whatever polymarket-* packages dist/ holds (built by ``make build``
when it holds none).  The repository is published into a temporary copy of
the project with a throwaway development key; the real debian/changelog and
dist/repo are never touched.  The container has a private network: the
repository is served *inside* it on 127.0.0.1 with ``python3 -m http.server``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from debian.deb822 import Deb822
from debian.debian_support import Version

from tests.system import harness
from tests.system.test_backup import RESTIC_MINIMUM

PORT = 8765  # not 8080: that is the bot's DASHBOARD_PORT on the same node
URL = f"http://127.0.0.1:{PORT}/"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
EDIT = "# local edit: must survive upgrades and rollbacks"
NEW_LINE = "# changed by the new release\n"


def _builder(project: Path, *args: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        ["/usr/bin/python3", "-m", "builder", *args], cwd=project, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, env={**env, "PATH": harness.GUEST_ENV[0][5:], "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise harness.HarnessError(f"builder {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def _fields(deb: Path) -> Deb822:
    return Deb822(subprocess.run(["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, check=True).stdout)


@dataclass(frozen=True)
class Releases:
    project: Path  # the temporary copy of the project
    dist: Path
    env: dict[str, str]
    old: dict[str, str]  # package -> the version first installed
    depends: tuple[str, ...]  # what the packages need from Debian (preinstalled: no network)

    @property
    def repo(self) -> Path:
        return self.dist / "repo"

    def publish(self) -> None:
        _builder(self.project, "--dist", str(self.dist), "publish", "--url", URL, env=self.env)

    def change_source_of(self, content: bytes) -> bool:
        """Change, in the copy, every source file shipped verbatim as ``content``; say whether any was."""
        found = False
        for part in ("debian", "packages"):
            for f in (self.project / part).rglob("*"):
                if (
                    f.is_file()
                    and not f.is_symlink()
                    and f.stat().st_size == len(content)
                    and f.read_bytes() == content
                ):
                    f.write_bytes(content + NEW_LINE.encode())
                    found = True
        return found

    def release_next(self) -> dict[str, str]:
        """Bump the copy's changelog above every version, build it, publish it; return the new versions."""
        newest = max(Version(v) for v in self.old.values())
        new = f"{newest}+upgradetest1"
        _builder(self.project, "release", "--version", new, "-m", "Upgrade test.", env=self.env)
        _builder(self.project, "--dist", str(self.dist), "build", "--no-lint", *sorted(self.old), env=self.env)
        self.publish()
        return {p: _fields(self.dist / f"{p}_{new}_all.deb")["Version"] for p in self.old}


@pytest.fixture(scope="module")
def releases(rootfs: Path, dist: Path) -> Iterator[Releases]:
    newest: dict[str, Path] = {}
    for deb in sorted(dist.glob("polymarket-*_all.deb")):
        f = _fields(deb)
        if f["Package"] not in newest or Version(f["Version"]) > Version(_fields(newest[f["Package"]])["Version"]):
            newest[f["Package"]] = deb
    if not newest:
        pytest.fail(f"no polymarket-* package in {dist}")
    base = Path(tempfile.mkdtemp(prefix="pmrepo-", dir="/tmp"))  # short: gpg-agent's socket lives in the home
    try:
        project = base / "src"
        skip = {".git", ".venv", ".cache", "build", "dist", "tests"}
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*_cache", "build", "dist", "deb_dist")
        for part in sorted(harness.REPO.iterdir()):
            if part.name not in skip and part.is_dir():
                shutil.copytree(part, project / part.name, ignore=ignore)
        out = base / "dist"
        out.mkdir()
        depends: set[str] = set()
        old = {}
        for name, deb in newest.items():
            shutil.copy2(deb, out / deb.name)
            fields = _fields(deb)
            old[name] = fields["Version"]
            for dep in (fields.get("Pre-Depends", "") + "," + fields.get("Depends", "")).split(","):
                first = dep.split("|")[0].split("(")[0].strip().removesuffix(":any")
                if first and not first.startswith("polymarket-"):
                    depends.add(first)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYENV", "VIRTUAL_ENV", "PYTHON"))}
        env["POLYMARKET_DEV_GNUPGHOME"] = str(base / "gnupg")
        env.pop("SOURCE_DATE_EPOCH", None)
        r = Releases(project, out, env, old, tuple(sorted(depends)))
        r.publish()
        yield r
    finally:
        subprocess.run(["gpgconf", "--homedir", str(base / "gnupg"), "--kill", "gpg-agent"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _add_repository(uri: str) -> str:
    """The shell steps a server's operator runs, with the files publish wrote."""
    return (
        "set -e; mkdir -p /root/debian-sources /etc/apt/keyrings; "
        "for f in /etc/apt/sources.list /etc/apt/sources.list.d/debian.sources; do "
        '  [ ! -e "$f" ] || mv "$f" /root/debian-sources/; done; '  # no network to Debian in here
        f"cp /srv/repo/polymarket-archive-keyring.gpg /etc/apt/keyrings/; "
        f"sed 's|^URIs: .*|URIs: {uri}|' /srv/repo/polymarket.sources > /etc/apt/sources.list.d/polymarket.sources"
    )


def _rewrite(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data, f"{old!r} not in {path}"
    path.write_bytes(data.replace(old, new))


def test_apt_refuses_tampered_packages_and_release(releases: Releases, tree: Path) -> None:
    """In a trixie chroot (apt 3 verifies with sqv), over a file: URI."""
    srv = tree / "srv" / "repo"
    shutil.copytree(releases.repo, srv)
    harness.chroot_sh(tree, _add_repository("file:/srv/repo"))
    update = "find /var/lib/apt/lists -type f -delete; apt-get update 2>&1"
    ok = harness.chroot_sh(tree, update + " && apt-cache policy " + " ".join(releases.old))
    for name, version in releases.old.items():
        assert f"{name}:" in ok.stdout and f"Candidate: {version}" in ok.stdout, ok.stdout

    # A Packages index changed after signing: its hash no longer matches the signed Release.
    pristine = tree.parent / "pristine"
    shutil.copytree(srv, pristine)
    name = sorted(releases.old)[0]
    for idx in (srv / "dists/noble/main").glob("binary-*/Packages"):
        _rewrite(idx, f"Package: {name}\n".encode(), f"Package: {name}\nEssential: yes\n".encode())
        idx.with_suffix(".gz").unlink()
        idx.with_suffix(".xz").unlink()
    bad = harness.chroot_sh(tree, update, check=False)
    assert bad.returncode != 0, bad.stdout
    assert "Hash Sum mismatch" in bad.stdout or "File has unexpected size" in bad.stdout, bad.stdout

    # A Release changed after signing: the signature no longer verifies.
    shutil.rmtree(srv)
    shutil.copytree(pristine, srv)
    _rewrite(srv / "dists/noble/InRelease", b"Label: Polymarket Deploy", b"Label: Polymarket Dep1oy")
    _rewrite(srv / "dists/noble/Release", b"Label: Polymarket Deploy", b"Label: Polymarket Dep1oy")
    bad = harness.chroot_sh(tree, update, check=False)
    assert bad.returncode != 0, bad.stdout
    assert "not signed" in bad.stdout or "invalid" in bad.stdout.lower(), bad.stdout
    assert "polymarket" not in harness.chroot_sh(tree, "apt-cache pkgnames polymarket || true").stdout


def _versions(c: harness.Container, names: list[str]) -> dict[str, str]:
    out = c.sh("dpkg-query -W -f='${Package} ${Version}\\n' " + " ".join(names)).stdout
    return dict(line.split() for line in out.splitlines())


def _healthy(c: harness.Container, expected_active: set[str]) -> None:
    failed = c.sh("systemctl list-units --failed --plain --no-legend 'polymarket*' 'ssh*'").stdout.strip()
    assert not failed, failed
    for unit in sorted(expected_active):
        assert c.sh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active", unit
    c.sh("sshd -t")


def test_upgrade_and_rollback_from_the_repository(rootfs: Path, releases: Releases) -> None:
    # One node, the way the inventory places packages: polymarket-monitoring goes on the lb, never beside the
    # bot (its Prometheus and the bot's METRICS_PORT both take 9090); it is published and upgraded with the rest.
    names = sorted(n for n in releases.old if n != "polymarket-monitoring")
    tarball = harness.rootfs_tarball(releases.depends)  # dependencies preinstalled: the container has no network
    with harness.booted(tarball, name="pmrepo") as c:
        srv = c.path("/srv/repo")
        shutil.copytree(releases.repo, srv)
        c.sh(
            f"systemd-run --unit=pm-repo-http --property=WorkingDirectory=/srv/repo "
            f"python3 -m http.server --bind 127.0.0.1 {PORT}"
        )
        c.sh(f"for i in $(seq 50); do curl -fsS -o /dev/null {URL}dists/noble/InRelease && exit 0; sleep 0.1; done; "
             "exit 1")  # fmt: skip
        # What the README tells an operator: fetch the key and the .sources, update, install.
        c.sh(
            "set -e; mkdir -p /root/debian-sources /etc/apt/keyrings; "
            "for f in /etc/apt/sources.list /etc/apt/sources.list.d/debian.sources; do "
            '  [ ! -e "$f" ] || mv "$f" /root/debian-sources/; done; '
            f"curl -fsSo /etc/apt/keyrings/polymarket-archive-keyring.gpg {URL}polymarket-archive-keyring.gpg; "
            f"curl -fsSo /etc/apt/sources.list.d/polymarket.sources {URL}polymarket.sources; "
            "apt-get update"
        )
        # polymarket-backup Depends: restic (>= 0.16); where the archive's is older (bookworm's 0.14) it cannot be
        # installed, and the upgrade and rollback path is proven on the other packages (backup is one more of them).
        restic = c.sh("dpkg-query -W -f='${Version}' restic").stdout
        if c.sh(f"dpkg --compare-versions '{restic}' lt {RESTIC_MINIMUM}", check=False).returncode == 0:
            names = [n for n in names if n != "polymarket-backup"]
        c.sh(f"{APT} install {' '.join(names)}")
        assert _versions(c, names) == {n: releases.old[n] for n in names}

        # A local edit of one conffile per package (one with '#' comments when there is one); the new
        # release changes the same file where its source is found verbatim, so dpkg faces a real conflict.
        edited: list[str] = []
        conflicting: list[str] = []
        for name in names:
            conffiles = c.sh(f"dpkg-query -W -f='${{Conffiles}}\\n' {name}").stdout.split()
            paths = [p for p in conffiles if p.startswith("/") and c.path(p).is_file()]
            commented = [p for p in paths if any(x.startswith("#") for x in c.path(p).read_text().splitlines())]
            if not paths:
                continue
            path = (commented or paths)[0]
            if releases.change_source_of(c.path(path).read_bytes()):
                conflicting.append(path)
            c.sh(f"echo '{EDIT}' >> {path}")
            edited.append(path)
        assert edited, "no package in dist/ ships a conffile"
        assert conflicting, f"none of {edited} is shipped verbatim from the tree: no conffile conflict to test"
        # Long-running services and timers active now must be active after each step (oneshots come and go).
        listed = c.sh("systemctl list-units --state=active --plain --no-legend 'polymarket*.service' "
                      "'polymarket*.timer' | awk '{print $1}'").stdout.split()  # fmt: skip
        active = {u for u in listed if u.endswith(".timer") or c.sh(f"systemctl show -P Type {u}").stdout.strip()
                  != "oneshot"}  # fmt: skip
        _healthy(c, active)

        # A new release, published beside the old one, reaches the node with a plain upgrade.
        new = releases.release_next()
        shutil.rmtree(srv)
        shutil.copytree(releases.repo, srv)
        c.sh("apt-get update")
        policy = c.sh(f"apt-cache madison {names[0]}").stdout
        assert releases.old[names[0]] in policy and new[names[0]] in policy, policy
        c.sh(f"{APT} upgrade")
        assert _versions(c, names) == {n: new[n] for n in names}
        for path in edited:
            assert EDIT in c.path(path).read_text(), f"{path}: the local edit was lost by the upgrade"
        assert not c.sh("find /etc -name '*.dpkg-new'").stdout.strip()
        for path in conflicting:  # --force-confold kept the local file, the release's version is beside it
            assert c.path(path + ".dpkg-dist").read_text().endswith(NEW_LINE), path
        _healthy(c, active)

        # Roll back to the first version, straight from the repository.
        pins = " ".join(f"{n}={releases.old[n]}" for n in names)
        c.sh(f"{APT} --allow-downgrades install {pins}")
        assert _versions(c, names) == {n: releases.old[n] for n in names}
        for path in edited:
            assert EDIT in c.path(path).read_text(), f"{path}: the local edit was lost by the rollback"
        _healthy(c, active)
        c.sh("systemctl stop pm-repo-http", check=False)
