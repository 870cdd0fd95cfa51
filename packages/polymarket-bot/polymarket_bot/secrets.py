"""Secrets: a value that is never shown, and where secrets live at rest.

At rest, each secret is a systemd credential encrypted by ``systemd-creds``
(the host key in /var/lib/systemd/credential.secret, plus the TPM2 chip when
the host has one) in ``/etc/polymarket/credentials/NAME.cred``. The unit hands
it to the service decrypted, with ``LoadCredentialEncrypted=``, in
``$CREDENTIALS_DIRECTORY/NAME``; ``SetCredential=NAME:not provisioned`` is its
fallback when the file does not exist (systemd 252-257 treat a missing file
with a fallback as not fatal).

The plaintext only ever travels through pipes (stdin of ``secret set``, the
stdin and stdout of ``systemd-creds``) and this process's memory; what reaches
the disk is the ciphertext, written next to its final name and renamed over
it.
"""

from __future__ import annotations

import datetime
import getpass
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .errors import BotError

# The closed set of secrets. The CLOB API credentials are not among them: the bot derives
# them from PRIVATE_KEY at start (L1 auth) and keeps them in memory only.
SECRET_NAMES = ("PRIVATE_KEY", "API_SECRET_KEY", "ENCRYPTION_KEY")
DEFAULT_STORE = "/etc/polymarket/credentials"
# The unit's SetCredential= fallback for a secret not provisioned: not a valid value of any secret.
NOT_PROVISIONED = "not provisioned"
MAX_VALUE = 4096
# A dashboard token set with ``secret set`` has at least 32 characters (openssl rand -hex 32 gives 64).
MIN_TOKEN = 32
TOKEN_HINT = "openssl rand -hex 32 | sudo polymarket-bot secret set API_SECRET_KEY"
# What dpkg leaves beside a conffile: the administrator's old file when the new one was taken at the
# prompt (.dpkg-old), a backup (.dpkg-bak, dpkg-maintscript-helper), the package's version (.dpkg-dist).
DPKG_SIBLINGS = (".dpkg-old", ".dpkg-bak", ".dpkg-dist")
KEY_CHOICES = ("auto", "host", "host+tpm2", "tpm2")

BAD_INPUT, NOT_ROOT, NO_TOOL, TOOL_FAILED = 2, 1, 3, 4


class Secret:
    """Holds a sensitive string; every textual form of it is redacted."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


class SecretError(BotError):
    """A ``secret`` command that cannot be done; ``status`` is the exit code."""

    def __init__(self, message: str, hint: str | None = None, status: int = 1) -> None:
        super().__init__(message, hint)
        self.status = status


# ---- values ------------------------------------------------------------------------------------
def is_unset(name: str, value: str) -> bool:
    """Empty, a shipped placeholder or the unit's fallback: no secret at all."""
    from .config import PLACEHOLDER_KEYS, PLACEHOLDER_SECRETS

    placeholders = PLACEHOLDER_KEYS if name == "PRIVATE_KEY" else PLACEHOLDER_SECRETS
    return value.strip() in placeholders or value.strip() == NOT_PROVISIONED


def check_name(name: str) -> str:
    if name not in SECRET_NAMES:
        raise SecretError(f"unknown secret {name!r}; the secrets are {', '.join(SECRET_NAMES)}", status=BAD_INPUT)
    return name


