"""Autoinstall media against real peers, in a Debian trixie root filesystem.

1. ``cloud-init schema`` (trixie's 25.x flags unknown keys) accepts every
   rendered user-data, and the inner cloud-config the installed system gets.
2. The apt/debconf/packages/late-commands steps of a rendered user-data, done
   the way curtin does them in the target (a plain chroot, through
   harness.chroot_sh), install the role's packages that exist in dist/ from a
   locally served signed repository, non-interactively, with the host's
   debconf answers in the debconf database.

Serving the repository: chroot_sh runs in its own network namespace, so a
server on this machine's 127.0.0.1 is out of reach.  The repository is
therefore copied into the tree and served by ``python3 -m http.server`` from
inside the same chroot_sh call (same namespace, its loopback brought up); the
rendered apt source keeps its real ``http://`` form, so the test exercises the
same transport as an install does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder import autoinstall
from builder import repo as repo_mod
from builder.project import load_project
from tests.system import harness
from tests.system.test_backup import RESTIC_MINIMUM

REPO = harness.REPO
EXAMPLE = REPO / "autoinstall" / "inventory.yaml"
PORT = 8080
GUEST_REPO = "/srv/polymarket-repo"
HOST = "primary"  # the role with every package


def _deb_depends(deb: Path) -> set[str]:
    """The first alternative of every dependency of ``deb`` that is not one of ours."""
    field = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True)
    names = set()
    for dep in field.stdout.split(","):
        name = dep.split("|")[0].split("(")[0].split(":")[0].strip()
        if name and not name.startswith("polymarket-"):
            names.add(name)
    return names


def _restic_new_enough(rootfs: Path) -> bool:
    """polymarket-backup Depends: restic (>= 0.16); bookworm's archive has 0.14."""
    try:
        harness.require_version(rootfs, "restic", RESTIC_MINIMUM, "polymarket-backup passes --retry-lock")
    except pytest.skip.Exception:
        return False
    return True


@pytest.fixture(scope="module")
def role_debs(rootfs: Path, dist: Path) -> list[Path]:
    """The .debs in dist/ of the packages the example's primary role installs."""
    from builder import inventory

    inv = inventory.load(EXAMPLE)
    host = next(h for h in inv.hosts if h.name == HOST)
    debs = []
    for pkg in inv.packages(host):
        found = sorted(dist.glob(f"{pkg}_*_all.deb"))
        if pkg == "polymarket-backup" and not _restic_new_enough(rootfs):
            continue  # it cannot be installed here; the install steps are proven on the role's other packages
        if found:
            debs.append(found[-1])
    if not debs:
        pytest.fail(f"none of the {HOST} role's packages is built in {dist}")
    return debs


@pytest.fixture(scope="module")
def cloud_init_rootfs(rootfs: Path, role_debs: list[Path]) -> Path:
    """The trixie rootfs plus cloud-init and the role packages' dependencies (the chroot has no network)."""
    extra = {"cloud-init"}
    for deb in role_debs:
        extra |= _deb_depends(deb)
    return harness.rootfs_tarball(extra=sorted(extra))


@pytest.fixture
def ci_tree(cloud_init_rootfs: Path) -> Iterator[Path]:
    with harness.fresh_tree(cloud_init_rootfs) as root:
        yield root


