"""restore --from-offsite: the bot's secrets travel inside the snapshot as NAME=value lines and go back into
the restored .env for the bot's own "secret migrate" (issue 11). Booted: tests/system/test_backup_offsite.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import payload

FAKE_CREDS = """#!/bin/sh
# systemd-creds decrypt --name=NAME FILE -: the file's content is the plaintext; "tpm" fails as a TPM2 would.
[ "$1" = decrypt ] || exit 9
case "$3" in *TPM*) echo "Failed to open TPM device" >&2; exit 1 ;; esac
cat "$3"
"""


def test_export_secrets_writes_name_value_lines_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    pb = payload.backup()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemd-creds").write_text(FAKE_CREDS)
    (bin_dir / "systemd-creds").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    store = tmp_path / "credentials"
    store.mkdir()
    (store / "PRIVATE_KEY.cred").write_text("0xabc\n")
    (store / "API_SECRET_KEY.cred").write_text("token-1\n")
    (store / "ENCRYPTION_TPM.cred").write_text("sealed")
    (store / "lower.cred").write_text("ignored: not a secret's name")
    (store / "LINKED.cred").symlink_to(store / "PRIVATE_KEY.cred")
    dest = tmp_path / "bot-secrets.env"
    names = pb.export_secrets(dest, store)
    assert names == ["API_SECRET_KEY", "PRIVATE_KEY"]
    assert dest.read_text() == "API_SECRET_KEY=token-1\nPRIVATE_KEY=0xabc\n"
    assert dest.stat().st_mode & 0o777 == 0o600
    assert "ENCRYPTION_TPM not in the snapshot" in caplog.text and "0xabc" not in caplog.text
    # No credential at all: no file.
    empty = tmp_path / "none"
    empty.mkdir()
    assert pb.export_secrets(tmp_path / "other.env", empty) == [] and not (tmp_path / "other.env").exists()


def test_secrets_go_back_into_the_env_file_in_place() -> None:
    pb = payload.backup()
    secrets = pb.parse_secrets("PRIVATE_KEY=0xabc\nAPI_SECRET_KEY=tok\nbad line\nlower=x\nEMPTY=\n")
    assert secrets == {"PRIVATE_KEY": "0xabc", "API_SECRET_KEY": "tok"}
    env = ("# header\nTRADING_MODE=live\n# PRIVATE_KEY is an encrypted credential: polymarket-bot secret list\n"
           "API_SECRET_KEY=\nAPI_SECRET_KEY=dup\nPOLL_INTERVAL=1")  # fmt: skip
    assert pb.with_secrets(env, secrets) == ("# header\nTRADING_MODE=live\nPRIVATE_KEY=0xabc\nAPI_SECRET_KEY=tok\n"
                                             "POLL_INTERVAL=1\n")  # fmt: skip
    assert pb.with_secrets("A=1\n", {"PRIVATE_KEY": "0xabc"}) == "A=1\nPRIVATE_KEY=0xabc\n"