def normalise(name: str, raw: str, *, new: bool = True) -> str:
    """The value to store, or SecretError; no message ever contains the value.

    NEW: a value chosen now (``secret set``), so a dashboard token must have MIN_TOKEN characters;
    a token migrated from .env is kept as it is (migrate warns that it is short)."""
    check_name(name)
    value = raw[:-1] if raw.endswith("\n") else raw
    value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise SecretError(f"{name}: empty value; nothing stored", status=BAD_INPUT)
    if len(value) > MAX_VALUE:
        raise SecretError(f"{name}: longer than {MAX_VALUE} characters; nothing stored", status=BAD_INPUT)
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise SecretError(f"{name}: contains a newline or another control character (value not shown); "
                          "nothing stored", status=BAD_INPUT)
    if is_unset(name, value):
        raise SecretError(f"{name}: that is the placeholder, not a secret; nothing stored", status=BAD_INPUT)
    if name == "PRIVATE_KEY":
        from .config import Invalid, _private_key

        try:
            _private_key(value)
        except Invalid as exc:
            raise SecretError(f"{name}: {exc}; nothing stored", status=BAD_INPUT) from None
        return "0x" + value.strip().removeprefix("0x").removeprefix("0X").lower()
    if name == "ENCRYPTION_KEY":
        # A passphrase may have spaces inside (it never travels in a header); refused, it would stay in
        # plaintext in .env and fail the migration unit at every start.
        if any(not "\x20" <= c <= "\x7e" for c in value) or value != value.strip():
            raise SecretError(f"{name}: must be printable ASCII, without spaces at either end (value not shown); "
                              "nothing stored", status=BAD_INPUT)
    elif any(not "\x21" <= c <= "\x7e" for c in value):
        raise SecretError(f"{name}: must be printable ASCII without spaces (value not shown); nothing stored",
                          status=BAD_INPUT)
    if new and name == "API_SECRET_KEY" and len(value) < MIN_TOKEN:
        raise SecretError(f"{name}: {len(value)} characters, at least {MIN_TOKEN} are needed (a short token can be "
                          "guessed over the network); nothing stored", TOKEN_HINT, status=BAD_INPUT)
    return value


def fingerprint(name: str, value: str, stored: Path | None = None) -> str:
    """What identifies a value without showing it or confirming a guess: the wallet address of the
    key (public, equal on every host: compare primary and standby), else only the length and the
    day the credential was written. A hash of a token, even salted with a salt kept beside it,
    would let whoever reads it (the journal, a backup) test guesses offline."""
    if name == "PRIVATE_KEY":
        from .crypto import address_of

        return f"wallet {address_of(Secret(value))}"
    out = f"{len(value)} chars"
    if stored is not None:
        try:
            day = datetime.datetime.fromtimestamp(stored.stat().st_mtime, datetime.UTC).date()
        except OSError:
            return out
        out += f", set {day.isoformat()}"
    return out


