"""System-test harness: cached Debian root filesystems (trixie, or bookworm) and booted
systemd-nspawn containers, driven from outside with nsenter.

Shared by the system tests of every package.  Nothing here touches this
machine's own kernel settings: containers run with a private network, and
plain-chroot installs run inside fresh network, mount and PID namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("POLYMARKET_TEST_CACHE", REPO / ".cache"))
MIRROR = os.environ.get("POLYMARKET_TEST_MIRROR", "http://deb.debian.org/debian")
# The Debian suite of the shared rootfs: trixie unless POLYMARKET_TEST_SUITE names another one
# (bookworm: the other side of noble). Each suite has its own cached tarball; the trixie key is
# unchanged, so selecting bookworm rebuilds nobody's trixie cache.
SUITES = ("trixie", "bookworm")
SUITE = os.environ.get("POLYMARKET_TEST_SUITE", "trixie")
if SUITE not in SUITES:
    raise RuntimeError(f"POLYMARKET_TEST_SUITE={SUITE!r}: not one of {', '.join(SUITES)}")

# Everything the packages under test depend on is preinstalled, because the
# containers have no network.  Adding a package here rebuilds the cache.
ROOTFS_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "procps", "iproute2",
    "debconf-utils", "ucf", "ufw", "auditd", "logrotate", "ca-certificates", "sqlite3",
    "apt-utils", "gpgv", "curl", "less",
    # polymarket-bot's runtime dependencies (packages/polymarket-bot/DEPENDS)
    "python3-pycryptodome", "python3-ecdsa",
    # polymarket-ha's
    "keepalived", "haproxy", "rsync", "iputils-arping", "openssh-client", "etcd-server", "openssl",
    # polymarket-backup's
    "restic",
    # polymarket-monitoring's
    "prometheus", "prometheus-alertmanager", "python3-yaml",
)  # fmt: skip

# A plain PATH and locale inside guests, whatever the host's environment is.
GUEST_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root")


class HarnessError(RuntimeError):
    pass


def missing_prerequisites() -> list[str]:
    """What this machine lacks for system tests (empty when all is there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool, pkg in (("systemd-nspawn", "systemd-container"), ("mmdebstrap", "mmdebstrap"),
                      ("nsenter", "util-linux"), ("unshare", "util-linux"), ("zstd", "zstd")):  # fmt: skip
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {pkg})")
    return missing