@pytest.fixture(scope="module")
def signed_repo(role_debs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway-key signed apt repository (suite noble, component main) of ``role_debs``, and its .asc key."""
    tmp = tmp_path_factory.mktemp("repo")
    gnupg = tmp / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupg)}

    def gpg(*args: str) -> None:
        subprocess.run(["gpg", "--batch", "--quiet", *args], env=env, check=True, capture_output=True)

    gpg("--passphrase", "", "--quick-gen-key", "autoinstall test archive <test@invalid>", "ed25519", "sign", "never")
    key = tmp / "archive.asc"
    gpg("--armor", "--output", str(key), "--export")
    repo = tmp / "repo"
    pool = repo / "pool" / "main"
    pool.mkdir(parents=True)
    for deb in role_debs:
        shutil.copy2(deb, pool)
    for arch in ("amd64", "all"):
        d = repo / "dists" / "noble" / "main" / f"binary-{arch}"
        d.mkdir(parents=True)
        packages = subprocess.run(
            ["apt-ftparchive", "packages", "pool"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
        (d / "Packages").write_text(packages)
    release = subprocess.run(
        [
            "apt-ftparchive",
            "-o",
            "APT::FTPArchive::Release::Suite=noble",
            "-o",
            "APT::FTPArchive::Release::Codename=noble",
            "-o",
            "APT::FTPArchive::Release::Components=main",
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64 all",
            "release",
            "dists/noble",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (repo / "dists" / "noble" / "Release").write_text(release)
    dists = repo / "dists" / "noble"
    gpg("--clearsign", "--output", str(dists / "InRelease"), str(dists / "Release"))
    gpg("--detach-sign", "--armor", "--output", str(dists / "Release.gpg"), str(dists / "Release"))
    return repo, key


def _render(tmp: Path, key: Path, packages: list[str], url: str) -> Path:
    """The example's media, with the test repository and the role cut down to ``packages``."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    data["apt"]["url"] = url
    data["apt"]["key_file"] = str(key)
    data["roles"] = {role: [p for p in pkgs if p in packages] or packages for role, pkgs in data["roles"].items()}
    if "polymarket-monitoring" not in packages:
        data.pop("alerts", None)  # alerts: need the host that installs polymarket-monitoring
    inv = tmp / "inventory.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp / "media"
    autoinstall.render(load_project(REPO), inv, out)
    return out


def test_cloud_init_schema_accepts_every_user_data(
    ci_tree: Path, signed_repo: tuple[Path, Path], tmp_path: Path
) -> None:
    _, key = signed_repo
    media = _render(tmp_path, key, ["polymarket-hardening"], "http://192.168.1.5/polymarket")
    guest = ci_tree / "tmp" / "media"
    guest.mkdir()
    checks = []
    for host in ("primary", "standby", "lb"):
        text = (media / host / "user-data").read_text()
        inner = yaml.safe_load(text)["autoinstall"]["user-data"]
        (guest / f"{host}.yaml").write_text(text)
        (guest / f"{host}-inner.yaml").write_text("#cloud-config\n" + yaml.safe_dump(inner, sort_keys=False))
        checks += [f"/tmp/media/{host}.yaml", f"/tmp/media/{host}-inner.yaml"]
    # A known-bad file first: proves this cloud-init flags unknown keys at all.
    (guest / "bad.yaml").write_text("#cloud-config\nautoinstall:\n  version: 1\nno_such_module: 1\n")
    bad = harness.chroot_sh(ci_tree, "cloud-init schema --config-file /tmp/media/bad.yaml", check=False)
    if bad.returncode == 0 and "Valid" in bad.stdout:
        # bookworm's cloud-init 22.4 validates only the keys of the modules it knows and passes unknown ones
        # (trixie's 25.x and noble's 24.x flag them): a check that cannot fail proves nothing.
        version = harness.chroot_sh(ci_tree, "cloud-init --version 2>&1").stdout.split()[-1]
        pytest.skip(f"cloud-init {version} of this {harness.SUITE} tree accepts unknown keys "
                    "(noble's 24.x and trixie's 25.x flag them)")
    assert bad.returncode != 0 and "no_such_module" in bad.stdout + bad.stderr
    script = "set -e; " + "; ".join(f"cloud-init schema --config-file {c}" for c in checks)
    out = harness.chroot_sh(ci_tree, script)
    assert out.stdout.count("Valid schema") == len(checks), out.stdout


def _steps(ai: dict[str, Any], tree: Path) -> str:
    """What the installer does after curtin's apt stage, as one shell script for the chroot.

    curtin feeds ``debconf-selections`` to debconf-set-selections in the
    target; subiquity then runs the late-commands: ``curtin in-target --
    CMD`` runs CMD in the target (this chroot), the others run in the
    installer with the target at /target (here a /target -> / link inside
    the chroot, so they act on the same tree).
    """
    (tree / "target").symlink_to("/")
    (tree / "tmp/debconf-selections").write_text(ai["debconf-selections"])
    script = ["debconf-set-selections /tmp/debconf-selections"]
    for cmd in ai["late-commands"]:
        argv = list(cmd)
        if argv[:3] == ["curtin", "in-target", "--"]:
            argv = argv[3:]
        script.append(shlex.join(argv))
    return "\n".join(script)


def test_install_steps_in_a_chroot(
    ci_tree: Path, signed_repo: tuple[Path, Path], role_debs: list[Path], tmp_path: Path
) -> None:
    repo, key = signed_repo
    names = [d.name.split("_")[0] for d in role_debs]
    media = _render(tmp_path, key, names, f"http://127.0.0.1:{PORT}")
    ai = yaml.safe_load((media / HOST / "user-data").read_text())["autoinstall"]
    assert ai["late-commands"][-1][8:] == names
    shutil.copytree(repo, ci_tree / GUEST_REPO.lstrip("/"))
    # The Debian archive is out of reach (no network; the dependencies are
    # preinstalled in this tree): apt sees only our repository.
    sources = ci_tree / "etc/apt/sources.list.d"
    for f in [ci_tree / "etc/apt/sources.list", *sources.iterdir()]:
        if f.exists():
            f.rename(ci_tree / "tmp" / f.name)
    steps = _steps(ai, ci_tree)
    script = f"""set -e
ip link set lo up
python3 -m http.server --bind 127.0.0.1 --directory {GUEST_REPO} {PORT} >/tmp/http.log 2>&1 &
server=$!
trap 'kill $server' EXIT
i=0
until python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:{PORT}/')" 2>/dev/null; do
  i=$((i+1)); [ $i -lt 100 ] || {{ echo "the repository server did not start" >&2; exit 1; }}; sleep 0.1
done
{steps}
"""
    out = harness.chroot_sh(ci_tree, script, timeout=600)
    assert "Err:" not in out.stdout and "NO_PUBKEY" not in out.stdout + out.stderr

    state = harness.chroot_sh(ci_tree, f"dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {' '.join(names)}")
    assert sorted(state.stdout.split("\n")[:-1]) == sorted(f"{n} installed" for n in names)

    # Every answer of the host is in the debconf database.
    shown = ""
    for owner in sorted({line.split()[0] for line in ai["debconf-selections"].splitlines()}):
        shown += harness.chroot_sh(ci_tree, f"debconf-show {owner}").stdout
    for line in ai["debconf-selections"].splitlines():
        _, question, _, *value = line.split(" ")
        assert f"{question}: {' '.join(value)}".rstrip() in shown, f"{question} not answered:\n{shown}"
    if "polymarket-hardening" in names:
        # The media answer only the admin; polymarket-hardening adds polymarket-ha (replication) itself.
        assert "polymarket-hardening/allow_users: admin\n" in shown
        assert "polymarket-hardening/admin_network: 192.168.1.0/24" in shown

    # The repository key is trusted for our source only, never globally:
    # the same repository without Signed-By is refused.
    assert (sources / "polymarket.sources").read_text() == repo_mod.sources_file(f"http://127.0.0.1:{PORT}")
    trusted = ci_tree / "etc/apt/trusted.gpg.d"
    assert not trusted.exists() or not [p for p in trusted.iterdir() if "polymarket" in p.name]
    (sources / "unscoped.list").write_text(f"deb file:{GUEST_REPO} noble main\n")
    refused = harness.chroot_sh(ci_tree, "apt-get update", check=False)
    assert refused.returncode != 0 and "is not signed" in refused.stdout + refused.stderr, refused.stderr
