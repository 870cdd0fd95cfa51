"""README's `make` on a minimal Debian 12 and 13 build host: only git and make installed, as root.

The tree is cloned (a git bundle of HEAD: what a fresh clone gets) into a Debian root filesystem
made with ``mmdebstrap --variant=minbase`` plus git and make, cached in .cache/ like the shared
rootfs, and ``make`` runs there as the README says: it installs the build dependencies from the
Debian archive, builds and lints every package (with that suite's lintian: trixie's reports units
under /lib as aliased-location), publishes dist/repo/ and renders the media.

How it runs: minbase has no systemd to boot, and ``make`` needs the Debian mirror. So the host
is a systemd-nspawn container that is not booted: own mount, PID, UTS and IPC namespaces,
/proc/sys read-only (nothing can change a kernel setting of this machine), and this machine's
network, the only way to the mirror (a booted container with its own network has none; with
this machine's network its systemd would apply its sysctl.d here). Nothing in the tree is
started; apt's downloads are kept in .cache/ so a second run does not fetch them again.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import inventory
from builder.packages import REGISTRY
from tests.package import debs
from tests.package.test_unit_paths import ACTIVATION
from tests.system import harness

SUITES = ("bookworm", "trixie")
# It runs on both suites itself: a second pass with POLYMARKET_TEST_SUITE=bookworm leaves it out (conftest).
SUITE_INDEPENDENT = True
MINIMAL = ("git", "make")  # all the README asks for
CLONE = "/root/polymarket-deploy"
MAKE_TIMEOUT = 1800


def minimal_rootfs(suite: str) -> Path:
    """The cached minbase + git + make tarball of ``suite``, built once (about 20 s)."""
    key = hashlib.sha256(" ".join(["minimal", "minbase", suite, harness.MIRROR, *MINIMAL]).encode()).hexdigest()[:12]
    harness.CACHE.mkdir(parents=True, exist_ok=True)
    tarball = harness.CACHE / f"minimal-{suite}-{key}.tar.zst"
    with open(harness.CACHE / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        tmp = tarball.with_suffix(".partial")
        proc = subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--format=tar", f"--include={','.join(MINIMAL)}",
             "--customize-hook=rm -f $1/etc/hostname", suite, str(tmp), harness.MIRROR],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
        )  # fmt: skip
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise harness.HarnessError(f"mmdebstrap failed: {proc.stderr[-2000:]}")
        subprocess.run(["zstd", "-q", "-T0", "-3", "--rm", str(tmp), "-o", str(tarball)], check=True)
        return tarball


def host_sh(root: Path, script: str, apt_cache: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``script`` as root on the minimal host ``root`` (not booted; this machine's network)."""
    argv = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--as-pid2", "--pipe",
            "-M", "pmminimal", "--resolv-conf=copy-host", f"--bind={apt_cache}:/var/cache/apt/archives",
            "/usr/bin/env", "-i", *harness.GUEST_ENV, "/bin/sh", "-c", script]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def bundle() -> Iterator[Path]:
    """HEAD of this checkout as a git bundle: what a fresh clone of it holds."""
    if not (harness.REPO / ".git").exists():
        pytest.skip(f"{harness.REPO} is not a git checkout (this test clones it)")
    if shutil.which("git") is None:
        pytest.skip("system tests need: git (apt-get install git)")
    out = Path(tempfile.mkdtemp(prefix="pm-bundle-")) / "polymarket-deploy.bundle"
    subprocess.run(["git", "-C", str(harness.REPO), "bundle", "create", str(out), "HEAD"], check=True,
                   capture_output=True)  # fmt: skip
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.mark.parametrize("suite", SUITES)
def test_make_on_a_minimal_host(suite: str, bundle: Path) -> None:
    missing = harness.missing_prerequisites()
    if missing:
        pytest.skip(f"system tests need: {', '.join(missing)}")
    tarball = minimal_rootfs(suite)
    apt_cache = harness.CACHE / f"minimal-{suite}-apt-archives"
    (apt_cache / "partial").mkdir(parents=True, exist_ok=True)
    with harness.fresh_tree(tarball, prefix=f"pm-minimal-{suite}-") as root:
        # Only git and make besides the base system: no compiler, no debhelper, no python3.
        for absent in ("usr/bin/dpkg-buildpackage", "usr/bin/python3", "usr/bin/gcc", "usr/bin/lintian"):
            assert not (root / absent).exists(), f"{absent} in the minimal {suite} host"
        shutil.copy2(bundle, root / "root" / bundle.name)
        script = f"git clone -q /root/{bundle.name} {CLONE} && cd {CLONE} && make"
        started = time.monotonic()
        proc = host_sh(root, script, apt_cache, MAKE_TIMEOUT)
        took = time.monotonic() - started
        print(f"make on a minimal {suite} host: {took:.0f} s")
        assert proc.returncode == 0, (
            f"make on a minimal {suite} host exited {proc.returncode} after {took:.0f} s\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
        dist = root / CLONE.lstrip("/") / "dist"
        for pkg in REGISTRY:
            built = sorted(dist.glob(f"{pkg.name}_*_all.deb"))
            assert built, f"{pkg.name} not built on {suite}; dist/ has {sorted(p.name for p in dist.iterdir())}"
            pooled = sorted((dist / "repo" / "pool").rglob(built[-1].name))
            assert pooled, f"{built[-1].name} not published into dist/repo/pool"
            members = debs.data_members(built[-1])
            assert not [p for p in members if p == "/lib" or p.startswith("/lib/")], f"{pkg.name}: files under /lib"
            with debs.control_dir(built[-1]) as control:
                postinst = (control / "postinst").read_text() if (control / "postinst").exists() else ""
            for unit in ACTIVATION[pkg.name][0]:
                assert f"/usr/lib/systemd/system/{unit}" in members, f"{pkg.name} built on {suite}: {unit}"
                assert f"'{unit}'" in postinst, f"{pkg.name} built on {suite}: {unit} no longer enabled"
        for name in ("InRelease", "Release", "Release.gpg"):
            assert (dist / "repo" / "dists" / "noble" / name).is_file(), f"dist/repo/dists/noble/{name}"
        assert (dist / "repo" / "polymarket-archive-keyring.asc").is_file()
        hosts = {h.name for h in inventory.load(root / CLONE.lstrip("/") / "autoinstall" / "inventory.yaml").hosts}
        media = {p.name for p in (dist / "autoinstall").iterdir() if p.is_dir()}
        assert media == hosts | {"pxe"}, f"media rendered on {suite}: {sorted(media)}"
