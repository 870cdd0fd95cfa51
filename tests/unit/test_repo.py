"""The signed apt repository: layout, indices, Release, signatures, keys, every version kept.

Runs without root: the packages are tiny throwaway .debs made with dpkg-deb,
gpg works in throwaway homes under /tmp.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import lzma
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from debian.deb822 import Deb822

from builder import keys, repo
from builder.cli import main
from builder.errors import CommandFailed, InputError
from builder.project import Project, load_project

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gpg", "gpgv", "apt-ftparchive", "dpkg-deb")),
    reason="needs gnupg, gpgv, apt-utils and dpkg-deb",
)

CHANGELOG = """\
polymarket-deploy (1.0.0) noble; urgency=medium

  * First release.

 -- Polymarket Deploy Team <ops@polymarket-deploy.invalid>  Wed, 25 Nov 2026 12:00:00 +0000
"""
CONTROL = "Source: polymarket-deploy\nMaintainer: Polymarket Deploy Team <ops@polymarket-deploy.invalid>\n"


def make_deb(out: Path, version: str, package: str = "polymarket-demo", payload: str = "") -> Path:
    """A minimal Architecture: all package with one conffile."""
    tree = out / f"tree-{package}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "etc" / package).mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nSource: polymarket-deploy\n"
        "Maintainer: T <t@example.invalid>\nDescription: demo\n a demo package\n"
    )
    (tree / "DEBIAN" / "conffiles").write_text(f"/etc/{package}/demo.conf\n")
    (tree / "etc" / package / "demo.conf").write_text(f"# {version} {payload}\n")
    deb = out / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(tree), str(deb)], check=True,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(tree)
    return deb


@pytest.fixture
def gnupg_dir() -> Iterator[Path]:
    """A short path (gpg-agent's socket path must stay under 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="pmgpg-", dir="/tmp"))
    try:
        yield d
    finally:
        for home in d.iterdir():
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path, gnupg_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    root = tmp_path / "src"
    (root / "debian").mkdir(parents=True)
    (root / "debian" / "changelog").write_text(CHANGELOG)
    (root / "debian" / "control").write_text(CONTROL)
    monkeypatch.setenv(keys.DEV_GNUPGHOME_ENV, str(gnupg_dir / "dev"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.delenv(repo.URL_ENV, raising=False)
    return load_project(root)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    d.mkdir()
    make_deb(d, "1.0.0")
    return d


def packages_of(r: Path, arch: str = "amd64") -> list[Deb822]:
    text = (r / "dists" / "noble" / "main" / f"binary-{arch}" / "Packages").read_text()
    return list(Deb822.iter_paragraphs(text))


def test_layout_indices_and_sources(project: Project, dist: Path) -> None:
    r = repo.publish(project, dist, url="http://127.0.0.1:8080/")
    assert r == dist / "repo"
    assert (r / "pool/main/p/polymarket-deploy/polymarket-demo_1.0.0_all.deb").is_file()
    for name in ("Release", "InRelease", "Release.gpg"):
        assert (r / "dists/noble" / name).is_file()
    # apt on amd64 reads binary-amd64: the Architecture: all package must be listed there.
    for arch in repo.ARCHITECTURES:
        (para,) = packages_of(r, arch)
        assert (para["Package"], para["Version"], para["Architecture"]) == ("polymarket-demo", "1.0.0", "all")
        assert para["Filename"] == "pool/main/p/polymarket-deploy/polymarket-demo_1.0.0_all.deb"
        deb = r / para["Filename"]
        assert para["SHA256"] == hashlib.sha256(deb.read_bytes()).hexdigest()
        d = r / "dists/noble/main" / f"binary-{arch}"
        raw = (d / "Packages").read_bytes()
        assert gzip.decompress((d / "Packages.gz").read_bytes()) == raw
        assert lzma.decompress((d / "Packages.xz").read_bytes()) == raw
    sources = Deb822((r / "polymarket.sources").read_text())
    assert dict(sources) == {
        "Types": "deb",
        "URIs": "http://127.0.0.1:8080/",
        "Suites": "noble",
        "Components": "main",
        "Signed-By": "/etc/apt/keyrings/polymarket-archive-keyring.gpg",
    }
    assert (r / "polymarket-archive-keyring.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert (r / "polymarket-archive-keyring.gpg").read_bytes()[0] & 0x80  # binary OpenPGP packet, not armor


def test_release_fields_and_hashes(project: Project, dist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = repo.publish(project, dist)
    rel = Deb822((r / "dists/noble/Release").read_text())
    assert rel["Suite"] == rel["Codename"] == "noble"
    assert rel["Components"] == "main"
    assert rel["Architectures"].split() == ["all", "amd64", "arm64"]
    assert rel["Date"] == "Wed, 25 Nov 2026 12:00:00 UTC"  # the newest changelog entry's
    lines = [line.split() for line in rel["SHA256"].strip().splitlines()]
    assert {name for _, _, name in lines} == {
        f"main/binary-{a}/Packages{ext}" for a in repo.ARCHITECTURES for ext in ("", ".gz", ".xz")
    }
    for digest, size, name in lines:
        data = (r / "dists/noble" / name).read_bytes()
        assert (digest, int(size)) == (hashlib.sha256(data).hexdigest(), len(data))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    repo.publish(project, dist)
    assert Deb822((r / "dists/noble/Release").read_text())["Date"] == "Tue, 14 Nov 2023 22:13:20 UTC"


def test_gpgv_verifies_with_exported_key_and_refuses_tampering(project: Project, dist: Path) -> None:
    r = repo.publish(project, dist)
    keyring = r / "polymarket-archive-keyring.gpg"
    suite = r / "dists/noble"
    keys.verify(keyring, suite / "InRelease")
    keys.verify(keyring, suite / "Release.gpg", suite / "Release")
    (suite / "Release").write_text((suite / "Release").read_text().replace("Suite: noble", "Suite: nobIe"))
    with pytest.raises(CommandFailed):
        keys.verify(keyring, suite / "Release.gpg", suite / "Release")
    text = (suite / "InRelease").read_text()
    (suite / "InRelease").write_text(text.replace("Codename: noble", "Codename: n0ble"))
    with pytest.raises(CommandFailed):
        keys.verify(keyring, suite / "InRelease")


def test_every_version_stays_published(project: Project, dist: Path) -> None:
    repo.publish(project, dist)
    (dist / "polymarket-demo_1.0.0_all.deb").unlink()  # e.g. after make clean
    make_deb(dist, "1.0.1")
    make_deb(dist, "1.0.10")
    r = repo.publish(project, dist)
    versions = [p["Version"] for p in packages_of(r)]
    assert versions == ["1.0.0", "1.0.1", "1.0.10"]  # dpkg order, not string order
    assert len(list((r / "pool").rglob("*.deb"))) == 3


def test_development_key_made_once_and_announced(
    project: Project, dist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    repo.publish(project, dist)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("generating a DEVELOPMENT signing key" in w for w in warnings)
    assert any("signed with a DEVELOPMENT key" in w for w in warnings)
    first = (dist / "repo/polymarket-archive-keyring.gpg").read_bytes()
    caplog.clear()
    repo.publish(project, dist)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("generating" in w for w in warnings)
    assert any(w.startswith("WARNING: this repository is signed with a DEVELOPMENT key") for w in warnings)
    assert (dist / "repo/polymarket-archive-keyring.gpg").read_bytes() == first
    listing = subprocess.run(["gpg", "--homedir", str(keys.dev_gnupghome(project.root)), "--with-colons",
                              "--list-secret-keys"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert [line.split(":")[16] for line in listing.splitlines() if line.startswith("sec")] == ["ed25519"]


def test_placeholder_url_is_announced(project: Project, dist: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = repo.publish(project, dist)
    assert Deb822((r / "polymarket.sources").read_text())["URIs"] == repo.URL_PLACEHOLDER
    assert any("placeholder" in rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING)


def _operator_home(gnupg_dir: Path, algo: str) -> tuple[Path, str]:
    home = gnupg_dir / f"op-{algo}"
    home.mkdir(mode=0o700)
    keys.gpg(home, "--passphrase", "", "--quick-generate-key", f"Operator {algo} <op@example.invalid>", algo, "sign")
    listing = keys.gpg(home, "--with-colons", "--list-secret-keys")
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    return home, fpr


def test_operator_key_signs_and_versions_are_immutable(
    project: Project, dist: Path, gnupg_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home, fpr = _operator_home(gnupg_dir, "ed25519")
    r = repo.publish(project, dist, key=fpr, gnupghome=home)
    keys.verify(r / "polymarket-archive-keyring.gpg", r / "dists/noble/InRelease")
    assert not any("DEVELOPMENT" in rec.getMessage() for rec in caplog.records)
    assert not (gnupg_dir / "dev").exists()
    make_deb(dist, "1.0.0", payload="rebuilt differently")
    with pytest.raises(InputError, match="already published with different content"):
        repo.publish(project, dist, key=fpr, gnupghome=home)


def test_development_rebuild_replaces_with_warning(
    project: Project, dist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo.publish(project, dist)
    make_deb(dist, "1.0.0", payload="rebuilt differently")
    r = repo.publish(project, dist)
    assert any("replacing published polymarket-demo 1.0.0" in rec.getMessage() for rec in caplog.records)
    (para,) = packages_of(r)
    assert para["SHA256"] == hashlib.sha256((dist / "polymarket-demo_1.0.0_all.deb").read_bytes()).hexdigest()


def test_weak_or_unknown_operator_keys_are_refused(project: Project, dist: Path, gnupg_dir: Path) -> None:
    home, fpr = _operator_home(gnupg_dir, "rsa2048")
    with pytest.raises(InputError, match="Ed25519 or RSA 3072"):
        repo.publish(project, dist, key=fpr, gnupghome=home)
    with pytest.raises(InputError, match="no secret key"):
        repo.publish(project, dist, key="0" * 40, gnupghome=home)
    for not_a_fingerprint in ("op@example.invalid", "Operator rsa2048", fpr[-16:], fpr + "\n"):
        with pytest.raises(InputError, match="is not a full key fingerprint"):
            repo.publish(project, dist, key=not_a_fingerprint, gnupghome=home)
    with pytest.raises(InputError, match="needs --key"):
        repo.publish(project, dist, gnupghome=home)
    assert not (dist / "repo").exists()


def test_nothing_to_publish(project: Project, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to publish"):
        repo.publish(project, tmp_path)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://x/ Trusted=yes", "error: --url: 'http://x/ Trusted=yes' is not an http:// or https:// URL"),
        ("http://x/\nTrusted: yes", "error: --url: 'http://x/\\nTrusted: yes': a control character (U+000A, newline)"),
        ("http://x/\tTrusted=yes", "error: --url: 'http://x/\\tTrusted=yes': a control character (U+0009, tab)"),
        ("ftp://x/", "error: --url: 'ftp://x/' is not an http:// or https:// URL"),
        ("http://x/ http://y/", "error: --url: 'http://x/ http://y/' is not an http:// or https:// URL"),
    ],
)
def test_publish_url_must_be_one_url(
    project: Project,
    dist: Path,
    url: str,
    error: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--url 'http://x/ Trusted=yes'` was written into polymarket.sources as a second field; now refused,
    one error line, nothing published."""
    (project.root / "builder").mkdir()
    monkeypatch.chdir(project.root)
    assert main(["--dist", str(dist), "publish", "--url", url]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(error), err
    assert [line for line in err if not line.startswith("hint: ")] == err[:1]
    assert not (dist / "repo").exists()


def test_publish_url_from_the_environment_is_checked_too(
    project: Project, dist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(repo.URL_ENV, "http://x/ Trusted=yes")
    with pytest.raises(InputError, match=f"^{repo.URL_ENV}: 'http://x/ Trusted=yes' is not an http"):
        repo.publish(project, dist)
    assert not (dist / "repo").exists()


def test_publish_url_is_written_as_given(project: Project, dist: Path) -> None:
    r = repo.publish(project, dist, url="https://[fd00::5]:8443/polymarket")
    assert (r / "polymarket.sources").read_text().splitlines()[1] == "URIs: https://[fd00::5]:8443/polymarket"