def read_value(stream: TextIO | None = None) -> str:
    """The value from stdin: typed without echo (twice) on a terminal, else read to the end."""
    src = sys.stdin if stream is None else stream
    if src.isatty():
        first = getpass.getpass("value (not shown): ")
        if getpass.getpass("again: ") != first:
            raise SecretError("the two values differ; nothing stored", status=BAD_INPUT)
        return first
    data = src.buffer.read(MAX_VALUE + 3)
    if len(data) > MAX_VALUE + 2:
        raise SecretError(f"the value is longer than {MAX_VALUE} characters; nothing stored", status=BAD_INPUT)
    try:
        return str(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretError("the value is not UTF-8 text; nothing stored", status=BAD_INPUT) from None


# ---- the process side: what the unit delivered --------------------------------------------------
def from_credentials_directory(directory: str | None) -> tuple[dict[str, str], list[str]]:
    """$CREDENTIALS_DIRECTORY/NAME for every secret the unit delivered (the fallback is skipped)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    if not directory:
        return values, problems
    for name in SECRET_NAMES:
        path = Path(directory) / name
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"credential {name}: cannot read {path}: {exc.__class__.__name__}")
            continue
        raw = raw.removesuffix("\n")
        if raw and not is_unset(name, raw):
            values[name] = raw
    return values, problems


# ---- the store: encrypted files -----------------------------------------------------------------
def _creds(args: list[str], data: bytes) -> bytes:
    """systemd-creds ARGS with DATA on stdin; its stdout. Plaintext only ever in the pipes."""
    tool = shutil.which("systemd-creds")
    if tool is None:
        raise SecretError("systemd-creds not found", "apt-get install systemd (252 or newer)", status=NO_TOOL)
    env = dict(os.environ, LC_ALL="C.UTF-8")
    proc = subprocess.run([tool, *args], input=data, capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise SecretError(f"systemd-creds {args[0]} failed: {lines[-1] if lines else f'exit {proc.returncode}'}",
                          status=TOOL_FAILED)
    return proc.stdout


def has_tpm2() -> bool:
    """A usable TPM2 (firmware, driver, kernel, libraries), never inside a container."""
    if not (Path("/dev/tpmrm0").exists() or Path("/dev/tpm0").exists()):
        return False
    virt = shutil.which("systemd-detect-virt")
    if virt and subprocess.run([virt, "--quiet", "--container"], check=False).returncode == 0:
        return False
    tool = shutil.which("systemd-creds")
    return bool(tool) and subprocess.run([str(tool), "has-tpm2", "--quiet"], capture_output=True,
                                         check=False).returncode == 0


def key_args(choice: str) -> list[str]:
    """auto: host key + TPM2 when there is a TPM2, else the host key. TPM2 sealing binds to no PCR
    (--tpm2-pcrs=): bound to PCR 7, a firmware or Secure Boot db update would lock the bot out."""
    if choice not in KEY_CHOICES:
        raise SecretError(f"--with-key: one of {', '.join(KEY_CHOICES)}, got {choice!r}", status=BAD_INPUT)
    if choice == "auto":
        choice = "host+tpm2" if has_tpm2() else "host"
    return [f"--with-key={choice}"] + (["--tpm2-pcrs="] if "tpm2" in choice else [])


def encrypt(name: str, value: str, choice: str = "auto") -> bytes:
    """The ciphertext of VALUE, proven to decrypt on this host before it is returned."""
    ciphertext = _creds(["encrypt", f"--name={name}", *key_args(choice), "-", "-"], value.encode())
    if decrypt(name, ciphertext) != value:
        raise SecretError(f"{name}: the new credential does not decrypt to the value; nothing stored",
                          status=TOOL_FAILED)
    return ciphertext


def decrypt(name: str, ciphertext: bytes) -> str:
    return _creds(["decrypt", f"--name={name}", "--newline=no", "-", "-"], ciphertext).decode("utf-8")


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SecretError(f"{what} needs root", f"sudo polymarket-bot {what}", status=NOT_ROOT)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """DATA as PATH: a new file beside it (O_EXCL, mode set before any byte), fsync, rename, fsync dir."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class Entry:
    name: str
    state: str  # "credential", "undecryptable", "plaintext", "unset"
    fingerprint: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Store:
    directory: Path

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> Store:
        env = os.environ if environ is None else environ
        return cls(Path(env.get("POLYMARKET_CREDENTIALS_DIR") or DEFAULT_STORE))

    def path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.cred"

    def ensure(self) -> None:
        """The directory: created 0700 root when missing; refused when not a root-owned directory."""
        d = self.directory
        if not d.exists() and not d.is_symlink():
            try:
                d.mkdir(mode=0o700)
            except FileNotFoundError:
                raise SecretError(f"{d.parent} does not exist", "is polymarket-bot installed?") from None
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode):
            raise SecretError(f"{d} is not a directory (a symlink?); nothing stored")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise SecretError(f"{d} must be owned by root and writable by root only; nothing stored")
        if st.st_mode & 0o077:
            os.chmod(d, 0o700)

    def load(self, name: str) -> bytes | None:
        path = self.path(name)
        if not path.is_file():
            return None
        return path.read_bytes()

    def set(self, name: str, value: str, choice: str = "auto", *, new: bool = True) -> str:
        """Encrypt and store; the fingerprint of the value."""
        value = normalise(name, value, new=new)
        ciphertext = encrypt(name, value, choice)
        self.ensure()
        write_atomic(self.path(name), ciphertext)
        return fingerprint(name, value, self.path(name))

    def remove(self, name: str) -> None:
        path = self.path(name)
        if not path.is_file():
            raise SecretError(f"{name}: no credential {path}", status=BAD_INPUT)
        path.unlink()

    def values(self) -> tuple[dict[str, str], list[str]]:
        """Every stored secret decrypted (for validate-config run by root outside the unit)."""
        values: dict[str, str] = {}
        problems: list[str] = []
        for name in SECRET_NAMES:
            ciphertext = self.load(name)
            if ciphertext is None:
                continue
            try:
                values[name] = decrypt(name, ciphertext)
            except SecretError as exc:
                problems.append(f"credential {name}: cannot be decrypted on this host ({exc}); "
                                f"the service will not start: polymarket-bot secret set {name}")
        return values, problems

    def entries(self, env_file: Path | None) -> list[Entry]:
        # NAME -> (the first file holding it in plaintext: the env file, then dpkg's copies; the value)
        plain: dict[str, tuple[Path, str]] = {}
        for path in env_files(env_file):
            for name, value in plaintext_in(path).items():
                plain.setdefault(name, (path, value))
        out: list[Entry] = []
        for name in SECRET_NAMES:
            ciphertext = self.load(name)
            if ciphertext is not None:
                try:
                    value = decrypt(name, ciphertext)
                except SecretError:
                    out.append(Entry(name, "undecryptable", "", f"not on this host's key: secret set {name}"))
                else:
                    note = f"also in plaintext in {plain[name][0]}: secret migrate" if name in plain else ""
                    out.append(Entry(name, "credential", fingerprint(name, value, self.path(name)), note))
            elif name in plain:
                out.append(Entry(name, "plaintext", _safe_fingerprint(name, plain[name][1]),
                                 f"in {plain[name][0]}: secret migrate"))
            else:
                out.append(Entry(name, "unset"))
        return out


