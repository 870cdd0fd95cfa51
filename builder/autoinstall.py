"""Autoinstall media: per host user-data, meta-data and a CIDATA seed.iso, and a PXE tree.

Everything is rendered in memory, validated (installer schema, the project's
own checks, cloud-init when installed), written to a temporary directory
beside the output, and only then moved into place: on any error nothing is
written and the previous output stays as it was.

Output layout (``dist/autoinstall/`` by default)::

    HOST/user-data, HOST/meta-data, HOST/seed.iso     USB: a CIDATA-labelled seed
    pxe/http/HOST/{user-data,meta-data,vendor-data}   served over HTTP (ds=nocloud-net)
    pxe/grub/grub.cfg                                 UEFI PXE, an entry per host
    pxe/pxelinux.cfg/01-MAC                           BIOS PXE, an entry per host
    pxe/dnsmasq.conf.example                          DHCP + TFTP
    build-info                                        the inventory's name and sha256, the hosts
    .polymarket-autoinstall                           the marker: this directory is the builder's

The output directory is replaced as a whole, and only when the builder made
it: it holds the marker (or is an earlier output of the builder, recognised by
its layout) and nothing the builder did not write, or it is empty.  Anything
else (``--output dist``, ``--output ~``) is refused with one line, and nothing
is deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from builder import autoinstall_config as config
from builder import autoinstall_validate as validate
from builder import debconf, packages
from builder import inventory as inventory_mod
from builder.errors import BuilderError, InputError
from builder.inventory import Host, Inventory
from builder.project import Project
from builder.run import run

log = logging.getLogger(__name__)

SEED_LABEL = "CIDATA"
MARKER = ".polymarket-autoinstall"
MARKER_TEXT = (
    "# Autoinstall media written by python3 -m builder autoinstall. The next run replaces the files\n"
    "# listed here (and removes those it no longer makes); every other file here is kept.\n"
)
BUILD_INFO = "build-info"
# What earlier versions wrote into the output (no marker yet): HOST/ and pxe/ holding only these.
_LEGACY_HOST_FILES = frozenset({"user-data", "meta-data", "seed.iso"})
_LEGACY_HEAD = "# dnsmasq example: DHCP + TFTP for the network install of the Polymarket hosts.\n"

# Used by `check` only, while dist/repo/ has not been published yet: the
# structure is validated with this stand-in (an empty public-key packet),
# never written anywhere.
PLACEHOLDER_KEY = b"\x98\x00"


@dataclass(frozen=True)
class Rendered:
    """The text files of the media, by path relative to the output directory, plus the seeds to build."""

    files: dict[str, str]
    seeds: tuple[str, ...]  # host names: HOST/seed.iso from HOST/{user-data,meta-data}


def _legacy_owned(rel: str) -> bool:
    """``rel`` is a path an earlier version of the builder (which wrote no marker) wrote."""
    parts = rel.split("/")
    if parts[0] != "pxe":
        return len(parts) == 2 and parts[1] in _LEGACY_HOST_FILES
    return (
        rel in ("pxe/grub/grub.cfg", "pxe/dnsmasq.conf.example")
        or (len(parts) == 3 and parts[1] == "pxelinux.cfg" and parts[2].startswith("01-"))
        or (len(parts) == 4 and parts[1] == "http" and parts[3] in ("user-data", "meta-data", "vendor-data"))
    )


def _is_legacy_media(output: Path) -> bool:
    """``output`` is what an earlier version of the builder wrote (before the marker): its dnsmasq example."""
    try:
        with open(output / "pxe" / "dnsmasq.conf.example", encoding="utf-8") as f:
            head = f.read(512)
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith(_LEGACY_HEAD)


def _files(root: Path) -> list[str]:
    """Every path under ``root`` (files, symlinks, directories), relative, parents first; symlinks not followed."""
    found = []
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(names):
            found.append(str((Path(top) / name).relative_to(root)))
    return found


def owned_files(output: Path) -> set[str] | None:
    """The paths under ``output`` the builder wrote there (the next run replaces them), or None when the
    directory is not the builder's (an empty one is)."""
    if not output.exists() or not any(output.iterdir()):
        return set()
    marker = output / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            lines = marker.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        listed = {line for line in lines if line and not line.startswith("#")}
        return {rel for rel in listed if not rel.startswith("/") and ".." not in rel.split("/")} | {MARKER}
    if _is_legacy_media(output):
        return {rel for rel in _files(output) if _legacy_owned(rel)}
    return None


