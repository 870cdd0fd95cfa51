"""The autoinstall configuration of one host, built as data from the inventory.

Nothing here is template text: every structure is a Python value that
``autoinstall.py`` serialises with yaml, so quoting and indentation can never
be wrong.  One function per section, like subiquity's own model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from builder import packages, repo
from builder.debconf import Question
from builder.errors import InputError
from builder.inventory import Host, Inventory

# Where the repository's keyring and source go on the installed system: the
# same files as dist/repo/polymarket.sources names, so adding that file later
# changes nothing.
KEYRING_PATH = repo.SIGNED_BY
SOURCES_PATH = f"/etc/apt/sources.list.d/{repo.SOURCES_FILE}"

# Sizes of the fixed partitions; the LVM physical volume takes the rest.
ESP_SIZE = "1G"
BOOT_SIZE = "2G"
VOLUME_GROUP = "vg0"

HEADER = (
    "#cloud-config\n"
    "# Ubuntu autoinstall for host {host} ({role}), rendered by `python3 -m builder autoinstall`\n"
    "# from {inventory}. Do not edit: change the inventory and render again.\n"
)


@dataclass(frozen=True)
class DebconfAnswer:
    """One debconf-selections line: ``owner question type value``."""

    package: str
    question: str  # owner/name
    type: str
    value: str

    def line(self) -> str:
        return f"{self.package} {self.question} {self.type} {self.value}".rstrip()


def debconf_answers(inv: Inventory, host: Host, questions: Mapping[str, Question]) -> tuple[DebconfAnswer, ...]:
    """The answers to the packages' questions for ``host`` (only for packages its role installs): the values
    are the package registry's (``packages.py``), each question's type is its template's."""
    answers = []
    for name, (package, value) in packages.answers(inv, host).items():
        question = questions.get(name)
        if question is None:
            raise InputError(f"the media answer {name}, but no debian/*.templates declares it")
        answers.append(DebconfAnswer(package, name, question.type, value))
    return tuple(answers)


def network(inv: Inventory, host: Host) -> dict[str, Any]:
    """The static netplan configuration of the plan's section 1.2."""
    net = inv.network
    return {
        "version": 2,
        "ethernets": {
            net.interface: {
                "dhcp4": False,
                "dhcp6": False,
                "addresses": [f"{host.address}/{net.cidr.prefixlen}"],
                "routes": [{"to": "default", "via": str(net.gateway)}],
                "nameservers": {"addresses": [str(a) for a in net.dns]},
            }
        },
    }


def storage(host: Host) -> dict[str, Any]:
    """A curtin action list: GPT, an EFI system partition per disk, /boot, and LVM for /.

    With two disks, /boot and the LVM physical volume are RAID 1 arrays over
    both, and each disk carries its own ESP with GRUB, so the machine boots
    from either disk alone.
    """
    config: list[dict[str, Any]] = []
    boot_parts: list[str] = []
    pv_parts: list[str] = []
    raid = len(host.disks) == 2
    for i, path in enumerate(host.disks):
        disk = f"disk{i}"
        config.append(
            {
                "type": "disk",
                "id": disk,
                "path": path,
                "ptable": "gpt",
                "wipe": "superblock-recursive",
                "preserve": False,
                "grub_device": False,
            }
        )
        parts: list[tuple[str, str | int, dict[str, Any]]] = [
            ("esp", ESP_SIZE, {"flag": "boot", "grub_device": True}),
            ("boot", BOOT_SIZE, {}),
            ("pv", -1, {}),
        ]
        for number, (role, size, extra) in enumerate(parts, 1):
            config.append(
                {
                    "type": "partition",
                    "id": f"{disk}-{role}",
                    "device": disk,
                    "number": number,
                    "size": size,
                    "wipe": "superblock",
                    "preserve": False,
                    **extra,
                }
            )
        config.append({"type": "format", "id": f"{disk}-esp-fs", "volume": f"{disk}-esp", "fstype": "fat32"})
        boot_parts.append(f"{disk}-boot")
        pv_parts.append(f"{disk}-pv")
    if raid:
        config += [
            {"type": "raid", "id": "md-boot", "name": "md0", "raidlevel": 1, "devices": boot_parts, "preserve": False},
            {"type": "raid", "id": "md-pv", "name": "md1", "raidlevel": 1, "devices": pv_parts, "preserve": False},
        ]
        boot_volume, pv_volume = "md-boot", "md-pv"
    else:
        boot_volume, pv_volume = boot_parts[0], pv_parts[0]
    config += [
        {"type": "format", "id": "boot-fs", "volume": boot_volume, "fstype": "ext4"},
        {"type": "lvm_volgroup", "id": "vg0", "name": VOLUME_GROUP, "devices": [pv_volume], "preserve": False},
        # No size: the root volume takes the whole volume group.
        {"type": "lvm_partition", "id": "lv-root", "name": "root", "volgroup": "vg0", "preserve": False},
        {"type": "format", "id": "root-fs", "volume": "lv-root", "fstype": "ext4"},
        {"type": "mount", "id": "root-mount", "device": "root-fs", "path": "/"},
        {"type": "mount", "id": "boot-mount", "device": "boot-fs", "path": "/boot"},
        # The first disk's ESP is mounted; GRUB goes to every ESP (grub_device).
        {"type": "mount", "id": "esp-mount", "device": "disk0-esp-fs", "path": "/boot/efi"},
    ]
    return {"config": config}


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(armored: str, name: str) -> bytes:
    """The binary OpenPGP public key of an armored block (what ``gpg --dearmor`` does), checksum checked."""
    lines = [line.strip() for line in armored.strip().splitlines()]
    if (
        not lines
        or lines[0] != "-----BEGIN PGP PUBLIC KEY BLOCK-----"
        or lines[-1] != "-----END PGP PUBLIC KEY BLOCK-----"
    ):
        raise InputError(f"{name}: is not an armored PGP public key block")
    body = lines[1:-1]
    while body and ":" in body[0]:  # armor headers (Comment:, Version:)
        body = body[1:]
    checksum = None
    if body and body[-1].startswith("="):
        checksum = body.pop()
    try:
        data = base64.b64decode("".join(body), validate=True)
        want = int.from_bytes(base64.b64decode(checksum[1:]), "big") if checksum else None
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{name}: the armored key is not valid base64") from exc
    if want is not None and want != _crc24(data):
        raise InputError(f"{name}: the armored key's checksum is wrong (the file is damaged)")
    if not is_public_key(data):
        raise InputError(f"{name}: does not hold an OpenPGP public key")
    return data


