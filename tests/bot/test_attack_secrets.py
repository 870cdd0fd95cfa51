"""An outside review of "Secrets at rest" (issue 7): each test is a defect found by attacking it.

Each test was xfail(strict=True) with the defect as its reason until the code was fixed; its
tokens have 32 characters or more, as ``secret set`` now requires. The real systemd-creds
encrypts with a host key of the test (SYSTEMD_CREDENTIAL_SECRET), never this machine's.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import KEY, ROOT
from polymarket_bot import cli, config, secrets
from polymarket_bot.errors import ConfigError

PKG = ROOT / "packages" / "polymarket-bot"
HEX = KEY[2:]
TOKEN = "dashboard-token-0123456789abcdef0123456789"
ROTATED = "the-rotated-new-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(shutil.which("systemd-creds") is None, reason="needs systemd-creds (systemd 252+)")


class Box:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = tmp / "credentials"
        self.env_file = tmp / "env"
        self.env_file.write_text("LOG_LEVEL=INFO\n")
        self.env_file.chmod(0o600)
        self.host_secret = tmp / "host.secret"

    def environ(self) -> dict[str, str]:
        return {"SYSTEMD_CREDENTIAL_SECRET": str(self.host_secret), "POLYMARKET_CREDENTIALS_DIR": str(self.store),
                "POLYMARKET_ENV_FILE": str(self.env_file)}

    def decrypt(self, name: str) -> str:
        r = subprocess.run(["systemd-creds", "decrypt", f"--name={name}", "--newline=no",
                            str(self.store / f"{name}.cred"), "-"],
                           capture_output=True, env={**os.environ, **self.environ()}, check=True)
        return r.stdout.decode()


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    b = Box(tmp_path)
    for k, v in b.environ().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    if os.geteuid() != 0:
        monkeypatch.setattr(cli, "require_root", lambda what: None)
    yield b


def cli_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
            stdin: bytes = b"") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("where", ["env-file", "environment"])
def test_the_not_provisioned_sentinel_is_never_a_dashboard_token(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str) -> None:
    environ: dict[str, str] = {}
    if where == "env-file":
        box.env_file.write_text(f"API_SECRET_KEY={secrets.NOT_PROVISIONED}\n")
    else:
        environ["API_SECRET_KEY"] = secrets.NOT_PROVISIONED
    listing = cli_run(monkeypatch, capsys, "secret", "list")[1]
    assert "API_SECRET_KEY  unset" in listing  # secret list: no token at all
    cfg = config.load(box.env_file, environ, credentials={})
    assert not cfg.dashboard_token_set  # the server's _authorised() refuses every request only then


def test_a_secret_on_a_commented_line_is_not_left_silently_in_plaintext(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    box.env_file.write_text(f"# the old wallet, before the rotation\n#PRIVATE_KEY={KEY}\nLOG_LEVEL=INFO\n")
    code, out, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    listing = cli_run(monkeypatch, capsys, "secret", "list")[1]
    said = (out + err + listing).lower()
    assert HEX not in box.env_file.read_text() or ("comment" in said and code != 0)


def test_migrate_keeps_the_other_lines_of_a_crlf_env_file_byte_for_byte(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    box.env_file.write_bytes(b"LOG_LEVEL=INFO\r\n" + f"API_SECRET_KEY={TOKEN}\r\n".encode() + b"TRADING_MODE=dry-run")
    code, _, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 0, err
    after = box.env_file.read_bytes()
    assert TOKEN.encode() not in after and box.decrypt("API_SECRET_KEY") == TOKEN
    assert after.startswith(b"LOG_LEVEL=INFO\r\n") and b"API_SECRET_KEY=\r\n" in after
    assert after.endswith(b"TRADING_MODE=dry-run")


def test_migrate_never_overwrites_a_credential_it_could_not_decrypt(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(monkeypatch, capsys, "secret", "set", "API_SECRET_KEY", stdin=ROTATED.encode())[0] == 0
    box.env_file.write_text(f"API_SECRET_KEY={TOKEN}\n")  # the old value, left there (it "differs")
    before = (box.store / "API_SECRET_KEY.cred").read_bytes()
    real = secrets.decrypt
    calls = {"n": 0}

    def flaky(name: str, ciphertext: bytes) -> str:
        calls["n"] += 1
        if calls["n"] == 1 and ciphertext == before:
            raise secrets.SecretError("systemd-creds decrypt failed: TPM2 busy", status=secrets.TOOL_FAILED)
        return str(real(name, ciphertext))

    monkeypatch.setattr(secrets, "decrypt", flaky)
    cli_run(monkeypatch, capsys, "secret", "migrate")
    assert (box.store / "API_SECRET_KEY.cred").read_bytes() == before
    assert box.decrypt("API_SECRET_KEY") == ROTATED


def test_secret_commands_cannot_dump_core_with_the_value(box: Box) -> None:
    probe = textwrap.dedent(f"""
        import ctypes, sys
        sys.path.insert(0, {str(PKG)!r})
        from polymarket_bot import cli
        libc = ctypes.CDLL(None)
        seen = []
        def read_value(stream=None):
            seen.append(libc.prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE while the value is in memory
            return {TOKEN!r}
        cli.read_value = read_value
        cli.require_root = lambda what: None
        code = cli.main(["secret", "set", "API_SECRET_KEY"])
        print("DUMPABLE", code, seen)
    """)
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **box.environ()}, stdin=subprocess.DEVNULL)
    assert "DUMPABLE 0 [0]" in r.stdout, r.stdout + r.stderr


def test_migrate_output_logged_by_the_unit_gives_no_offline_verifier_of_the_token(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    weak = "polymarket2024"
    box.env_file.write_text(f"API_SECRET_KEY={weak}\n")
    code, out, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 0, err
    guess = next((w for w in ("admin", "secret", "polymarket", "polymarket2024")
                  if hashlib.sha256(w.encode()).hexdigest()[:16] in out + err), None)
    assert guess is None, "the logged fingerprint confirms the guessed token"


def test_a_trivially_short_dashboard_token_is_refused(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_run(monkeypatch, capsys, "secret", "set", "API_SECRET_KEY", stdin=b"a")
    assert code == 2 and err.startswith("error: ") and not (box.store / "API_SECRET_KEY.cred").exists()


@pytest.mark.parametrize("key", ["WALLET_ADDRESS", "COPY_LEADERS"])
def test_a_private_key_in_an_address_setting_is_never_echoed(tmp_path: Path, key: str) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"{key}={KEY}\n")
    env_file.chmod(0o600)
    with pytest.raises(ConfigError) as exc:
        config.load(env_file, {}, credentials={})
    assert not any(HEX in p for p in exc.value.problems), exc.value.problems


def test_migrate_tells_the_operator_that_earlier_copies_still_hold_the_key(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    box.env_file.write_text(f"PRIVATE_KEY={KEY}\n")
    code, out, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 0, err
    said = (out + err).lower()
    assert "backup" in said and "rotat" in said


def test_a_key_given_as_an_argument_is_called_exposed(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_run(monkeypatch, capsys, "secret", "set", "PRIVATE_KEY", KEY)
    assert code == 2 and HEX not in err
    assert "rotat" in err.lower() or "exposed" in err.lower(), err