def check_output(output: Path) -> set[str]:
    """The files of ``output`` the builder may replace; InputError when ``output`` is not a directory of the
    builder's (nor empty, nor new): it never deletes what it did not write."""
    if output.exists() and not output.is_dir():
        raise InputError(
            f"--output {output}: not a directory",
            hint="give a directory of its own for the media, such as dist/autoinstall",
        )
    owned = owned_files(output)
    if owned is None:
        raise InputError(
            f"--output {output}: the directory holds files the builder did not write (no {MARKER}); nothing changed",
            hint="the media go into a directory of their own: give an empty or new one, such as dist/autoinstall",
        )
    return owned


def _carry_over(old: Path, owned: set[str], staging: Path) -> None:
    """Link into ``staging`` every file of ``old`` the builder did not write (the boot loaders and kernels an
    operator puts into pxe/, anything else): replacing the media never deletes them."""
    parents = {str(p) for rel in owned for p in Path(rel).parents}
    for rel in _files(old):
        if rel in owned or rel in parents:
            continue
        src, dst = old / rel, staging / rel
        try:  # the directory of a host the inventory no longer has, say
            dst.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            dst = dst.parent  # a file of the new media where the kept file's directory was
        if src.is_dir() and not src.is_symlink():
            if dst.is_dir() and not dst.is_symlink():
                continue
            if not os.path.lexists(dst):
                dst.mkdir()
                shutil.copystat(src, dst)
                continue
        elif not os.path.lexists(dst):
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:
                shutil.copy2(src, dst, follow_symlinks=False)
            continue
        raise InputError(
            f"--output {old}: {rel} was not written by the builder, and the new media have a file of that name; "
            "nothing was changed",
            hint=f"move {old / rel} away (or rename the host) and run again",
        )


def _marker_text(files: list[str]) -> str:
    return MARKER_TEXT + "".join(f"{rel}\n" for rel in files)


def build_info(inv: Inventory) -> str:
    """Which inventory the media came from: its name and sha256 (compare: sha256sum inventory.yaml), and
    the hosts."""
    digest = hashlib.sha256(inv.path.read_bytes()).hexdigest()
    return f"inventory: {inv.path.name}\ninventory-sha256: {digest}\nhosts: {' '.join(h.name for h in inv.hosts)}\n"


def _environment(project: Project) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(project.root / "autoinstall" / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def kernel_args(inv: Inventory, host: Host) -> str:
    """The live-server kernel command line for a hands-off PXE install of ``host``."""
    return (
        f"root=/dev/ram0 ramdisk_size=1500000 ip=dhcp url={inv.pxe.iso_url} cloud-config-url=/dev/null "
        f"autoinstall ds=nocloud-net;s={inv.pxe.http_url}/{host.name}/"
    )


def read_key(inv: Inventory, *, placeholder_ok: bool = False) -> bytes:
    """The repository's public key, binary: the armored .asc (dearmored here) or the binary .gpg."""
    path = inv.apt.key_file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if placeholder_ok:
            log.info("%s does not exist yet (publish makes it): validated with a placeholder key", path)
            return PLACEHOLDER_KEY
        raise InputError(
            f"{inv.path}: apt.key_file: {path} does not exist",
            hint="publish the repository first: python3 -m builder publish",
        ) from None
    except OSError as exc:
        raise InputError(f"{inv.path}: apt.key_file: cannot read {path}: {exc.strerror}") from exc
    if data.lstrip().startswith(b"-----BEGIN "):
        return config.dearmor(data.decode("utf-8", errors="replace"), f"{inv.path}: apt.key_file: {path}")
    if not config.is_public_key(data):
        raise InputError(
            f"{inv.path}: apt.key_file: {path} is not an OpenPGP public key",
            hint="give the .asc (gpg --armor --export) or .gpg (gpg --export) of the repository's key",
        )
    return data


def render_files(project: Project, inv: Inventory, key: bytes) -> Rendered:
    """Every text file of the media, validated, in memory."""
    packages.check(project)
    env = _environment(project)
    inventory_name = inv.path.name
    known = {p.name for p in project.packages}
    for host in inv.hosts:
        for name in inv.packages(host):
            if name not in known:
                raise InputError(
                    f"{inventory_name}: role {host.role}: package {name} is not built by this project",
                    hint=f"packages built here: {', '.join(sorted(known))}",
                )
    files: dict[str, str] = {}
    questions = debconf.load(project.root)
    args = {h.name: kernel_args(inv, h) for h in inv.hosts}
    for host in inv.hosts:
        ud = config.user_data(inv, host, key, inventory_name, questions)
        validate.validate(f"{host.name}/user-data", ud, questions)
        md = config.meta_data(host, ud)
        files[f"{host.name}/user-data"] = ud
        files[f"{host.name}/meta-data"] = md
        files[f"pxe/http/{host.name}/user-data"] = ud
        files[f"pxe/http/{host.name}/meta-data"] = md
        files[f"pxe/http/{host.name}/vendor-data"] = ""
        mac = host.mac.replace(":", "-")
        files[f"pxe/pxelinux.cfg/01-{mac}"] = env.get_template("pxelinux.cfg.j2").render(
            host=host, inventory=inventory_name, kernel_args=args[host.name]
        )
    common = {"hosts": inv.hosts, "inventory": inventory_name, "network": inv.network, "pxe": inv.pxe}
    files["pxe/grub/grub.cfg"] = env.get_template("grub.cfg.j2").render(kernel_args=args, **common)
    files["pxe/dnsmasq.conf.example"] = env.get_template("dnsmasq.conf.example.j2").render(
        tftp_root="/srv/polymarket/autoinstall/pxe", **common
    )
    validate.cloud_init_schema({f"{h.name}/user-data": files[f"{h.name}/user-data"] for h in inv.hosts})
    return Rendered(files, tuple(h.name for h in inv.hosts))


def make_seed(directory: Path, epoch: int) -> Path:
    """``directory``/seed.iso: an ISO 9660 volume labelled CIDATA holding user-data and meta-data."""
    iso = directory / "seed.iso"
    for name in ("user-data", "meta-data"):
        os.utime(directory / name, (epoch, epoch))
    run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-output",
            iso,
            "-volid",
            SEED_LABEL,
            "-joliet",
            "-rock",
            "-graft-points",
            f"user-data={directory / 'user-data'}",
            f"meta-data={directory / 'meta-data'}",
        ],
        env={"SOURCE_DATE_EPOCH": str(epoch)},
    )
    check_seed(iso)
    return iso


