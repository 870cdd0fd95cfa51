"""polymarket-bot secret set|list|remove|migrate, and secrets read from $CREDENTIALS_DIRECTORY.

The real systemd-creds encrypts and decrypts (no fake): its host key is a file of the test
(SYSTEMD_CREDENTIAL_SECRET), never this machine's /var/lib/systemd/credential.secret.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import KEY, ME, ROOT
from polymarket_bot import cli, config, secrets
from polymarket_bot.errors import ConfigError

PKG = ROOT / "packages" / "polymarket-bot"
TOKEN = "dashboard-token-0123456789abcdef0123456789"
HEX = KEY[2:]

pytestmark = pytest.mark.skipif(shutil.which("systemd-creds") is None, reason="needs systemd-creds (systemd 252+)")


class Box:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = tmp / "credentials"
        self.env_file = tmp / "env"
        self.env_file.write_text("LOG_LEVEL=INFO\n")
        self.env_file.chmod(0o600)
        self.host_secret = tmp / "host.secret"

    def environ(self, **over: str) -> dict[str, str]:
        return {"SYSTEMD_CREDENTIAL_SECRET": str(self.host_secret), "POLYMARKET_CREDENTIALS_DIR": str(self.store),
                "POLYMARKET_ENV_FILE": str(self.env_file), **over}

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
    if os.geteuid() != 0:  # the commands refuse non-root; the store's own checks still run
        monkeypatch.setattr(cli, "require_root", lambda what: None)
    yield b


def cli_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
            stdin: bytes = b"") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_set_reads_stdin_and_only_ciphertext_reaches_the_disk(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_run(monkeypatch, capsys, "secret", "set", "PRIVATE_KEY",
                             stdin=KEY.upper()[2:].encode() + b"\n")
    assert code == 0, err
    cred = box.store / "PRIVATE_KEY.cred"
    assert oct(cred.stat().st_mode & 0o777) == "0o600" and oct(box.store.stat().st_mode & 0o777) == "0o700"
    data = cred.read_bytes()
    for form in (HEX, HEX.upper(), KEY):
        assert form.encode() not in data
    assert box.decrypt("PRIVATE_KEY") == KEY  # normalised: 0x, lower case, no newline
    assert ME.lower() in out.lower() and HEX not in out + err and HEX.upper() not in out + err
    # Nothing else was left in the store (no temporary file, plaintext or not).
    assert sorted(p.name for p in box.store.iterdir()) == ["PRIVATE_KEY.cred"]


def test_the_value_is_never_taken_from_the_command_line(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_run(monkeypatch, capsys, "secret", "set", "PRIVATE_KEY", KEY)
    assert code == 2 and err.startswith("error: ") and "stdin" in err
    assert HEX not in out + err and not box.store.exists()


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("WALLET_ADDRESS", b"0x" + b"1" * 40, "unknown secret"),
    ("private_key", KEY.encode(), "unknown secret"),
    ("PRIVATE_KEY", b"", "empty value"),
    ("PRIVATE_KEY", b"\n", "empty value"),
    ("PRIVATE_KEY", KEY[:-1].encode(), "64 hexadecimal digits"),
    ("PRIVATE_KEY", b"0x" + b"g" * 64, "64 hexadecimal digits"),
    ("PRIVATE_KEY", b"0x" + b"0" * 64, "value not shown"),  # not a secp256k1 scalar
    ("PRIVATE_KEY", b"your_private_key_here", "placeholder"),
    ("PRIVATE_KEY", KEY.encode() + b"\n" + KEY.encode(), "control character"),
    ("API_SECRET_KEY", b"two\nlines", "control character"),
    ("API_SECRET_KEY", b"tab\there", "control character"),
    ("API_SECRET_KEY", b"esc\x1b[31m", "control character"),
    ("API_SECRET_KEY", b"with space", "printable ASCII without spaces"),
    ("API_SECRET_KEY", "caf\u00e9-token".encode(), "printable ASCII without spaces"),
    ("API_SECRET_KEY", b"\xff\xfe", "not UTF-8"),
    ("API_SECRET_KEY", b"x" * 5000, "longer than"),
    ("API_SECRET_KEY", b"your_api_secret_here", "placeholder"),
    ("ENCRYPTION_KEY", b"not provisioned", "placeholder"),
])
def test_bad_names_and_values_are_refused_in_one_line_without_the_value(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        name: str, value: bytes, needle: str) -> None:
    code, out, err = cli_run(monkeypatch, capsys, "secret", "set", name, stdin=value)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # error, and at most a hint
    if len(value) > 6:
        assert value.decode("utf-8", "replace") not in out + err
    assert not (box.store / f"{name}.cred").exists()


def test_list_shows_names_and_fingerprints_never_values(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(monkeypatch, capsys, "secret", "set", "PRIVATE_KEY", stdin=KEY.encode())[0] == 0
    assert cli_run(monkeypatch, capsys, "secret", "set", "API_SECRET_KEY", stdin=TOKEN.encode())[0] == 0
    box.env_file.write_text("ENCRYPTION_KEY=plain-encryption-key\n")
    code, out, err = cli_run(monkeypatch, capsys, "secret", "list")
    assert code == 0, err
    for value in (HEX, TOKEN, "plain-encryption-key"):
        assert value not in out + err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(secrets.SECRET_NAMES)
    assert "credential" in rows["PRIVATE_KEY"] and ME in rows["PRIVATE_KEY"]
    # A token: its length and the day it was set, never a hash a guess could be checked against.
    assert f"{len(TOKEN)} chars, set 20" in rows["API_SECRET_KEY"]
    assert hashlib.sha256(TOKEN.encode()).hexdigest()[:16] not in out
    assert "plaintext" in rows["ENCRYPTION_KEY"] and "secret migrate" in rows["ENCRYPTION_KEY"]


def test_same_value_same_fingerprint_on_two_hosts_but_other_hosts_cannot_decrypt(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Primary and standby: each host encrypts with its own key; list proves they hold the same wallet."""
    assert cli_run(monkeypatch, capsys, "secret", "set", "API_SECRET_KEY", stdin=TOKEN.encode())[0] == 0
    primary = cli_run(monkeypatch, capsys, "secret", "list")[1]
    primary_cred = (box.store / "API_SECRET_KEY.cred").read_bytes()
    standby = tmp_path / "standby"
    standby.mkdir()
    monkeypatch.setenv("SYSTEMD_CREDENTIAL_SECRET", str(standby / "host.secret"))
    monkeypatch.setenv("POLYMARKET_CREDENTIALS_DIR", str(standby / "credentials"))
    assert cli_run(monkeypatch, capsys, "secret", "set", "API_SECRET_KEY", stdin=TOKEN.encode())[0] == 0
    assert (standby / "credentials" / "API_SECRET_KEY.cred").read_bytes() != primary_cred
    assert cli_run(monkeypatch, capsys, "secret", "list")[1] == primary.replace(str(box.store), str(standby))
    # A restore of the primary's files on the standby (another host key): not decryptable, said so.
    shutil.copy(box.store / "API_SECRET_KEY.cred", standby / "credentials" / "API_SECRET_KEY.cred")
    code, out, _ = cli_run(monkeypatch, capsys, "secret", "list")
    assert code == 4 and "undecryptable" in out and "secret set API_SECRET_KEY" in out


