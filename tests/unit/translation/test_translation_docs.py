"""The examples table of docs/translation.md is checked against the code."""

import re
from pathlib import Path

import pytest

from cbserver.translation import compile_rule

DOC = Path(__file__).resolve().parents[3] / "docs" / "translation.md"
ROW = re.compile(r"^\| `(s.+?)` \| `(.*?)` \| `(.*?)` \|$", re.M)
EXAMPLES = ROW.findall(DOC.read_text(encoding="utf-8").split("## Examples", 1)[1])


def test_the_doc_has_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(("rule", "subject", "expected"), EXAMPLES)
def test_documented_example(rule, subject, expected):
    assert compile_rule(rule).apply(subject) == expected


@pytest.mark.parametrize("rule", [r"s/(\d{3})+/x/", r"s/(ab)?/x/"])
def test_documented_safe_repeats_are_accepted(rule):
    assert compile_rule(rule).python_pattern
