"""hardening.conf's one reader (`polymarket-compliance get KEY`, which apply's load_settings and so
`apply --check-settings` in the postinst call): a file it accepts is a file apply applies as the admin wrote it.
A line it cannot place (a misspelt key, a key behind a UTF-8 BOM) must be refused with one error line, never
skipped: a skipped ALLOW_USERS falls back to the default "admin" and sshd's AllowUsers shuts the admin who
wrote the line out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import payload


def get(tmp_path: Path, text: bytes, key: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    conf = tmp_path / "hardening.conf"
    conf.write_bytes(text)
    code = payload.compliance().main(["get", key, "--settings", str(conf)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b'ALLOW_USER="ops"\n', id="misspelt-key"),
        pytest.param(b'allow_users="ops"\n', id="lower-case-key"),
        pytest.param('\ufeffALLOW_USERS="ops"\n'.encode(), id="bom-before-the-key"),
    ],
)
def test_a_line_the_reader_cannot_place_is_refused(tmp_path: Path, text: bytes,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = get(tmp_path, text, "ALLOW_USERS", capsys)
    assert (code, out) == (1, ""), f"accepted, ALLOW_USERS read as {out!r}: the admin's 'ops' is locked out"
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and ":1:" in err


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b'# c\r\nALLOW_USERS="ops admin"\r\nROLE=lb\r\n', id="crlf"),
        pytest.param(b'ALLOW_USERS="x"\nALLOW_USERS="ops admin"\nROLE=lb\n', id="duplicate-last-wins"),
    ],
)
def test_crlf_and_a_repeated_key_read_as_the_shell_would(tmp_path: Path, text: bytes,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert get(tmp_path, text, "ALLOW_USERS", capsys)[:2] == (0, "ops admin\n")
    assert get(tmp_path, text, "ROLE", capsys)[:2] == (0, "lb\n")