def check_seed(iso: Path) -> None:
    """The ISO's primary volume descriptor (sector 16) must name the volume CIDATA."""
    with open(iso, "rb") as f:
        f.seek(16 * 2048)
        pvd = f.read(2048)
    if pvd[:6] != b"\x01CD001" or pvd[40:72].decode("ascii", "replace").rstrip() != SEED_LABEL:
        raise BuilderError(f"{iso}: not an ISO 9660 volume labelled {SEED_LABEL}", hint="check the xorriso version")


def write(project: Project, rendered: Rendered, output: Path) -> None:
    """Write the media next to ``output`` and move them into place in one rename."""
    output = output.resolve()
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    epoch = project.source_date_epoch()
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.new-", dir=output.parent))
    try:
        for rel, text in sorted(rendered.files.items()):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for host in rendered.seeds:
            make_seed(staging / host, epoch)
        ours = [rel for rel in _files(staging) if not (staging / rel).is_dir()]
        (staging / MARKER).write_text(_marker_text(ours), encoding="utf-8")
        for path in staging.rglob("*"):
            os.utime(path, (epoch, epoch))
        staging.chmod(0o755)
        old = None
        owned = check_output(output)  # read right before the swap
        if output.exists():
            _carry_over(output, owned, staging)
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            output.rename(old / output.name)
        staging.rename(output)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check(project: Project, inventory_path: Path) -> Inventory:
    """Validate the inventory and everything rendered from it; write nothing."""
    inv = inventory_mod.load(inventory_path, project.service_users)
    rendered = render_files(project, inv, read_key(inv, placeholder_ok=True))
    log.info("inventory %s: %d hosts, %d files validated", inventory_path, len(inv.hosts), len(rendered.files))
    return inv


def render(project: Project, inventory_path: Path, output: Path) -> None:
    """Render the autoinstall media of every host in the inventory into ``output``."""
    check_output(output.resolve())  # before the work: a directory that is not ours is refused at once
    inv = inventory_mod.load(inventory_path, project.service_users)
    rendered = render_files(project, inv, read_key(inv))
    rendered.files[BUILD_INFO] = build_info(inv)
    write(project, rendered, output)
    for host in inv.hosts:
        log.info("autoinstall: %s (%s, %s) -> %s/%s/", host.name, host.role, host.address, output, host.name)
    log.info("autoinstall: PXE tree -> %s/pxe/", output)
