"""Command line of the builder: ``python3 -m builder SUBCOMMAND``."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from builder import __version__
from builder.errors import BuilderError, InputError
from builder.text import control_problem, shown

log = logging.getLogger("builder")

DESCRIPTION = """\
Build, lint and publish the Polymarket deployment's Debian packages.

The packages are defined by the top-level debian/ source package and the
Python distributions under packages/; every output lands in dist/.
"""

EPILOG = """\
exit codes: 0 success, 1 failure, 2 bad input, 3 missing tool,
4 an external command failed, 5 lint findings.

examples:
  python3 -m builder check
  python3 -m builder build polymarket-hardening
  python3 -m builder lint
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m builder",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true", help="log every command run and show tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    p.add_argument(
        "--dist", type=Path, default=None, metavar="DIR", help="output directory (default: dist/ in the repository)"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser(
        "check",
        help="validate every input without building",
        description="Validate debian/, the payloads and the inventory; build nothing.",
    )
    b = sub.add_parser(
        "build",
        help="build packages into dist/",
        description="Build the named binary packages (default: all) into dist/.",
    )
    b.add_argument("packages", nargs="*", metavar="PACKAGE")
    b.add_argument("--no-lint", action="store_true", help="skip lintian and shellcheck after building")
    lt = sub.add_parser(
        "lint",
        help="run lintian and shellcheck",
        description="Run lintian on the built .debs and shellcheck on every shell script.",
    )
    lt.add_argument("packages", nargs="*", metavar="PACKAGE")
    lt.add_argument(
        "--python",
        action="store_true",
        help="also ruff and mypy over every Python file of the tree (scripts found by shebang; needs make venv)",
    )
    sub.add_parser(
        "list",
        help="list the packages and the version",
        description="Print each binary package with its version and build system.",
    )

    pub = sub.add_parser(
        "publish",
        help="publish dist/ into the signed apt repository dist/repo/",
        description="Add every built .deb to the signed apt repository under dist/repo/; every version published "
        "before stays installable.",
    )
    pub.add_argument("--key", metavar="FINGERPRINT", help="sign with this key (default: a development key, made once)")
    pub.add_argument("--gnupghome", type=Path, metavar="DIR", help="GnuPG home holding --key")
    pub.add_argument(
        "--url", metavar="URL", help="the repository's URL for polymarket.sources (default: $POLYMARKET_REPO_URL)"
    )
    rel = sub.add_parser(
        "release",
        help="start a new version in debian/changelog",
        description="Add a debian/changelog entry for VERSION, the one place the version of every package lives.",
    )
    rel.add_argument("--version", required=True, dest="new_version", metavar="VERSION")
    rel.add_argument(
        "-m", "--message", action="append", default=[], metavar="TEXT", help="a changelog line (repeatable)"
    )
    ai = sub.add_parser(
        "autoinstall",
        help="render autoinstall media (USB seed and PXE) for every host",
        description="Validate the inventory and render, per host, user-data, meta-data and a CIDATA seed.iso, "
        "plus a PXE tree. Nothing is written when any output is invalid.",
    )
    ai.add_argument("--inventory", type=Path, default=None, metavar="FILE", help="default: autoinstall/inventory.yaml")
    ai.add_argument("--output", type=Path, default=None, metavar="DIR", help="default: dist/autoinstall")
    return p


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def check_arguments(argv: list[str]) -> None:
    """Every argument is one line of printable text: a newline in ``-m`` would forge a changelog entry,
    in ``--url`` a second deb822 field."""
    for i, arg in enumerate(argv):
        problem = control_problem(arg)
        if not problem:
            continue
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        elif i > 0 and argv[i - 1].startswith("-") and control_problem(argv[i - 1]) is None:
            name, value = argv[i - 1], arg
        else:
            name, value = f"argument {i + 1}", arg
        name = name if len(name) <= 40 else f"{name[:37]}..."
        raise InputError(f"{name}: {shown(value)}: {problem}", hint="give one line of printable text per argument")


def _dispatch(args: argparse.Namespace) -> int:
    from builder import build, check, lint
    from builder.project import find_root, load_project

    root = find_root()
    project = load_project(root)
    dist = (args.dist or root / "dist").resolve()
    if args.command == "check":
        check.check(project)
    elif args.command == "list":
        for pkg in project.packages:
            print(f"{pkg.name}\t{project.version}\t{pkg.build_system}")
    elif args.command == "build":
        project.select(args.packages)  # unknown names fail before any work
        check.check(project)
        build.build(project, args.packages, dist)
        if not args.no_lint:
            lint.lint(project, args.packages, dist)
    elif args.command == "lint":
        lint.lint(project, args.packages, dist, python=args.python)
    elif args.command == "publish":
        from builder import repo

        repo.publish(project, dist, key=args.key, gnupghome=args.gnupghome, url=args.url)
    elif args.command == "release":
        from builder import release

        release.release(project, args.new_version, args.message)
    elif args.command == "autoinstall":
        from builder import autoinstall

        inventory = args.inventory or root / "autoinstall" / "inventory.yaml"
        autoinstall.render(project, inventory, args.output or dist / "autoinstall")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    try:
        check_arguments(argv)
        return _dispatch(args)
    except BuilderError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        tail = getattr(exc, "stderr_tail", "")
        if tail:
            for line in tail.splitlines():
                print(f"  | {line}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
