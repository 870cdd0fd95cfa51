"""The repository's OpenPGP signing key: the operator's, or a development key.

A real deployment signs with the operator's key, named by fingerprint in a
GnuPG home they choose.  Without one, a development key (Ed25519) is made
once into ``.cache/dev-gnupg/`` (or ``$POLYMARKET_DEV_GNUPGHOME``), which git
ignores; every publish with it says loudly that it is one.

gpg always runs with ``--batch --homedir DIR --pinentry-mode loopback``: it
never opens a pinentry prompt.  A passphrase-protected operator key must be
unlocked in its agent beforehand.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import CommandFailed, InputError
from builder.run import run

log = logging.getLogger(__name__)

DEV_GNUPGHOME_ENV = "POLYMARKET_DEV_GNUPGHOME"
DEV_KEY_NAME = "Polymarket Deploy DEVELOPMENT archive key (not for production)"

# OpenPGP public-key algorithm ids (RFC 4880 / RFC 9580) as gpg --with-colons prints them.
ALGO_RSA = {"1", "3"}
ALGO_EDDSA = "22"
MIN_RSA_BITS = 3072


@dataclass(frozen=True)
class SigningKey:
    fingerprint: str
    gnupghome: Path
    development: bool


def gpg(home: Path, *args: str, input_text: str | None = None) -> str:
    """Run gpg non-interactively on ``home`` and return its stdout."""
    argv = ["gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(home), "--pinentry-mode", "loopback", *args]
    return run(argv, input_text=input_text).stdout


def dev_gnupghome(root: Path) -> Path:
    env = os.environ.get(DEV_GNUPGHOME_ENV)
    return Path(env) if env else root / ".cache" / "dev-gnupg"


def _signing_keys(home: Path, selector: str | None) -> list[tuple[str, str, int, str]]:
    """(fingerprint, algorithm, bits, curve) of every signing-capable secret (sub)key."""
    out = gpg(home, "--with-colons", "--fixed-list-mode", "--list-secret-keys", *([selector] if selector else []))
    keys: list[tuple[str, str, int, str]] = []
    pending: tuple[str, int, str] | None = None
    for line in out.splitlines():
        f = line.split(":")
        if f[0] in ("sec", "ssb"):
            caps = f[11] if len(f) > 11 else ""
            usable = f[1] not in ("r", "e", "d", "i") and "s" in caps  # lowercase: this (sub)key can sign
            pending = (f[3], int(f[2] or 0), f[16] if len(f) > 16 else "") if usable else None
        elif f[0] == "fpr" and pending is not None:
            algo, bits, curve = pending
            keys.append((f[9], algo, bits, curve))
            pending = None
        elif f[0] == "fpr":
            pending = None
    return keys


def _acceptable(algo: str, bits: int, curve: str) -> bool:
    """What apt (sqv on trixie, gpgv with its weak-key policy on noble) accepts for years to come."""
    return (algo in ALGO_RSA and bits >= MIN_RSA_BITS) or (algo == ALGO_EDDSA and curve.lower() == "ed25519")


def operator_key(fingerprint: str, gnupghome: Path | None) -> SigningKey:
    """The operator's key ``fingerprint`` from ``gnupghome`` (default: $GNUPGHOME or ~/.gnupg)."""
    home = gnupghome or Path(os.environ.get("GNUPGHOME", Path.home() / ".gnupg"))
    if not home.is_dir():
        raise InputError(f"--gnupghome {home}: no such directory")
    fpr = fingerprint.replace(" ", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fpr):
        # A user ID or short key ID would pick whichever key gpg finds under it.
        raise InputError(
            f"--key {fingerprint!r} is not a full key fingerprint (40 or 64 hex digits)",
            hint="gpg --homedir DIR --list-secret-keys --with-fingerprint shows it",
        )
    listed = run(
        ["gpg", "--batch", "--no-tty", "--homedir", str(home), "--with-colons", "--list-secret-keys", fpr],
        check=False,
    )
    if listed.returncode != 0:
        raise InputError(
            f"--key {fingerprint}: no secret key with that fingerprint in {home}",
            hint="list them with: gpg --homedir DIR --list-secret-keys --with-fingerprint",
        )
    keys = _signing_keys(home, fpr)
    if not any(_acceptable(a, b, c) for _, a, b, c in keys):
        raise InputError(
            f"--key {fingerprint}: no signing key of Ed25519 or RSA {MIN_RSA_BITS}+ bits",
            hint="apt on Ubuntu 24.04 and Debian 13 rejects weaker keys; make an Ed25519 signing subkey",
        )
    return SigningKey(fpr, home, development=False)


def development_key(root: Path, maintainer: str) -> SigningKey:
    """The development key, generated on first use and reused afterwards."""
    home = dev_gnupghome(root)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    with open(home / ".polymarket-keygen.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = _signing_keys(home, None)
        if not keys:
            email = maintainer.rpartition("<")[2].rstrip(">").strip() or "ops@polymarket-deploy.invalid"
            log.warning("WARNING: generating a DEVELOPMENT signing key in %s (Ed25519, no passphrase)", home)
            params = "\n".join([
                "%no-protection",
                "Key-Type: eddsa",
                "Key-Curve: ed25519",
                "Key-Usage: sign",
                f"Name-Real: {DEV_KEY_NAME}",
                f"Name-Email: {email}",
                "Expire-Date: 0",
                "%commit",
                "",
            ])  # fmt: skip
            gpg(home, "--generate-key", input_text=params)
            keys = _signing_keys(home, None)
        if not keys:
            raise InputError(f"{home}: no signing key after generating one", hint=f"remove {home} and publish again")
    return SigningKey(keys[0][0], home, development=True)


def sign_release(key: SigningKey, release: Path) -> tuple[Path, Path]:
    """Write ``InRelease`` (clearsigned) and ``Release.gpg`` (detached) beside ``release``."""
    inrelease = release.with_name("InRelease")
    detached = release.with_name("Release.gpg")
    for out in (inrelease, detached):
        out.unlink(missing_ok=True)
    common = ["--local-user", f"{key.fingerprint}!", "--digest-algo", "SHA512"]
    try:
        gpg(key.gnupghome, *common, "--clearsign", "--output", str(inrelease), str(release))
        gpg(key.gnupghome, *common, "--armor", "--detach-sign", "--output", str(detached), str(release))
    except CommandFailed as exc:
        exc.hint = exc.hint or (
            "gpg never prompts here: unlock a passphrase-protected key in its agent first "
            "(e.g. sign any file with it once), or use a signing subkey without passphrase on the build host"
        )
        raise
    return inrelease, detached


def export_public(key: SigningKey, binary: Path, armored: Path) -> None:
    """The public key, binary (for apt's Signed-By) and ASCII-armored (for people)."""
    opts = ["--export-options", "export-minimal", "--export", key.fingerprint]
    for out in (binary, armored):
        out.unlink(missing_ok=True)
    gpg(key.gnupghome, "--output", str(binary), *opts)
    gpg(key.gnupghome, "--armor", "--output", str(armored), *opts)


def verify(keyring: Path, *files: Path) -> None:
    """gpgv-verify ``files`` (a clearsigned file, or a signature and its data) against ``keyring``."""
    run(["gpgv", "--keyring", str(keyring.resolve()), *[str(f) for f in files]])


def stop_agent(key: SigningKey) -> None:
    """Stop the gpg-agent that signing started in the development home (the operator's is theirs)."""
    if key.development:
        run(["gpgconf", "--homedir", str(key.gnupghome), "--kill", "gpg-agent"], check=False)
