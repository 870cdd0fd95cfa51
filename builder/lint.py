"""lintian on the built packages, shellcheck on every shell script, and (``--python``) ruff and mypy on
every Python file of the tree, extensionless scripts found by their shebang included."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from builder.errors import InputError, LintFailed, ToolMissing
from builder.project import Project
from builder.run import run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    tool: str
    where: str
    text: str


def shell_scripts(project: Project) -> list[Path]:
    """Maintainer scripts of every package plus every shell script in the payloads."""
    scripts: list[Path] = []
    for pkg in project.packages:
        scripts += pkg.maintainer_scripts(project.root)
        overlay = pkg.payload / "debian-overlay"
        if overlay.is_dir():
            scripts += [
                p
                for p in sorted(overlay.iterdir())
                if p.suffix in (".postinst", ".postrm", ".prerm", ".preinst", ".config")
            ]
    for path in sorted((project.root / "packages").rglob("*")):
        if path.is_file() and path not in scripts and "debian-overlay" not in path.parts:
            try:
                head = path.read_bytes()[:64]
            except OSError:
                continue
            if path.suffix == ".sh" or head.startswith((b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash")):
                scripts.append(path)
    return scripts


def run_shellcheck(project: Project) -> list[Finding]:
    scripts = shell_scripts(project)
    if not scripts:
        return []
    log.info("shellcheck: %d scripts", len(scripts))
    proc = run(["shellcheck", "--format=gcc", "--shell=sh", *scripts], cwd=project.root, check=False)
    findings = [Finding("shellcheck", line.split(":", 1)[0], line) for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode not in (0, 1):
        raise LintFailed(f"shellcheck could not run (exit {proc.returncode})", hint=proc.stderr.strip()[:200])
    return findings


def run_lintian(debs: list[Path]) -> list[Finding]:
    findings = []
    for deb in debs:
        log.info("lintian: %s", deb.name)
        proc = run(["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", str(deb)], check=False)
        for line in proc.stdout.splitlines():
            if line[:2] in ("E:", "W:"):
                findings.append(Finding("lintian", deb.name, line))
        if proc.returncode not in (0, 2) or (proc.returncode == 2 and not findings):
            raise LintFailed(
                f"lintian could not check {deb.name} (exit {proc.returncode})", hint=proc.stderr.strip()[-300:]
            )
    return findings


def debs_for(project: Project, names: list[str], dist: Path) -> list[Path]:
    debs = []
    for pkg in project.select(names):
        matches = sorted(dist.glob(f"{pkg.name}_{project.version}_all.deb"))
        if not matches:
            raise InputError(
                f"no built package for {pkg.name} {project.version} in {dist}",
                hint=f"run: python3 -m builder build {pkg.name}",
            )
        debs.append(matches[-1])
    return debs


def lint(project: Project, names: list[str], dist: Path, *, python: bool = False) -> None:
    findings = run_shellcheck(project) + run_lintian(debs_for(project, names, dist))
    if python:
        findings += run_python_lint(project.root)
    for f in findings:
        log.error("%s", f.text)
    if findings:
        raise LintFailed(f"{len(findings)} lint finding(s)", hint="fix them, or add a commented lintian override")
    log.info("lint clean")


# Never part of the tree's own Python: tools, caches and build outputs.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".venv",
        ".cache",
        "build",
        "dist",
        "deb_dist",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
    }
)
# Python projects with a mypy configuration of their own: (directory, what to check from there, MYPYPATH).
# The root pyproject's [tool.mypy] files are a run too; every other Python file is checked on its own, as a
# script (the payload scripts are installed as single files).  The bot's tests import ``conftest`` as a
# top-level module (pytest puts tests/bot on sys.path): with tests/bot on MYPYPATH and explicit package
# bases mypy resolves it too; without them it names the file tests.bot.conftest, ``from conftest import``
# is missing, and ignore_missing_imports turns every Harness in the tests into Any (unchecked).
MYPY_PROJECTS = (
    (
        "packages/polymarket-bot",
        ("--explicit-package-bases", "polymarket_bot", "bench", "setup.py", "../../tests/bot"),
        ("../../tests/bot",),
    ),
)


def python_files(root: Path) -> list[Path]:
    """Every Python file of the tree: ``*.py`` and any other file whose first line is a python shebang."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            if name.endswith(".py"):
                found.append(path)
                continue
            with open(path, "rb") as f:
                first = f.readline(200)
            if first.startswith(b"#!") and b"python" in first:
                found.append(path)
    return found


@dataclass(frozen=True)
class MypyRun:
    cwd: Path
    args: tuple[str, ...]  # relative to cwd
    covers: tuple[Path, ...]  # the files and directories it checks
    mypy_path: tuple[Path, ...] = ()  # MYPYPATH: where imports not among the checked files are found


def mypy_runs(root: Path, files: list[Path]) -> list[MypyRun]:
    """The mypy invocations that together check every file of ``files``, each under its configuration."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("mypy", {})
    runs = [MypyRun(root, (), tuple(root / f for f in config.get("files", [])))]
    for directory, args, path in MYPY_PROJECTS:
        cwd = root / directory
        covers = tuple((cwd / a).resolve() for a in args if not a.startswith("-"))
        runs.append(MypyRun(cwd, args, covers, tuple((cwd / d).resolve() for d in path)))
    alone = [f for f in files if not any(_covered(f, r) for r in runs)]
    if alone:
        rel = tuple(str(f.relative_to(root)) for f in alone)
        runs.append(MypyRun(root, ("--scripts-are-modules", *rel), tuple(alone)))
    return runs


def _covered(path: Path, mypy_run: MypyRun) -> bool:
    return any(path == c or c in path.parents for c in mypy_run.covers)


def _tool(root: Path, name: str) -> str:
    """ruff and mypy of the test venv (make venv), else of this Python, else of PATH."""
    for candidate in (root / ".venv" / "bin" / name, Path(sys.executable).parent / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} is not installed", hint="make venv (the test venv has the pinned ruff and mypy)")
    return found


def run_python_lint(root: Path) -> list[Finding]:
    """ruff check and mypy over every Python file of the tree."""
    files = python_files(root)
    log.info("ruff and mypy: %d Python files", len(files))
    findings: list[Finding] = []
    ruff = [_tool(root, "ruff"), "check", "--output-format", "concise", "--no-cache"]
    proc = run([*ruff, *(str(f.relative_to(root)) for f in files)], cwd=root, check=False)
    findings += [Finding("ruff", line.split(":", 1)[0], line) for line in proc.stdout.splitlines() if ":" in line]
    if proc.returncode not in (0, 1):
        raise LintFailed(f"ruff could not run (exit {proc.returncode})", hint=proc.stderr.strip()[-300:])
    mypy = _tool(root, "mypy")
    for mypy_run in mypy_runs(root, files):
        env = {"MYPYPATH": os.pathsep.join(map(str, mypy_run.mypy_path))} if mypy_run.mypy_path else None
        proc = run([mypy, *mypy_run.args], cwd=mypy_run.cwd, env=env, check=False)
        for line in proc.stdout.splitlines():
            if ": error:" in line:
                where = os.path.normpath(mypy_run.cwd / line.split(":", 1)[0])
                findings.append(
                    Finding(
                        "mypy", os.path.relpath(where, root), f"{os.path.relpath(where, root)}:{line.split(':', 1)[1]}"
                    )
                )
        if proc.returncode not in (0, 1):
            raise LintFailed(
                f"mypy could not run in {mypy_run.cwd} (exit {proc.returncode})", hint=proc.stderr.strip()[-300:]
            )
    return findings
