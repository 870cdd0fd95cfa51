"""VM-test harness: a Debian trixie root filesystem with a kernel, booted
under qemu (TCG: KVM does not work on our machines), driven over ssh.

What only a real kernel shows (kernel.* sysctls, audit rules, auditd, the
netfilter rules ufw writes) is tested here; everything else stays in the
container tier (tests/system).  TESTING.md "A VM when needed" has the
measurements behind the choices:

- the root filesystem is made by mmdebstrap from VM_PACKAGES (a kernel,
  what boots it) and the dependencies of the packages under test, cached
  under .cache/ keyed by its inputs like the container rootfs (its own list,
  so that packages added for other container tests do not rebuild it);
- a test extracts it to a tmpfs tree, changes the tree (e.g. installs our
  packages the autoinstall way, in a plain chroot through
  tests.system.harness.chroot_sh), then ``mkfs.ext4 -d`` makes a throwaway
  disk image of it;
- the kernel and initrd of the tree boot directly (``-kernel``/``-initrd``),
  the guest's console goes to a file (ttyS0), and a unit of the guest writes
  ``BOOTED <state>`` to a second serial port (ttyS1) once systemd is done;
- the guest's network is qemu's user-mode network with ``restrict=on`` (the
  guest reaches nothing outside) and one forward from 127.0.0.1 to its ssh;
- one ssh ControlMaster connection carries every command, because
  polymarket-hardening's ``ufw limit 22/tcp`` refuses the 6th new connection
  within 30 s.

Nothing here touches this machine's own kernel settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.system import harness as system

HarnessError = system.HarnessError

# A bootable, ssh-reachable system: the kernel, what builds its initrd and
# brings up its devices, sudo for the admin user the tests log in as. The
# packages under test add their own dependencies (image_tarball's extra).
VM_PACKAGES = ("linux-image-amd64", "initramfs-tools", "udev", "kmod", "systemd", "systemd-sysv", "dbus",
               "openssh-server", "sudo", "procps", "iproute2", "iptables", "debconf-utils")  # fmt: skip

# Host tools and the Debian package that has each.
VM_TOOLS = (("qemu-system-x86_64", "qemu-system-x86"), ("mkfs.ext4", "e2fsprogs"),
            ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"))  # fmt: skip

# apt's daily list update (no network in the guest): masked. apt-daily-upgrade.timer stays: its
# calendar is polymarket-hardening's upgrade window (audited: patch.window), and it fires only at that
# time (Persistent=true catches up on a missed run only once it has run before).
UNNEEDED_UNITS = ("apt-daily.timer",)

MEMORY_MB = 1024
CPUS = 2
ADMIN = "admin"
APPEND = "root=/dev/vda rw console=ttyS0 panic=-1 net.ifnames=0"
READY = "/usr/local/sbin/pm-vm-ready"


def missing_prerequisites() -> list[str]:
    """What this machine lacks for VM tests (empty when all is there)."""
    missing = system.missing_prerequisites()
    for tool, pkg in VM_TOOLS:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            missing.append(f"{tool} (apt-get install {pkg})")
    return missing


def image_tarball(extra: Iterable[str] = ()) -> Path:
    """The cached trixie VM root filesystem with VM_PACKAGES + extra (built once, about 2 minutes)."""
    packages = sorted(set(VM_PACKAGES) | set(extra))
    key = hashlib.sha256(" ".join(["vm", system.SUITE, system.MIRROR, *packages]).encode()).hexdigest()[:12]
    system.CACHE.mkdir(parents=True, exist_ok=True)
    tarball = system.CACHE / f"vm-{system.SUITE}-{key}.tar.zst"
    with open(system.CACHE / ".vm-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        tmp = tarball.with_suffix(".partial")
        proc = subprocess.run(
            ["mmdebstrap", "--variant=apt", "--format=tar", f"--include={','.join(packages)}",
             system.SUITE, str(tmp), system.MIRROR],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
        )  # fmt: skip
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise HarnessError(f"mmdebstrap failed: {proc.stderr[-2000:]}")
        subprocess.run(["zstd", "-q", "-T0", "-3", "--rm", str(tmp), "-o", str(tarball)], check=True)
        return tarball


def deb_depends(deb: Path, field_name: str = "Depends") -> set[str]:
    """The first alternative of every dependency (or of ``field_name``: Recommends) of ``deb`` that is not
    one of ours."""
    field = subprocess.run(["dpkg-deb", "-f", str(deb), field_name], capture_output=True, text=True, check=True)
    names = set()
    for dep in field.stdout.split(","):
        name = dep.split("|")[0].split("(")[0].split(":")[0].strip()
        if name and not name.startswith("polymarket-"):
            names.add(name)
    return names


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _enable(root: Path, unit: str, target: str = "multi-user.target") -> None:
    """``systemctl enable`` by hand (a link in TARGET.wants), for units in /etc or /usr/lib."""
    for base in ("etc/systemd/system", "usr/lib/systemd/system"):
        if (root / base / unit).exists():
            link = root / "etc/systemd/system" / f"{target}.wants" / unit
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(f"/{base}/{unit}")
            return
    raise HarnessError(f"no unit {unit} in the tree")


def prepare_tree(root: Path, ready_script: str, pubkey: str | None = None) -> None:
    """Make an extracted tree bootable as a VM.

    ``ready_script`` is the shell the guest runs once systemd is done (see
    ``ready_booted``); ``pubkey``: an ``admin`` user (uid 1000, sudo without a
    password) with this authorized key, made after everything else, as
    cloud-init makes the admin at first boot after an autoinstall.
    """
    _write(root / "etc/hostname", "pmvm\n")
    _write(root / "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 pmvm\n")
    _write(root / "etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    _write(root / "etc/systemd/network/10-dhcp.network", "[Match]\nName=eth*\n\n[Network]\nDHCP=ipv4\n")
    _enable(root, "systemd-networkd.service")
    for unit in UNNEEDED_UNITS:
        masked = root / "etc/systemd/system" / unit
        if not masked.is_symlink():
            masked.symlink_to("/dev/null")
    _write(root / READY.lstrip("/"), "#!/bin/sh\n" + ready_script, 0o755)
    _write(
        root / "etc/systemd/system/pm-vm-ready.service",
        "[Unit]\nDescription=Tell the VM test harness that the boot is done (on ttyS1)\n\n"
        f"[Service]\nType=simple\nExecStart={READY}\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    _enable(root, "pm-vm-ready.service")
    if pubkey is not None:
        system.chroot_sh(root, f"useradd -m -u 1000 -s /bin/bash {ADMIN}")
        home = root / "home" / ADMIN
        _write(home / ".ssh/authorized_keys", pubkey.strip() + "\n", 0o600)
        (home / ".ssh").chmod(0o700)
        for p in (home / ".ssh", home / ".ssh/authorized_keys"):
            os.chown(p, 1000, 1000)
        _write(root / "etc/sudoers.d/admin", f"{ADMIN} ALL=(ALL) NOPASSWD:ALL\n", 0o440)


def ready_booted(then: str = "") -> str:
    """A ready script: wait for systemd, report its state and failed units on ttyS1, then run ``then``."""
    return (
        "state=$(systemctl is-system-running --wait)\n"
        'failed=$(systemctl --failed --plain --no-legend | cut -d" " -f1 | tr "\\n" " ")\n'
        f"{then}\n"
        'echo "BOOTED $state $failed" >/dev/ttyS1\n'
    )


def make_disk(root: Path, image: Path) -> Path:
    """A raw ext4 image holding the tree ``root`` (with 1 GiB free)."""
    used = int(subprocess.run(["du", "-sxm", str(root)], capture_output=True, text=True, check=True)
               .stdout.split()[0])  # fmt: skip
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(image), f"{used + 1024}M"],
                   check=True, capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
    return image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh_keypair(directory: Path) -> tuple[Path, str]:
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vm-test", "-f", str(key)], check=True)
    return key, (directory / "id_ed25519.pub").read_text()


class VM:
    """A qemu guest booted from ``disk`` with the kernel and initrd of ``root``."""

    def __init__(self, root: Path, disk: Path, workdir: Path, key: Path | None = None) -> None:
        self.root = root
        self.disk = disk
        self.workdir = workdir
        self.key = key
        self.console = workdir / "console.log"
        self.ready = workdir / "ready.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.boot_seconds = 0.0
        self.state = ""

    def _kernel(self) -> tuple[Path, Path]:
        kernels = sorted((self.root / "boot").glob("vmlinuz-*"))
        initrds = sorted((self.root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise HarnessError(f"no kernel or initrd in {self.root}/boot")
        return kernels[-1], initrds[-1]

    def start(self, timeout: float = 900) -> VM:
        """Boot and wait for ``BOOTED`` on the second serial port."""
        kernel, initrd = self._kernel()
        self.port = _free_port()
        self.ready.write_text("")
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", str(MEMORY_MB), "-smp", str(CPUS),
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", APPEND,
            "-drive", f"file={self.disk},format=raw,if=virtio",
            "-serial", f"file:{self.console}", "-serial", f"file:{self.ready}",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip
        start = time.monotonic()
        with open(self.workdir / "qemu.log", "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # fmt: skip
        while time.monotonic() - start < timeout:
            line = next((ln for ln in self.ready.read_text(errors="replace").splitlines()
                         if ln.startswith("BOOTED")), "")  # fmt: skip
            if line:
                self.boot_seconds = time.monotonic() - start
                self.state = line
                return self
            if self.proc.poll() is not None:
                raise HarnessError(f"qemu exited {self.proc.returncode} during boot:\n{self.tail()}")
            time.sleep(0.5)
        self.stop()
        raise HarnessError(f"the VM did not boot in {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        qemu = (self.workdir / "qemu.log").read_text(errors="replace")[-1000:]
        return f"--- qemu\n{qemu}\n--- console\n{self.console.read_text(errors='replace')[-n:]}"

    def wait_exit(self, timeout: float = 120) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.sh("systemctl poweroff --no-block", check=False, timeout=20)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        if self.key is not None:
            subprocess.run([*self._ssh_base(), "-O", "exit", f"{ADMIN}@127.0.0.1"], capture_output=True)

    # -- commands over one ssh connection -----------------------------------
    def _ssh_base(self) -> list[str]:
        assert self.key is not None
        return ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.workdir}/ssh-%C", "-o", "ControlPersist=900",
                "-o", "ConnectTimeout=30"]  # fmt: skip

    def sh(self, script: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with /bin/sh as root in the guest (admin over ssh, then sudo)."""
        if self.key is None:
            raise HarnessError("this VM has no ssh key")
        argv = [*self._ssh_base(), f"{ADMIN}@127.0.0.1", "sudo -n /bin/sh -c " + shlex.quote(script)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise HarnessError(f"in the VM: {script!r} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                               f"\n--- stderr\n{proc.stderr[-3000:]}")  # fmt: skip
        return proc


@contextlib.contextmanager
def workspace(prefix: str = "pm-vm-") -> Iterator[Path]:
    """A temporary directory on the tests' tmpfs (tree, disk image, logs), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=system._trees_dir()))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def booted(root: Path, workdir: Path, key: Path | None = None, timeout: float = 900) -> Iterator[VM]:
    """Make a disk of ``root``, boot it, power it off afterwards."""
    disk = make_disk(root, workdir / "disk.img")
    vm = VM(root, disk, workdir, key)
    try:
        vm.start(timeout)
        yield vm
    finally:
        vm.stop()
