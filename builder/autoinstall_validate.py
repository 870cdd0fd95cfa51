"""Validate rendered autoinstall user-data before anything is written.

Three layers:

1. the ``autoinstall:`` section against the installer's JSON schema
   (``autoinstall/autoinstall-schema.json``, subiquity 24.04.4's);
2. the project's own checks for what that schema leaves open: unknown
   top-level keys (the installer only warns), the ``storage`` action list,
   ``apt.sources`` (no key that curtin would trust for every source), the
   late-commands that add our repository (Signed-By its own keyring) and
   install the role's packages, the ``debconf-selections`` lines and the first-boot ``user-data`` (no password,
   SSH keys);
3. ``cloud-init schema`` on the whole file and on the inner cloud-config,
   when cloud-init is installed on this host (the tests run it in a trixie
   root filesystem).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from debian.deb822 import Deb822

from builder import autoinstall_config as config
from builder import debconf
from builder.errors import CommandFailed, InputError, ToolMissing
from builder.run import SAFE_PATH, run
from builder.text import is_http_url

log = logging.getLogger(__name__)

SCHEMA = Path(__file__).resolve().parent.parent / "autoinstall" / "autoinstall-schema.json"

SOURCE_LINE = re.compile(r"deb \[signed-by=/\S+\] (https?|file):\S+ [a-z0-9][a-z0-9./-]* [a-z0-9][a-z0-9 ./-]*")
DEBCONF_LINE = re.compile(
    r"([a-z0-9][a-z0-9+.-]+) (\1/[A-Za-z0-9_./-]+) (string|boolean|select|multiselect|note|password) ?([^\n]*)"
)

# curtin storage actions this generator uses and the fields each may carry.
STORAGE_FIELDS: dict[str, frozenset[str]] = {
    "disk": frozenset({"id", "type", "path", "ptable", "wipe", "preserve", "grub_device", "match", "serial", "name"}),
    "partition": frozenset(
        {"id", "type", "device", "number", "size", "wipe", "preserve", "flag", "grub_device", "name", "offset"}
    ),
    "raid": frozenset({"id", "type", "name", "raidlevel", "devices", "spare_devices", "preserve", "ptable"}),
    "lvm_volgroup": frozenset({"id", "type", "name", "devices", "preserve"}),
    "lvm_partition": frozenset({"id", "type", "name", "volgroup", "size", "preserve", "wipe"}),
    "format": frozenset({"id", "type", "volume", "fstype", "label", "preserve"}),
    "mount": frozenset({"id", "type", "device", "path", "options"}),
}
# Which field of an action refers to which kinds of action.
STORAGE_REFS: dict[str, tuple[str, frozenset[str]]] = {
    "partition": ("device", frozenset({"disk", "raid"})),
    "lvm_partition": ("volgroup", frozenset({"lvm_volgroup"})),
    "format": ("volume", frozenset({"partition", "raid", "lvm_partition", "disk"})),
    "mount": ("device", frozenset({"format"})),
}
STORAGE_LIST_REFS: dict[str, tuple[str, frozenset[str]]] = {
    "raid": ("devices", frozenset({"partition", "disk"})),
    "lvm_volgroup": ("devices", frozenset({"partition", "raid", "disk"})),
}
FORBIDDEN_USER_KEYS = frozenset({"passwd", "plain_text_passwd", "hashed_passwd", "password"})


@cache
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return data


def _path(parts: Iterable[Any]) -> str:
    out = "autoinstall"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def check_schema(name: str, section: Mapping[str, Any]) -> None:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        raise ToolMissing("python3-jsonschema is not installed", hint="apt-get install python3-jsonschema") from None
    validator_cls = jsonschema.validators.validator_for(schema())
    validator = validator_cls(schema())
    errors = sorted(validator.iter_errors(section), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise InputError(f"{name}: {_path(err.absolute_path)}: {err.message} (installer schema)")


def check_top_level(name: str, section: Mapping[str, Any]) -> None:
    known = schema()["properties"]
    for key in section:
        if key not in known:
            raise InputError(f"{name}: autoinstall: unknown key {key!r} (the installer would ignore it)")
    for key in ("version", "storage", "network", "user-data", "ssh", "late-commands", "shutdown"):
        if key not in section:
            raise InputError(f"{name}: autoinstall: missing {key!r}")


def check_storage(name: str, storage: Mapping[str, Any]) -> None:
    def fail(where: str, text: str) -> InputError:
        return InputError(f"{name}: autoinstall.storage.{where}: {text}")

    for key in storage:
        if key not in ("config", "swap"):
            raise fail(key, "unknown key (this generator writes an action list under 'config')")
    config = storage.get("config")
    if not isinstance(config, list) or not config:
        raise fail("config", "must be a non-empty list of curtin actions")
    kinds: dict[str, str] = {}
    for i, action in enumerate(config):
        where = f"config[{i}]"
        if not isinstance(action, dict):
            raise fail(where, "must be a mapping")
        kind, ident = action.get("type"), action.get("id")
        if kind not in STORAGE_FIELDS:
            raise fail(where, f"unknown action type {kind!r}")
        if not isinstance(ident, str) or not ident:
            raise fail(where, "has no id")
        if ident in kinds:
            raise fail(where, f"id {ident!r} is used twice")
        extra = set(action) - STORAGE_FIELDS[kind]
        if extra:
            raise fail(where, f"unknown field {sorted(extra)[0]!r} for a {kind}")
        if kind in STORAGE_REFS:
            field, allowed = STORAGE_REFS[kind]
            if kinds.get(action.get(field, "")) not in allowed:
                raise fail(where, f"{field} {action.get(field)!r} is not an earlier {'/'.join(sorted(allowed))}")
        if kind in STORAGE_LIST_REFS:
            field, allowed = STORAGE_LIST_REFS[kind]
            refs = action.get(field)
            if not isinstance(refs, list) or not refs:
                raise fail(where, f"{field} must be a non-empty list")
            for ref in refs:
                if kinds.get(ref) not in allowed:
                    raise fail(where, f"{field}: {ref!r} is not an earlier {'/'.join(sorted(allowed))}")
        if kind == "raid" and (action.get("raidlevel") != 1 or len(action.get("devices", [])) != 2):
            raise fail(where, "a RAID must be level 1 over two devices")
        if kind == "partition" and "size" not in action:
            raise fail(where, "a partition needs a size")
        kinds[ident] = kind
    mounts = [a.get("path") for a in config if a["type"] == "mount"]
    for required in ("/", "/boot/efi"):
        if required not in mounts:
            raise fail("config", f"nothing is mounted at {required}")
    if len(mounts) != len(set(mounts)):
        raise fail("config", "a path is mounted twice")
    if not any(a.get("grub_device") for a in config):
        raise fail("config", "no action has grub_device: true (the machine would not boot)")


def check_apt(name: str, apt: Mapping[str, Any]) -> None:
    """Extra apt sources must be signed by their own keyring; curtin would trust a ``key:`` for every source."""

    def fail(where: str, text: str) -> InputError:
        return InputError(f"{name}: autoinstall.apt.{where}: {text}")

    sources = apt.get("sources", {})
    if not isinstance(sources, dict):
        raise fail("sources", "must be a mapping")
    for src_name, src in sources.items():
        where = f"sources.{src_name}"
        if not isinstance(src, dict):
            raise fail(where, "must be a mapping")
        unsafe = {"key", "keyid", "keyserver"} & set(src)
        if unsafe:
            raise fail(
                f"{where}.{sorted(unsafe)[0]}",
                "curtin would trust this key for every source (trusted.gpg.d); use a keyring with Signed-By",
            )
        line = src.get("source")
        if not isinstance(line, str) or not SOURCE_LINE.fullmatch(line):
            raise fail(f"{where}.source", f"{line!r} is not 'deb [signed-by=/KEYRING] URL SUITE COMPONENT...'")


def _argv(name: str, i: int, cmd: Any) -> list[str]:
    if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd) or not cmd:
        raise InputError(f"{name}: autoinstall.late-commands[{i}]: must be an argument list")
    return list(cmd)


def check_late_commands(name: str, ai: Mapping[str, Any]) -> tuple[str, ...]:
    """Our repository is added with a Signed-By keyring, then the packages are installed; returns them."""
    commands = [_argv(name, i, c) for i, c in enumerate(ai.get("late-commands", []))]

    def fail(i: int, text: str) -> InputError:
        return InputError(f"{name}: autoinstall.late-commands[{i}]: {text}")

    repo_at = next(
        (i for i, c in enumerate(commands) if c[:4] == ["sh", "-c", c[2], "add-polymarket-repository"]), None
    )
    if repo_at is None:
        raise InputError(f"{name}: autoinstall.late-commands: our repository is never added")
    cmd = commands[repo_at]
    if len(cmd) != 6:
        raise fail(repo_at, "expected: sh -c SCRIPT add-polymarket-repository KEY-BASE64 SOURCES")
    try:
        key = base64.b64decode(cmd[4], validate=True)
    except (binascii.Error, ValueError):
        raise fail(repo_at, "the key is not base64") from None
    if not config.is_public_key(key):
        raise fail(repo_at, "the key is not an OpenPGP public key")
    paragraphs = list(Deb822.iter_paragraphs(cmd[5]))
    if len(paragraphs) != 1:
        raise fail(repo_at, "the source must be one deb822 paragraph")
    source = paragraphs[0]
    if source.get("Signed-By") != config.KEYRING_PATH or f"> /target{config.KEYRING_PATH};" not in cmd[2]:
        raise fail(repo_at, f"the source must be Signed-By the keyring it writes, {config.KEYRING_PATH}")
    if source.get("Types") != "deb" or not is_http_url(source.get("URIs", "")):
        raise fail(repo_at, "the source must be 'Types: deb' with one http(s) URI")
    installs = [i for i, c in enumerate(commands) if c[:8] == config.install_command(())]
    if len(installs) != 1 or installs[0] < repo_at:
        raise InputError(f"{name}: autoinstall.late-commands: one package install, after the repository is added")
    packages = tuple(commands[installs[0]][8:])
    if not packages:
        raise fail(installs[0], "installs no package")
    return packages


def check_debconf(name: str, text: Any, packages: Iterable[str], questions: Mapping[str, debconf.Question]) -> None:
    """Each line answers a question its package's templates declare, with the template's type and choices."""
    if not isinstance(text, str):
        raise InputError(f"{name}: autoinstall.debconf-selections: must be a string")
    installed = set(packages)
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{name}: autoinstall.debconf-selections line {n}"
        m = DEBCONF_LINE.fullmatch(line)
        if not m:
            raise InputError(f"{where}: {line!r} is not 'owner question type value'")
        owner, question_name, kind, value = m.groups()
        if owner not in installed:
            raise InputError(f"{where}: {owner} is not installed")
        question = questions.get(question_name)
        if question is None or question.package != owner:
            raise InputError(f"{where}: {question_name} is not a question of debian/{owner}.templates")
        problem = debconf.answer_problem(question, kind, value)
        if problem:
            raise InputError(f"{where}: {question_name} {problem}")


def check_user_data(name: str, ai: Mapping[str, Any]) -> None:
    def fail(where: str, text: str) -> InputError:
        return InputError(f"{name}: autoinstall.{where}: {text}")

    ssh = ai.get("ssh", {})
    if ssh.get("install-server") is not True or ssh.get("allow-pw") is not False:
        raise fail("ssh", "must install the server with password logins off")
    ud = ai["user-data"]
    if ud.get("ssh_pwauth") is not False:
        raise fail("user-data.ssh_pwauth", "must be false")
    if "chpasswd" in ud or "password" in ud:
        raise fail("user-data", "must set no password")
    users = ud.get("users")
    if not isinstance(users, list) or not users:
        raise fail("user-data.users", "must create the admin user (there is no identity section)")
    for i, user in enumerate(users):
        if not isinstance(user, dict):
            raise fail(f"user-data.users[{i}]", "must be a mapping")
        bad = FORBIDDEN_USER_KEYS & set(user)
        if bad:
            raise fail(f"user-data.users[{i}].{sorted(bad)[0]}", "no password in user-data")
        if user.get("lock_passwd") is not True or not user.get("ssh_authorized_keys"):
            raise fail(f"user-data.users[{i}]", "needs lock_passwd: true and ssh_authorized_keys")


def parse_user_data(name: str, text: str) -> dict[str, Any]:
    if not text.startswith("#cloud-config\n"):
        raise InputError(f"{name}: does not start with #cloud-config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"autoinstall"}:
        raise InputError(f"{name}: the top level must hold only 'autoinstall:'")
    section = data["autoinstall"]
    if not isinstance(section, dict):
        raise InputError(f"{name}: autoinstall: must be a mapping")
    return section


def validate(name: str, text: str, questions: Mapping[str, debconf.Question] | None = None) -> dict[str, Any]:
    """All checks but cloud-init's on one rendered user-data; returns its autoinstall section.  The debconf
    answers are checked against ``questions`` (default: the templates of the builder's own tree)."""
    ai = parse_user_data(name, text)
    check_schema(name, ai)
    check_top_level(name, ai)
    if ai.get("version") != 1:
        raise InputError(f"{name}: autoinstall.version: must be 1")
    check_storage(name, ai["storage"])
    check_apt(name, ai.get("apt", {}))
    packages = check_late_commands(name, ai)
    if questions is None:
        questions = debconf.load(SCHEMA.parent.parent)
    check_debconf(name, ai.get("debconf-selections", ""), packages, questions)
    check_user_data(name, ai)
    return ai


def cloud_init_available() -> bool:
    return shutil.which("cloud-init", path=SAFE_PATH) is not None


def cloud_init_schema(files: Mapping[str, str]) -> bool:
    """Run ``cloud-init schema`` on each {name: user-data text} and on its inner cloud-config.

    Returns False (and logs it) when cloud-init is not installed here.
    """
    if not cloud_init_available():
        log.info("cloud-init is not installed: skipped 'cloud-init schema' (apt-get install cloud-init to run it)")
        return False
    with tempfile.TemporaryDirectory(prefix="pm-cloud-init-") as tmp:
        for n, (name, text) in enumerate(sorted(files.items())):
            inner = "#cloud-config\n" + yaml.safe_dump(parse_user_data(name, text)["user-data"], sort_keys=False)
            for label, content in ((name, text), (f"{name} (autoinstall.user-data)", inner)):
                path = Path(tmp) / f"{n}-{len(label)}.yaml"
                path.write_text(content, encoding="utf-8")
                try:
                    run(["cloud-init", "schema", "--config-file", path])
                except CommandFailed as exc:
                    detail = exc.stderr_tail.replace("\n", " ").strip()
                    raise InputError(f"{label}: cloud-init schema: {detail}") from exc
    return True
