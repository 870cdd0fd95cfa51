"""The packages' debconf questions, read from ``debian/*.templates``: their one declaration.

The autoinstall media answer some of them (the package registry, ``packages.py``,
gives the values); each answer's type comes from here, and the validator
checks each answer against its template's type and choices, so a renamed
question, a changed type or a removed choice fails the build instead of the
installation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from builder.errors import InputError

# The types an answer in the media may have: no password ever goes into the
# media, and note/error/text/title are not questions.
ANSWERABLE = ("string", "boolean", "select", "multiselect")
TYPES = (*ANSWERABLE, "password", "note", "text", "error", "title")


@dataclass(frozen=True)
class Question:
    name: str  # owner/question, e.g. polymarket-ha/role
    package: str  # the package whose templates declare it
    type: str
    choices: tuple[str, ...]  # select and multiselect only
    default: str
    where: str  # debian/FILE.templates:LINE


def split_choices(text: str) -> tuple[str, ...]:
    """debconf's list syntax: items separated by ', ' (a comma escaped as '\\,')."""
    items = re.split(r"(?<!\\), ", text.strip())
    return tuple(item.replace("\\,", ",").strip() for item in items if item.strip())


def load(root: Path) -> dict[str, Question]:
    """Every question of ``root``/debian/*.templates, by name."""
    questions: dict[str, Question] = {}
    for path in sorted((root / "debian").glob("*.templates")):
        package = path.name.removesuffix(".templates")
        text = path.read_text(encoding="utf-8")
        lines = {line.strip(): n for n, line in reversed(list(enumerate(text.splitlines(), 1)))}
        for para in Deb822.iter_paragraphs(text):
            name, kind = para.get("Template", ""), para.get("Type", "")
            where = f"debian/{path.name}:{lines.get(f'Template: {name}', 0)}"
            if not name.startswith(f"{package}/"):
                raise InputError(f"{where}: template {name!r} does not belong to {package}")
            if kind not in TYPES:
                raise InputError(f"{where}: {name}: unknown type {kind!r}", hint=f"debconf's types: {', '.join(TYPES)}")
            choices = next((para[f] for f in ("Choices", "_Choices", "__Choices") if f in para), "")
            questions[name] = Question(name, package, kind, split_choices(choices), para.get("Default", ""), where)
    return questions


def answer_problem(question: Question, kind: str, value: str) -> str | None:
    """Why ``value`` (given as type ``kind``) is not an answer ``question`` accepts (None when it is)."""
    if kind != question.type:
        return f"is answered as {kind}, but its template says {question.type} ({question.where})"
    if question.type not in ANSWERABLE:
        return f"has type {question.type}, which the media never answer ({question.where})"
    dynamic = any("${" in c for c in question.choices)  # substituted at run time: not checkable here
    if question.type == "boolean" and value not in ("true", "false"):
        return f"{value!r} is not true or false ({question.where})"
    if question.type == "select" and not dynamic and value not in question.choices:
        return f"{value!r} is not one of its choices: {', '.join(question.choices)} ({question.where})"
    if question.type == "multiselect" and not dynamic:
        wrong = [v for v in split_choices(value) if v not in question.choices]
        if wrong:
            return f"{', '.join(wrong)} not among its choices: {', '.join(question.choices)} ({question.where})"
    return None