def is_public_key(data: bytes) -> bool:
    """Whether ``data`` starts with an OpenPGP public-key packet (tag 6, old or new format)."""
    return bool(data) and (data[0] & 0xFC == 0x98 or data[0] == 0xC6)


REPOSITORY_SCRIPT = (
    "set -e; "
    "install -d -m 0755 /target{keyring_dir}; "
    'printf %s "$1" | base64 -d > /target{keyring}; '
    'printf %s "$2" > /target{sources}; '
    "chmod 0644 /target{keyring} /target{sources}"
)


def add_repository(inv: Inventory, key: bytes) -> list[str]:
    """The late-command that adds our repository to the target, trusted for that source only.

    curtin (which applies the autoinstall ``apt:`` section) writes a source's
    ``key:`` to /etc/apt/trusted.gpg.d/, trusted for every source, and knows
    no ``$KEY_FILE``; so the keyring and a deb822 source with ``Signed-By``
    are written here instead.  Runs in the installer, the target at /target;
    the key and the source text are arguments, never parsed by a shell.
    """
    script = REPOSITORY_SCRIPT.format(
        keyring_dir=KEYRING_PATH.rsplit("/", 1)[0], keyring=KEYRING_PATH, sources=SOURCES_PATH
    )
    return [
        "sh",
        "-c",
        script,
        "add-polymarket-repository",
        base64.b64encode(key).decode(),
        repo.sources_file(inv.apt.url),
    ]


def install_command(packages: tuple[str, ...]) -> list[str]:
    return ["curtin", "in-target", "--", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", *packages]


def late_commands(inv: Inventory, host: Host, key: bytes) -> list[list[str]]:
    """Add our repository, then install the role's packages in the target (``curtin in-target`` = a chroot).

    The debconf answers are in the debconf database by then (curtin applies
    ``debconf-selections`` when it configures apt), so nothing asks.
    """
    return [
        add_repository(inv, key),
        ["curtin", "in-target", "--", "apt-get", "update"],
        install_command(inv.packages(host)),
    ]


def cloud_config(inv: Inventory, host: Host) -> dict[str, Any]:
    """The installed system's first-boot cloud-config: the admin user, key-only SSH."""
    return {
        "hostname": host.name,
        "users": [
            {
                "name": inv.admin.user,
                "gecos": "Administrator",
                "groups": ["adm", "sudo"],
                "shell": "/bin/bash",
                # No password at all: the account is locked for password use and
                # the SSH keys are the only way in, so sudo cannot ask one.
                "lock_passwd": True,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": list(inv.admin.ssh_keys),
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
    }


def autoinstall(inv: Inventory, host: Host, key: bytes, questions: Mapping[str, Question]) -> dict[str, Any]:
    answers = debconf_answers(inv, host, questions)
    return {
        "version": 1,
        # The plan's "minimal installation", no snaps.
        "source": {"id": "ubuntu-server-minimal", "search_drivers": False},
        "refresh-installer": {"update": False},
        "locale": host.locale,
        "keyboard": {"layout": host.keyboard},
        "timezone": host.timezone,
        "network": network(inv, host),
        "storage": storage(host),
        "ssh": {"install-server": True, "allow-pw": False},
        "debconf-selections": "".join(a.line() + "\n" for a in answers),
        "late-commands": late_commands(inv, host, key),
        "user-data": cloud_config(inv, host),
        "shutdown": "reboot",
    }


class _Dumper(yaml.SafeDumper):
    """Block style everywhere; multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True)


def user_data(inv: Inventory, host: Host, key: bytes, inventory_name: str, questions: Mapping[str, Question]) -> str:
    header = HEADER.format(host=host.name, role=host.role, inventory=inventory_name)
    return header + dump_yaml({"autoinstall": autoinstall(inv, host, key, questions)})


def meta_data(host: Host, user_data_text: str) -> str:
    """NoCloud meta-data; the instance-id changes when the user-data does."""
    digest = hashlib.sha256(user_data_text.encode()).hexdigest()[:12]
    return dump_yaml({"instance-id": f"polymarket-{host.name}-{digest}", "local-hostname": host.name})