def rootfs_tarball(extra: Iterable[str] = ()) -> Path:
    """The cached SUITE rootfs tarball with ROOTFS_PACKAGES (+ extra), built once."""
    packages = sorted(set(ROOTFS_PACKAGES) | set(extra))
    key = hashlib.sha256(" ".join([SUITE, MIRROR, *packages]).encode()).hexdigest()[:12]
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"{SUITE}-{key}.tar.zst"
    with open(CACHE / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        tmp = tarball.with_suffix(".partial")
        proc = subprocess.run(
            ["mmdebstrap", "--variant=apt", "--format=tar", f"--include={','.join(packages)}",
             "--customize-hook=rm -f $1/etc/hostname", SUITE, str(tmp), MIRROR],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
        )  # fmt: skip
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise HarnessError(f"mmdebstrap failed: {proc.stderr[-2000:]}")
        subprocess.run(["zstd", "-q", "-T0", "-3", "--rm", str(tmp), "-o", str(tarball)], check=True)
        return tarball


def extract(tarball: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-C", str(dest), "--numeric-owner", "--xattrs", "--acls", "-I", "zstd", "-xf", str(tarball)],
        check=True,
    )
    return dest


class Container:
    """A booted systemd container over the root directory ``root``."""

    def __init__(self, root: Path, name: str, network: str = "private", extra_args: Iterable[str] = ()) -> None:
        """``network``: "private" (only lo), "veth" (a veth to the host) or "none" (nothing added:
        pass your own ``--network-interface=IF`` / ``--network-namespace-path=`` in ``extra_args``)."""
        self.root = root
        self.name = name
        self.network = network
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.log = root.parent / f"{name}.console.log"

    # -- life cycle ---------------------------------------------------------
    def start(self, timeout: float = 90) -> Container:
        net = {"private": ["--private-network"], "veth": ["--network-veth"], "none": []}[self.network]
        argv = ["systemd-nspawn", "-D", str(self.root), "--register=no", "--keep-unit", "-b", "-M", self.name, *net,
                *self.extra_args]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"systemd-nspawn exited early: {self.log.read_text(errors='replace')[-2000:]}")
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"], capture_output=True, text=True)
            if kids.stdout.strip():
                self.leader = int(kids.stdout.split()[0])
                break
            time.sleep(0.1)
        else:
            raise HarnessError("the container's systemd did not start")
        self.wait_running(deadline - time.monotonic())
        return self

    def wait_running(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.2)
        raise HarnessError(f"container not up after {timeout:.0f}s (state {state!r})")

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.sh("systemctl poweroff --no-block", check=False, timeout=10)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def reboot(self) -> None:
        """Power off and boot the same tree again."""
        self.stop()
        self.start()

    # -- commands -----------------------------------------------------------
    def sh(self, script: str, *, check: bool = True, timeout: float = 300,
           input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run ``script`` with /bin/sh inside the container (all namespaces)."""
        argv = ["nsenter", "-t", str(self.leader), "-a", "env", "-i", *GUEST_ENV, "/bin/sh", "-c", script]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
        if check and proc.returncode != 0:
            raise HarnessError(
                f"in {self.name}: {script!r} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                f"\n--- stderr\n{proc.stderr[-3000:]}"
            )
        return proc

    def path(self, guest_path: str) -> Path:
        """Host path of a file inside the container's tree."""
        return self.root / guest_path.lstrip("/")

    def copy_in(self, src: Path, guest_path: str) -> None:
        dst = self.path(guest_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)

    def install_debs(self, debs: Iterable[Path], *, env: str = "") -> subprocess.CompletedProcess[str]:
        """apt-get install the given .deb files (dependencies come from the tree)."""
        names = []
        for deb in debs:
            self.copy_in(deb, f"/var/cache/polymarket-test/{deb.name}")
            names.append(f"/var/cache/polymarket-test/{deb.name}")
        return self.sh(
            f"{env} DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {' '.join(names)}"
        )


def chroot_sh(root: Path, script: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a *plain chroot* of ``root``, as curtin in-target does.

    /proc, /sys and /dev are mounted like curtin mounts them, but the whole
    thing runs in fresh network, mount and PID namespaces: should a script
    wrongly act on the "running kernel", it reaches a throwaway network
    namespace, never this machine's network settings.
    """
    inner = (
        f"mount -t proc proc {shlex.quote(str(root))}/proc && "
        f"mount --rbind /sys {shlex.quote(str(root))}/sys && mount --make-rslave {shlex.quote(str(root))}/sys && "
        f"mount --rbind /dev {shlex.quote(str(root))}/dev && mount --make-rslave {shlex.quote(str(root))}/dev && "
        f"chroot {shlex.quote(str(root))} /usr/bin/env -i {' '.join(GUEST_ENV)} /bin/sh -c {shlex.quote(script)}"
    )
    argv = ["unshare", "--net", "--mount", "--pid", "--fork", "--propagation", "private", "/bin/sh", "-c", inner]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise HarnessError(
            f"in chroot {root}: {script!r} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


TREES = Path(os.environ.get("POLYMARKET_TEST_TMP", "/run/polymarket-tests"))


def _trees_dir() -> Path:
    """A tmpfs for extracted trees: extracting to this machine's ext4 takes 10-15 s, to tmpfs under 1 s."""
    TREES.mkdir(mode=0o700, parents=True, exist_ok=True)
    if "POLYMARKET_TEST_TMP" in os.environ:
        return TREES
    # Parallel workers (pytest -n) each ask: one mount, or a second tmpfs would hide the first one's trees.
    with open(TREES.parent / ".polymarket-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.ismount(TREES):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=75%", "polymarket-tests", str(TREES)],
                           check=True)  # fmt: skip
    return TREES


# Daemons preinstalled only because a package under test depends on them (the containers have
# no network) but which would otherwise start at every boot: Prometheus listens on *:9090, the
# bot's METRICS_PORT, so every bot in these trees would crash-loop on EADDRINUSE. They are not
# enabled here; polymarket-monitoring's postinst starts them where it is installed.
QUIET_DAEMONS = ("prometheus.service", "prometheus-alertmanager.service")


def quiet_preinstalled_daemons(root: Path) -> None:
    for unit in QUIET_DAEMONS:
        for link in (root / "etc/systemd/system").glob(f"*.wants/{unit}"):
            link.unlink()


@contextlib.contextmanager
def fresh_tree(tarball: Path, prefix: str = "pm-tree-") -> Iterator[Path]:
    """An extracted copy of the rootfs in a temporary directory, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=_trees_dir()))
    try:
        root = extract(tarball, base / "root")
        quiet_preinstalled_daemons(root)
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def booted(
    tarball: Path, name: str = "pmtest", network: str = "private", extra_args: Iterable[str] = ()
) -> Iterator[Container]:
    """A booted container on a fresh copy of the rootfs, powered off and removed afterwards."""
    with fresh_tree(tarball) as root:
        c = Container(root, name, network, extra_args)
        try:
            c.start()
            yield c
        finally:
            c.stop()


def host_sysctls(names: Iterable[str]) -> dict[str, str]:
    """This machine's own values (read-only), for proving they were untouched."""
    out = {}
    for name in names:
        p = Path("/proc/sys") / name.replace(".", "/")
        out[name] = p.read_text().strip() if p.exists() else "<absent>"
    return out


def _dpkg_status(where: Container | Path) -> str:
    """The dpkg status file of a booted container, an extracted tree or a rootfs tarball."""
    if isinstance(where, Container):
        return where.path("/var/lib/dpkg/status").read_text()
    if where.is_dir():
        return (where / "var/lib/dpkg/status").read_text()
    return _tarball_status(str(where))


@functools.lru_cache(maxsize=8)
def _tarball_status(tarball: str) -> str:
    return subprocess.run(["tar", "-I", "zstd", "-xOf", tarball, "./var/lib/dpkg/status"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def require_version(where: Container | Path, package: str, minimum: str, why: str) -> str:
    """The version of ``package`` installed in ``where`` (a container, a tree or a rootfs tarball);
    pytest.skip, naming both versions and ``why``, when it is older than ``minimum``; pytest.fail when it is not
    installed at all (every suite's rootfs installs it: a tree without it is broken, never a reason to skip).

    Feature detection for the suite under test: a package of ours that needs a newer dependency than
    this suite has (e.g. restic 0.16 on bookworm's 0.14) cannot be installed there at all."""
    version = ""
    for para in _dpkg_status(where).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
            version = fields.get("Version", "")
            break
    if not version:
        pytest.fail(f"{package} is not installed in this {SUITE} tree (ROOTFS_PACKAGES installs it): a broken tree")
    if subprocess.run(["dpkg", "--compare-versions", version, "lt", minimum]).returncode == 0:
        pytest.skip(f"needs {package} >= {minimum} ({why}); this {SUITE} tree has {version}")
    return version
