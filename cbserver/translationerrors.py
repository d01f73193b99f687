"""The errors of the Perl-style translation rules (``cbserver/translation.py``)."""

from __future__ import annotations


class TranslationError(Exception):
    """Base of the translation-rule errors."""


class TranslationRuleError(TranslationError, ValueError):
    """A rule that is malformed or uses something outside the supported subset."""

    def __init__(self, rule: str, problem: str):
        self.rule = rule
        self.problem = problem
        super().__init__(f"translation rule {rule!r}: {problem}")


class TranslationInputError(TranslationError, ValueError):
    """A subject the rule refuses to process (too long or not text)."""
