"""debian/*.templates as the one declaration of each debconf question: the loader, the check of an answer
against its template, and the media's answers and README's table against the real templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder import autoinstall_config, debconf, inventory
from builder.errors import InputError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "autoinstall" / "inventory.yaml"

TEMPLATES = """\
Template: demo/mode
Type: select
__Choices: fast, slow\\, careful, off
Default: fast
_Description: Mode:
 How to run.

Template: demo/enabled
Type: boolean
Default: true
_Description: Enabled?

Template: demo/features
Type: multiselect
Choices: a, b, c
_Description: Features:

Template: demo/interfaces
Type: select
Choices: ${interfaces}
_Description: Interface:

Template: demo/notice
Type: note
_Description: Read this.
"""


@pytest.fixture
def questions(tmp_path: Path) -> dict[str, debconf.Question]:
    (tmp_path / "debian").mkdir()
    (tmp_path / "debian" / "demo.templates").write_text(TEMPLATES)
    return debconf.load(tmp_path)


def test_templates_are_loaded_with_types_choices_and_lines(questions: dict[str, debconf.Question]) -> None:
    mode = questions["demo/mode"]
    assert (mode.package, mode.type, mode.default, mode.where) == ("demo", "select", "fast", "debian/demo.templates:1")
    assert mode.choices == ("fast", "slow, careful", "off")  # translatable __Choices, an escaped comma
    assert questions["demo/enabled"].where == "debian/demo.templates:8"
    assert questions["demo/features"].choices == ("a", "b", "c")


@pytest.mark.parametrize(
    ("name", "kind", "value", "problem"),
    [
        ("demo/mode", "select", "fast", None),
        ("demo/mode", "select", "slow, careful", None),
        ("demo/mode", "select", "medium", "'medium' is not one of its choices: fast, slow, careful, off"),
        ("demo/mode", "string", "fast", "is answered as string, but its template says select"),
        ("demo/enabled", "boolean", "false", None),
        ("demo/enabled", "boolean", "yes", "'yes' is not true or false"),
        ("demo/features", "multiselect", "a, c", None),
        ("demo/features", "multiselect", "a, d", "d not among its choices: a, b, c"),
        ("demo/interfaces", "select", "eth0", None),  # choices substituted at run time
        ("demo/notice", "note", "x", "has type note, which the media never answer"),
    ],
)
def test_answer_against_its_template(
    questions: dict[str, debconf.Question], name: str, kind: str, value: str, problem: str | None
) -> None:
    got = debconf.answer_problem(questions[name], kind, value)
    if problem is None:
        assert got is None
    else:
        assert got is not None and got.startswith(problem), got


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Template: other/x\nType: string\n", "debian/demo.templates:1: template 'other/x' does not belong to demo"),
        ("Template: demo/x\nType: strnig\n", "debian/demo.templates:1: demo/x: unknown type 'strnig'"),
    ],
)
def test_bad_templates_are_one_line_errors(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "debian").mkdir()
    (tmp_path / "debian" / "demo.templates").write_text(text)
    with pytest.raises(InputError) as exc:
        debconf.load(tmp_path)
    assert exc.value.message == error


def test_every_answer_of_the_media_matches_its_template() -> None:
    questions = debconf.load(REPO)
    inv = inventory.load(EXAMPLE)
    for host in inv.hosts:
        for answer in autoinstall_config.debconf_answers(inv, host, questions):
            question = questions[answer.question]
            assert debconf.answer_problem(question, answer.type, answer.value) is None, answer


def test_an_answer_to_an_undeclared_question_is_refused() -> None:
    questions = {k: v for k, v in debconf.load(REPO).items() if k != "polymarket-ha/virtual_ip"}
    inv = inventory.load(EXAMPLE)
    with pytest.raises(InputError, match=r"the media answer polymarket-ha/virtual_ip, but no debian/\*\.templates"):
        autoinstall_config.debconf_answers(inv, inv.hosts[0], questions)


def _readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^### Debconf answers\n(.*?)^#", text, re.M | re.S)
    assert section, "README has no 'Debconf answers' section"
    return section.group(1)


def test_readme_debconf_table_is_the_templates_and_the_media() -> None:
    """Each row names a declared question with its template's type; the rows are what some host's media
    answer; every other question a user could answer is named in the section's text."""
    section = _readme_section()
    rows = dict(re.findall(r"^\| `([a-z0-9-]+/[a-z0-9_]+)` \| (\w+) \|", section, re.M))
    questions = debconf.load(REPO)
    assert {name: questions[name].type for name in rows if name in questions} == rows, "README names unknown ones"
    inv = inventory.load(EXAMPLE)
    answered = {a.question for h in inv.hosts for a in autoinstall_config.debconf_answers(inv, h, questions)}
    assert set(rows) == answered
    unanswered = {n for n, q in questions.items() if q.type in debconf.ANSWERABLE} - answered
    assert [n for n in sorted(unanswered) if f"`{n}`" not in section] == []
