"""The one place where the builder starts external programs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.errors import CommandFailed, ToolMissing

log = logging.getLogger(__name__)

# Which Debian package provides each tool the builder calls, for the hint of
# a ToolMissing error.
TOOL_PACKAGES: dict[str, str] = {
    "dpkg-buildpackage": "dpkg-dev",
    "dpkg-deb": "dpkg",
    "dh": "debhelper",
    "lintian": "lintian",
    "shellcheck": "shellcheck",
    "gpg": "gnupg",
    "gpgv": "gpgv",
    "apt-ftparchive": "apt-utils",
    "xorriso": "xorriso",
    "cloud-init": "cloud-init",
    "debconf-updatepo": "po-debconf",
    "py2dsc": "python3-stdeb",
}

# A plain PATH: pybuild and stdeb break under the pyenv interpreter.
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYENV", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = SAFE_PATH
    env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def require(tool: str) -> str:
    """Return the path of ``tool`` or raise ToolMissing naming its package."""
    path = shutil.which(tool, path=SAFE_PATH)
    if path is None:
        pkg = TOOL_PACKAGES.get(tool, tool)
        raise ToolMissing(f"{tool} is not installed", hint=f"apt-get install {pkg}")
    return path


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a list, never a shell string) and return its result.

    stdin is closed unless ``input_text`` is given, the locale is C.UTF-8,
    the command is logged as ``+ cmd`` at debug level, and a non-zero exit
    raises CommandFailed with the tail of stderr.
    """
    args = [str(a) for a in argv]
    require(args[0]) if "/" not in args[0] else None
    log.debug("+ %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=base_env(env),
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            capture_output=capture,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(
            f"{args[0]} is not installed", hint=f"apt-get install {TOOL_PACKAGES.get(args[0], args[0])}"
        ) from exc
    if check and proc.returncode != 0:
        tail_src = (proc.stderr or "") + ("" if proc.stderr else (proc.stdout or ""))
        tail = "\n".join(tail_src.strip().splitlines()[-15:]) if capture else ""
        raise CommandFailed(args, proc.returncode, tail)
    return proc