def _safe_fingerprint(name: str, value: str) -> str:
    try:
        return fingerprint(name, normalise(name, value, new=False))
    except (SecretError, ValueError):
        return "(invalid value)"


# ---- migration of plaintext in the env file ------------------------------------------------------
def _env_line(line: str) -> tuple[str, str] | None:
    from .config import env_line

    try:
        return env_line(line)
    except ValueError:
        return None


def env_files(env_file: Path | None) -> list[Path]:
    """The env file, then what dpkg leaves beside it: after an upgrade that took the package's new
    .env, the administrator's old file, secrets and all, is .env.dpkg-old."""
    if env_file is None:
        return []
    return [env_file, *(env_file.with_name(env_file.name + suffix) for suffix in DPKG_SIBLINGS)]


def split_lines(text: str) -> list[str]:
    """Lines with their ends, split at LF only: CRLF, a lone CR and a last line without an end are
    kept byte for byte when the lines are joined again."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _read(env_file: Path) -> str:
    return env_file.read_bytes().decode("utf-8")  # no newline translation


def plaintext_in(env_file: Path | None) -> dict[str, str]:
    """Secrets with a real value in the env file (the last line of a key wins, as for the bot)."""
    found: dict[str, str] = {}
    if env_file is None:
        return found
    try:
        text = _read(env_file)
    except (OSError, UnicodeDecodeError):
        return found
    for line in split_lines(text):
        kv = _env_line(line)
        if kv and kv[0] in SECRET_NAMES:
            if is_unset(kv[0], kv[1]):
                found.pop(kv[0], None)
            else:
                found[kv[0]] = kv[1]
    return found


_COMMENT = re.compile(r"\s*#[#\s]*(.*)")


def commented_in(text: str) -> list[tuple[int, str]]:
    """(line number, NAME) of each commented-out line with a real secret (#PRIVATE_KEY=0x...): never
    migrated (it is not the value in use, maybe an old wallet's only copy), never silently left."""
    found: list[tuple[int, str]] = []
    for no, line in enumerate(split_lines(text), 1):
        m = _COMMENT.fullmatch(line.rstrip("\r\n"))
        kv = _env_line(m.group(1)) if m else None
        if kv and kv[0] in SECRET_NAMES and not is_unset(kv[0], kv[1]):
            found.append((no, kv[0]))
    return found


def commented_warnings(env_file: Path | None) -> list[str]:
    out: list[str] = []
    for path in env_files(env_file):
        try:
            text = _read(path)
        except (OSError, UnicodeDecodeError):
            continue
        out += [f"{path}:{no}: {name}: a value on a commented-out line, in plaintext (a comment is never "
                "migrated): keep it in your password manager and delete the line; rotate it if it was ever used"
                for no, name in commented_in(text)]
    return out


@dataclass
class Migration:
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exposed: set[str] = field(default_factory=set)  # found in plaintext, now blanked


def migrate(store: Store, env_file: Path, choice: str = "auto") -> Migration:
    """Move every real secret of ENV_FILE, then of dpkg's copies of it, into the store, and blank it there.

    Idempotent. The credentials are written (and proven to decrypt) before a file is rewritten once,
    atomically, with its owner and mode, its other lines byte for byte; a failure leaves it as it was.
    A secret with a problem stays where it is, and is a problem (exit 2).
    """
    result = Migration()
    for path in env_files(env_file):
        _migrate_file(store, path, choice, result)
    if result.exposed:
        names = ", ".join(sorted(result.exposed))
        result.warnings.append(
            f"{names} sat in plaintext: the copies made before today still hold it (polymarket-backup snapshots "
            "and their offsite copies, older backups and disk snapshots, a .env.dpkg-old, the freed disk blocks "
            "of the old file). Encryption protects only from now on: rotate it (a new wallet key, the funds "
            f"moved to it; a new dashboard token: {TOKEN_HINT})")
    return result


def _migrate_file(store: Store, env_file: Path, choice: str, result: Migration) -> None:
    try:
        st = os.lstat(env_file)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"{env_file} is not a regular file (a symlink?); nothing migrated")
    try:
        text = _read(env_file)
    except UnicodeDecodeError:
        result.problems.append(f"{env_file}: not UTF-8 text; nothing migrated from it")
        return
    for no, name in commented_in(text):
        result.problems.append(f"{env_file}:{no}: {name}: a value on a commented-out line stays in plaintext (a "
                               "comment is never migrated): keep it in your password manager and delete the "
                               "line; rotate it if it was ever used")
    moved: list[str] = []
    blank: set[str] = set()
    for name, raw in plaintext_in(env_file).items():
        try:
            value = normalise(name, raw, new=False)
        except SecretError as exc:
            result.problems.append(f"{exc}; left in {env_file}")
            continue
        ciphertext = store.load(name)
        if ciphertext is not None:
            try:
                current = decrypt(name, ciphertext)
            except SecretError as exc:
                # Not known to differ, not known to be equal: the credential may be the only copy of a newer value.
                result.problems.append(f"{name}: the credential {store.path(name)} could not be decrypted ({exc}); "
                                       f"it is never overwritten: left in {env_file}; run secret migrate again, "
                                       f"or replace the credential with: polymarket-bot secret set {name}")
                continue
            if current == value:
                blank.add(name)
                continue
            result.problems.append(f"{name}: {env_file} and the encrypted credential differ, and the credential "
                                   f"is the one used; left in {env_file}: delete the line, or replace the "
                                   f"credential with: polymarket-bot secret set {name}")
            continue
        store.set(name, value, choice, new=False)
        moved.append(name)
        result.done.append(f"{name}: moved from {env_file} into {store.path(name)}")
        if name == "API_SECRET_KEY" and len(value) < MIN_TOKEN:
            result.warnings.append(f"API_SECRET_KEY: {len(value)} characters, shorter than {MIN_TOKEN}: it can be "
                                   f"guessed; replace it: {TOKEN_HINT}")
        blank.add(name)
    if not blank:
        return
    out = []
    for line in split_lines(text):
        kv = _env_line(line)
        if kv and kv[0] in blank and not is_unset(kv[0], kv[1]):
            end = line[len(line.rstrip("\r\n")):]
            out.append(f"# {kv[0]} is an encrypted credential: polymarket-bot secret list{end or chr(10)}")
            out.append(f"{kv[0]}={end}")
        else:
            out.append(line)
    write_atomic(env_file, "".join(out).encode("utf-8"), mode=stat.S_IMODE(st.st_mode),
                 owner=(st.st_uid, st.st_gid))
    result.exposed |= blank
    if not moved:
        result.done.append(f"{', '.join(sorted(blank))}: already encrypted; blanked in {env_file}")
