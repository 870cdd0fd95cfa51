"""Publish the built .debs into the signed apt repository ``dist/repo/``.

The tool is ``apt-ftparchive`` (apt-utils): the repository's only state is
its pool, a plain directory that keeps every version ever published, so any
release can be reinstalled (rolled back to).  reprepro keeps one version per
package and suite; aptly would add a database and snapshots we do not need.
The indices are regenerated from the whole pool on every publish, and the
``Release`` file is serialised here so its ``Date`` honours SOURCE_DATE_EPOCH.

Layout (suite ``noble``, component ``main``)::

    dist/repo/pool/main/p/<source>/<package>_<version>_all.deb   every version
    dist/repo/dists/noble/{Release,InRelease,Release.gpg}
    dist/repo/dists/noble/main/binary-{all,amd64,arm64}/Packages{,.gz,.xz}
    dist/repo/polymarket-archive-keyring.{gpg,asc}                the public key
    dist/repo/polymarket.sources                                  deb822 source for servers
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import lzma
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822
from debian.debian_support import Version

from builder import keys
from builder.errors import InputError
from builder.project import SUITE, Project
from builder.run import run
from builder.text import http_url, shown

log = logging.getLogger(__name__)

COMPONENT = "main"
# Our packages are all Architecture: all.  apt on amd64 reads binary-amd64 (and
# binary-all only when "all" is listed); the same index is written to each so
# every apt version finds them, and No-Support-for-Architecture-all says so.
ARCHITECTURES = ("all", "amd64", "arm64")
ORIGIN = "Polymarket Deploy"
KEYRING = "polymarket-archive-keyring"
SOURCES_FILE = "polymarket.sources"
SIGNED_BY = f"/etc/apt/keyrings/{KEYRING}.gpg"
URL_ENV = "POLYMARKET_REPO_URL"
URL_PLACEHOLDER = "http://apt.polymarket-deploy.invalid/"


@dataclass(frozen=True)
class DebInfo:
    path: Path
    package: str
    version: str
    architecture: str
    source: str

    @property
    def pool_path(self) -> Path:
        """Where the file lives in the pool, Debian style: pool/main/p/<source>/<canonical name>."""
        prefix = self.source[:4] if self.source.startswith("lib") else self.source[0]
        upstream = self.version.split(":", 1)[-1]  # file names carry no epoch
        return Path("pool", COMPONENT, prefix, self.source, f"{self.package}_{upstream}_{self.architecture}.deb")


def read_deb(path: Path) -> DebInfo:
    out = run(["dpkg-deb", "--field", str(path), "Package", "Version", "Architecture", "Source"]).stdout
    fields = Deb822(out)
    package, version, arch = fields.get("Package"), fields.get("Version"), fields.get("Architecture")
    if not package or not version or not arch:
        raise InputError(f"{path}: not a binary package (no Package/Version/Architecture)")
    if arch not in ARCHITECTURES:
        raise InputError(f"{path}: Architecture {arch} is not one this repository carries ({', '.join(ARCHITECTURES)})")
    source = (fields.get("Source") or package).split(" ", 1)[0]
    return DebInfo(path, package, version, arch, source)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def add_to_pool(repo: Path, debs: Iterable[DebInfo], *, immutable: bool) -> list[Path]:
    """Copy ``debs`` into the pool; a version already there is kept unless its bytes differ.

    A published version must never change under the servers' feet: with an
    operator key (``immutable``) that is an error; with the development key
    the new build replaces it, with a warning.
    """
    added = []
    for deb in debs:
        target = repo / deb.pool_path
        if target.exists():
            if _sha256(target) == _sha256(deb.path):
                continue
            if immutable:
                raise InputError(
                    f"{deb.package} {deb.version} is already published with different content",
                    hint="a published version never changes: start a new one with 'python3 -m builder release'",
                )
            log.warning(
                "WARNING: replacing published %s %s with a different build; servers that installed it will not "
                "see the change (start a new version with 'python3 -m builder release')",
                deb.package,
                deb.version,
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".deb.tmp")
        shutil.copy2(deb.path, tmp)
        tmp.chmod(0o644)
        os.replace(tmp, target)
        added.append(target)
        log.info("published %s %s", deb.package, deb.version)
    return added


def packages_index(repo: Path) -> bytes:
    """The Packages index of every .deb in the pool, sorted by name and version."""
    out = run(["apt-ftparchive", "packages", f"pool/{COMPONENT}"], cwd=repo).stdout
    paras = [p for p in Deb822.iter_paragraphs(out) if p.get("Package")]
    paras.sort(key=lambda p: (p["Package"], Version(p["Version"]), p["Architecture"]))
    return "\n".join(p.dump() for p in paras).encode()


def release_file(dists: Path, date: float) -> bytes:
    """The suite's Release: metadata and the SHA256/SHA512 of every index under ``dists``."""
    files = sorted(p for p in dists.rglob("*") if p.is_file() and p.name not in ("Release", "InRelease", "Release.gpg"))
    head = Deb822()
    head["Origin"] = ORIGIN
    head["Label"] = ORIGIN
    head["Suite"] = SUITE
    head["Codename"] = SUITE
    head["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime(date))
    head["Architectures"] = " ".join(ARCHITECTURES)
    head["Components"] = COMPONENT
    head["Description"] = "Polymarket deployment packages"
    head["No-Support-for-Architecture-all"] = "Packages"
    for field, algo in (("SHA256", hashlib.sha256), ("SHA512", hashlib.sha512)):
        lines = [""]
        for f in files:
            data = f.read_bytes()
            lines.append(f" {algo(data).hexdigest()} {len(data):>16} {f.relative_to(dists).as_posix()}")
        head[field] = "\n".join(lines)
    return head.dump().encode()


def write_indices(repo: Path, dists: Path, packages: bytes) -> None:
    for arch in ARCHITECTURES:
        d = dists / COMPONENT / f"binary-{arch}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "Packages").write_bytes(packages)
        with open(d / "Packages.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(packages)
        (d / "Packages.xz").write_bytes(lzma.compress(packages, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64))


def sources_file(url: str) -> str:
    """The deb822 source a server drops into /etc/apt/sources.list.d/."""
    s = Deb822()
    s["Types"] = "deb"
    s["URIs"] = url
    s["Suites"] = SUITE
    s["Components"] = COMPONENT
    s["Signed-By"] = SIGNED_BY
    return s.dump()


def repository_url(url: str | None) -> str:
    """The URIs of polymarket.sources: ``--url``, else $POLYMARKET_REPO_URL, else the placeholder.

    Checked as a whole: ``http://x/ Trusted=yes`` would otherwise become a second
    deb822 field (apt would skip the signature check), a newline a second line.
    """
    given, what = (url, "--url") if url else (os.environ.get(URL_ENV), URL_ENV)
    if not given:
        return URL_PLACEHOLDER
    try:
        http_url(given)
    except ValueError:
        raise InputError(
            f"{what}: {shown(given)} is not an http:// or https:// URL",
            hint="one URL such as http://192.168.1.5/polymarket: a host, an optional port and a path, no spaces",
        ) from None
    return given


def _swap_in(new: Path, current: Path) -> None:
    """Replace directory ``current`` by ``new`` with two renames (clients never see half an index)."""
    old = current.with_name(current.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        os.replace(current, old)
    os.replace(new, current)
    shutil.rmtree(old, ignore_errors=True)


def publish(
    project: Project, dist: Path, *, key: str | None = None, gnupghome: Path | None = None, url: str | None = None
) -> Path:
    """Add every .deb in ``dist`` to ``dist/repo`` and re-sign it; return the repository directory."""
    if gnupghome is not None and key is None:
        raise InputError("--gnupghome needs --key FINGERPRINT", hint="name the signing key by its fingerprint")
    repo_url = repository_url(url)
    debs = sorted(dist.glob("*.deb"))
    repo = dist / "repo"
    if not debs and not (repo / "pool").is_dir():
        raise InputError(f"nothing to publish: no .deb in {dist}", hint="build first: python3 -m builder build")
    signing = keys.operator_key(key, gnupghome) if key else keys.development_key(project.root, project.maintainer)
    staging = repo / "dists" / f".{SUITE}.new"
    try:
        infos = [read_deb(d) for d in debs]
        add_to_pool(repo, infos, immutable=not signing.development)
        packages = packages_index(repo)
        shutil.rmtree(staging, ignore_errors=True)
        write_indices(repo, staging, packages)
        (staging / "Release").write_bytes(release_file(staging, project.source_date_epoch()))
        keys.sign_release(signing, staging / "Release")
        keyring = repo / f"{KEYRING}.gpg"
        keys.export_public(signing, keyring, repo / f"{KEYRING}.asc")
        keys.verify(keyring, staging / "InRelease")
        keys.verify(keyring, staging / "Release.gpg", staging / "Release")
        _swap_in(staging, repo / "dists" / SUITE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # left only when something failed
        keys.stop_agent(signing)
    (repo / SOURCES_FILE).write_text(sources_file(repo_url), encoding="utf-8")
    versions = sorted({(p["Package"], p["Version"]) for p in Deb822.iter_paragraphs(packages.decode())})
    log.info("repository %s: %d package versions, signed by %s", repo, len(versions), signing.fingerprint)
    if repo_url == URL_PLACEHOLDER:
        log.warning(
            "WARNING: %s has the placeholder URIs %s: publish with --url URL (or %s=URL) or edit it",
            repo / SOURCES_FILE,
            URL_PLACEHOLDER,
            URL_ENV,
        )
    if signing.development:
        log.warning(
            "WARNING: this repository is signed with a DEVELOPMENT key (%s in %s); servers must not trust it in "
            "production: publish with --key FINGERPRINT --gnupghome DIR",
            signing.fingerprint,
            signing.gnupghome,
        )
    return repo
