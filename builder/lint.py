"""lintian on the built packages and shellcheck on every shell script."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from builder.errors import InputError, LintFailed
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


def lint(project: Project, names: list[str], dist: Path) -> None:
    findings = run_shellcheck(project) + run_lintian(debs_for(project, names, dist))
    for f in findings:
        log.error("%s", f.text)
    if findings:
        raise LintFailed(f"{len(findings)} lint finding(s)", hint="fix them, or add a commented lintian override")
    log.info("lint clean")