def test_remove(box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(monkeypatch, capsys, "secret", "set", "ENCRYPTION_KEY", stdin=b"k-123")[0] == 0
    assert cli_run(monkeypatch, capsys, "secret", "remove", "ENCRYPTION_KEY")[0] == 0
    assert not (box.store / "ENCRYPTION_KEY.cred").exists()
    code, _, err = cli_run(monkeypatch, capsys, "secret", "remove", "ENCRYPTION_KEY")
    assert code == 2 and err.startswith("error: ENCRYPTION_KEY: no credential")


def test_a_symlinked_store_is_refused(box: Box, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    box.store.symlink_to(elsewhere)
    code, _, err = cli_run(monkeypatch, capsys, "secret", "set", "ENCRYPTION_KEY", stdin=b"k-123")
    assert code == 1 and "not a directory" in err and not list(elsewhere.iterdir())


def test_needs_root(box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "require_root", secrets.require_root)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, _, err = cli_run(monkeypatch, capsys, "secret", "set", "ENCRYPTION_KEY", stdin=b"k-123")
    assert code == 1 and err.splitlines() == ["error: secret set ENCRYPTION_KEY needs root",
                                              "hint: sudo polymarket-bot secret set ENCRYPTION_KEY"]
    assert not box.store.exists()


def test_without_systemd_creds_one_line_and_nothing_stored(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = cli_run(monkeypatch, capsys, "secret", "set", "ENCRYPTION_KEY", stdin=b"k-123")
    assert code == 3 and err.startswith("error: systemd-creds not found") and not box.store.exists()


ENV_BEFORE = f"""# operator's file
POLYGON_RPC_URL=https://polygon-rpc.com
PRIVATE_KEY={KEY}
export API_SECRET_KEY="{TOKEN}"  # the dashboard
ENCRYPTION_KEY=your_strong_encryption_key_here
COPY_LEADERS=0x{'1' * 40}
"""


def test_migrate_moves_secrets_blanks_them_keeps_the_rest_and_is_idempotent(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    box.env_file.write_text(ENV_BEFORE)
    box.env_file.chmod(0o640)
    code, out, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 0, err
    after = box.env_file.read_text()
    assert HEX not in after and TOKEN not in after and HEX not in out + err and TOKEN not in out + err
    assert box.decrypt("PRIVATE_KEY") == KEY and box.decrypt("API_SECRET_KEY") == TOKEN
    assert not (box.store / "ENCRYPTION_KEY.cred").exists()  # a placeholder is not a secret
    kept = [line for line in after.splitlines() if not line.startswith("#")]
    assert kept == ["POLYGON_RPC_URL=https://polygon-rpc.com", "PRIVATE_KEY=", "API_SECRET_KEY=",
                    "ENCRYPTION_KEY=your_strong_encryption_key_here", f"COPY_LEADERS=0x{'1' * 40}"]
    assert oct(box.env_file.stat().st_mode & 0o777) == "0o640"
    creds = {p.name: p.read_bytes() for p in box.store.iterdir()}
    code, out, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 0 and out == "" and box.env_file.read_text() == after
    assert {p.name: p.read_bytes() for p in box.store.iterdir()} == creds
    # The bot, given the credentials as the unit gives them, has the key; the env file has none.
    deliver = box.tmp / "run-credentials"
    deliver.mkdir()
    (deliver / "PRIVATE_KEY").write_text(box.decrypt("PRIVATE_KEY"))
    (deliver / "API_SECRET_KEY").write_text(box.decrypt("API_SECRET_KEY"))
    (deliver / "ENCRYPTION_KEY").write_text(secrets.NOT_PROVISIONED)
    cfg = config.load(box.env_file, {"CREDENTIALS_DIRECTORY": str(deliver)})
    assert cfg.private_key.reveal() == KEY and cfg.api_secret_key.reveal() == TOKEN
    assert cfg.encryption_key.reveal() == "your_strong_encryption_key_here"  # not provisioned: the file's
    assert not any("plaintext" in w for w in cfg.warnings)


def test_migrate_never_overwrites_a_different_credential(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    new = b"the-credential-token-0123456789abcdef"
    assert cli_run(monkeypatch, capsys, "secret", "set", "API_SECRET_KEY", stdin=new)[0] == 0
    box.env_file.write_text(f"API_SECRET_KEY={TOKEN}\n")
    code, _, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 2 and "differ" in err and TOKEN not in err
    assert box.env_file.read_text() == f"API_SECRET_KEY={TOKEN}\n"
    assert box.decrypt("API_SECRET_KEY") == "the-credential-token-0123456789abcdef"


def test_migrate_leaves_an_invalid_value_and_says_so(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    box.env_file.write_text(f"PRIVATE_KEY={KEY[:-2]}\nAPI_SECRET_KEY={TOKEN}\n")
    code, _, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 2 and "PRIVATE_KEY" in err and KEY[:-2] not in err
    assert box.env_file.read_text().splitlines()[0] == f"PRIVATE_KEY={KEY[:-2]}"
    assert box.decrypt("API_SECRET_KEY") == TOKEN and "API_SECRET_KEY=" in box.env_file.read_text()


def test_config_prefers_the_credential_and_warns_about_plaintext(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"PRIVATE_KEY={KEY}\nAPI_SECRET_KEY={TOKEN}\n")
    env_file.chmod(0o600)
    cfg = config.load(env_file, {})
    plain = [w for w in cfg.warnings if "plaintext" in w]
    assert len(plain) == 2 and all("secret migrate" in w for w in plain)
    assert not any(HEX in w or TOKEN in w for w in cfg.warnings)
    deliver = tmp_path / "creds"
    deliver.mkdir()
    (deliver / "API_SECRET_KEY").write_text("credential-token")
    (deliver / "PRIVATE_KEY").write_text(secrets.NOT_PROVISIONED)  # the unit's fallback: not provisioned
    cfg = config.load(env_file, {"CREDENTIALS_DIRECTORY": str(deliver)})
    assert cfg.api_secret_key.reveal() == "credential-token"
    assert cfg.private_key.reveal() == KEY  # not provisioned: the env file's value, with its warning
    assert any("also here in plaintext" in w for w in cfg.warnings)
    (deliver / "PRIVATE_KEY").write_text("0x1234")
    with pytest.raises(ConfigError) as exc:
        config.load(env_file, {"CREDENTIALS_DIRECTORY": str(deliver)})
    assert exc.value.problems == ["credential PRIVATE_KEY: must be 64 hexadecimal digits (optionally 0x-prefixed);"
                                  " value not shown"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the command itself, as root, through a real stdin pipe")
def test_set_through_a_real_pipe_and_validate_config_sees_it(box: Box) -> None:
    env = {**os.environ, **box.environ(), "PYTHONPATH": str(PKG)}
    env.pop("CREDENTIALS_DIRECTORY", None)
    box.env_file.write_text(f"TRADING_MODE=live\nDB_PATH={box.tmp}/db.sqlite\n")
    r = subprocess.run([sys.executable, "-m", "polymarket_bot", "secret", "set", "PRIVATE_KEY"],
                       input=KEY, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "polymarket_bot", "validate-config"],
                       capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "mode live" in r.stdout, r.stderr
    assert HEX not in r.stdout + r.stderr


def _read_until(fd: int, needle: bytes, timeout: float = 30) -> bytes:
    import select

    out = b""
    end = time.monotonic() + timeout
    while needle not in out and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="the command itself, as root, on a real terminal")
def test_on_a_terminal_the_value_is_typed_twice_and_never_echoed(box: Box) -> None:
    import pty

    env = {**os.environ, **box.environ(), "PYTHONPATH": str(PKG)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        os.execve(sys.executable, [sys.executable, "-m", "polymarket_bot", "secret", "set", "API_SECRET_KEY"], env)
    seen = _read_until(fd, b"value (not shown): ")
    os.write(fd, TOKEN.encode() + b"\n")
    seen += _read_until(fd, b"again: ")
    os.write(fd, TOKEN.encode() + b"\n")
    seen += _read_until(fd, b"restart the service")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert TOKEN.encode() not in seen and b"stored encrypted" in seen
    assert box.decrypt("API_SECRET_KEY") == TOKEN


def test_migrate_reads_what_dpkg_left_beside_the_env_file(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An upgrade that took the new .env: the old one, with the key, is .env.dpkg-old."""
    old = box.env_file.with_name(box.env_file.name + ".dpkg-old")
    old.write_bytes(f"LOG_LEVEL=INFO\r\nPRIVATE_KEY={KEY}\r\nCOPY_LEADERS=\r\n".encode())
    old.chmod(0o600)
    box.env_file.write_text("PRIVATE_KEY=your_private_key_here\n")
    code, out, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 0, err
    assert box.decrypt("PRIVATE_KEY") == KEY and HEX not in old.read_text() and HEX not in out + err
    assert old.read_bytes().startswith(b"LOG_LEVEL=INFO\r\n") and b"PRIVATE_KEY=\r\n" in old.read_bytes()
    assert oct(old.stat().st_mode & 0o777) == "0o600" and "rotate" in err
    assert box.env_file.read_text() == "PRIVATE_KEY=your_private_key_here\n"
    listing = cli_run(monkeypatch, capsys, "secret", "list")[1]
    assert "PRIVATE_KEY     credential" in listing and "plaintext" not in listing
    assert cli_run(monkeypatch, capsys, "secret", "migrate")[:2] == (0, "")
    # An older, different key left in a dpkg copy is never written over the credential: reported, kept.
    other = "0x" + "1" * 63 + "2"
    old.write_text(f"PRIVATE_KEY={other}\n")
    code, _, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 2 and "differ" in err and str(old) in err and other[2:] not in err
    assert box.decrypt("PRIVATE_KEY") == KEY


def test_validate_config_warns_about_a_secret_on_a_commented_line(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"#PRIVATE_KEY={KEY}\n# PRIVATE_KEY=your_private_key_here\n")
    env_file.chmod(0o600)
    cfg = config.load(env_file, {}, credentials={})
    said = [w for w in cfg.warnings if "commented-out" in w]
    assert len(said) == 1 and said[0].startswith(f"{env_file}:1: PRIVATE_KEY") and HEX not in said[0]


def test_an_encryption_key_with_spaces_inside_becomes_a_credential(
        box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before, it stayed in plaintext and failed polymarket-bot-secrets.service at every start."""
    box.env_file.write_text("ENCRYPTION_KEY=correct horse battery staple\n")
    code, _, err = cli_run(monkeypatch, capsys, "secret", "migrate")
    assert code == 0, err
    assert box.decrypt("ENCRYPTION_KEY") == "correct horse battery staple"
    assert "staple" not in box.env_file.read_text()
    code, _, err = cli_run(monkeypatch, capsys, "secret", "set", "ENCRYPTION_KEY", stdin=b" leading space")
    assert code == 2 and err.startswith("error: ENCRYPTION_KEY: must be printable ASCII")
