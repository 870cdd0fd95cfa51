"""The autoinstall configuration of one host, built as data from the inventory.

Nothing here is template text: every structure is a Python value that
``autoinstall.py`` serialises with yaml, so quoting and indentation can never
be wrong.  One function per section, like subiquity's own model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import yaml

from builder.inventory import Host, Inventory

# The apt source entry's name: curtin writes /etc/apt/sources.list.d/polymarket.list
# and the key, given as $KEY_FILE, to a keyring of its own, so the key signs our
# repository only (never a key in trusted.gpg.d, trusted for every source).
APT_SOURCE_NAME = "polymarket"

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
    question: str
    type: str
    value: str

    def line(self) -> str:
        return f"{self.package} {self.package}/{self.question} {self.type} {self.value}".rstrip()


def debconf_answers(inv: Inventory, host: Host) -> tuple[DebconfAnswer, ...]:
    """The answers to the packages' questions for ``host`` (only for packages its role installs)."""
    peer = inv.peer(host)
    answers = [
        DebconfAnswer("polymarket-hardening", "allow_users", "string", " ".join(inv.allow_users(host))),
        DebconfAnswer("polymarket-hardening", "admin_network", "string", str(inv.network.admin_network)),
        DebconfAnswer("polymarket-ha", "role", "select", str(host.role)),
        DebconfAnswer("polymarket-ha", "own_address", "string", str(host.address)),
        DebconfAnswer("polymarket-ha", "peer_address", "string", str(peer.address) if peer else ""),
        DebconfAnswer("polymarket-ha", "virtual_ip", "string", str(inv.network.virtual_ip)),
    ]
    packages = inv.packages(host)
    return tuple(a for a in answers if a.package in packages)


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


def apt_source_line(inv: Inventory) -> str:
    return f"deb [signed-by=$KEY_FILE] {inv.apt.url} {inv.apt.suite} {inv.apt.component}"


def apt(inv: Inventory, key: str) -> dict[str, Any]:
    return {"sources": {APT_SOURCE_NAME: {"source": apt_source_line(inv), "key": key}}}


def late_commands(inv: Inventory, host: Host) -> list[list[str]]:
    """Steps after the packages are in: fail the install loudly when one is missing.

    Subiquity runs late-commands in the installer; ``curtin in-target --``
    runs the command inside the installed system (a chroot).
    """
    packages = " ".join(inv.packages(host))
    verify = (
        f"for p in {packages}; do "
        "s=$(dpkg-query -W -f='${db:Status-Status}' \"$p\" 2>/dev/null) || s=missing; "
        '[ "$s" = installed ] || { echo "autoinstall: package $p is $s" >&2; exit 1; }; '
        "done"
    )
    return [["curtin", "in-target", "--", "sh", "-c", verify]]


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


def autoinstall(inv: Inventory, host: Host, key: str) -> dict[str, Any]:
    answers = debconf_answers(inv, host)
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
        "apt": apt(inv, key),
        "debconf-selections": "".join(a.line() + "\n" for a in answers),
        "packages": list(inv.packages(host)),
        "late-commands": late_commands(inv, host),
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


def user_data(inv: Inventory, host: Host, key: str, inventory_name: str) -> str:
    header = HEADER.format(host=host.name, role=host.role, inventory=inventory_name)
    return header + dump_yaml({"autoinstall": autoinstall(inv, host, key)})


def meta_data(host: Host, user_data_text: str) -> str:
    """NoCloud meta-data; the instance-id changes when the user-data does."""
    digest = hashlib.sha256(user_data_text.encode()).hexdigest()[:12]
    return dump_yaml({"instance-id": f"polymarket-{host.name}-{digest}", "local-hostname": host.name})
