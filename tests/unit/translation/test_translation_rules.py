import re

import pytest

from cbserver.translation import (
    MAX_RULE_CHARS,
    MAX_SUBJECT_CHARS,
    TranslationInputError,
    TranslationRuleError,
    compile_rule,
)


@pytest.mark.parametrize(("rule", "subject", "expected"), [
    (r"s/^/cb/", "18185551234", "cb18185551234"),  # the manual's example
    (r"s/^00/+/", "0044207", "+44207"),
    (r"s/^00(\d+)$/$1/", "0044207", "44207"),
    (r"s/^00(\d+)$/${1}9/", "0044207", "442079"),
    (r"s/^(\d)(\d)/\2\1/", "1234", "2134"),
    (r"s/\d+/<$&>/", "ab12cd34", "ab<12>cd34"),  # first match only without g
    (r"s/\d+/<$&>/g", "ab12cd34", "ab<12>cd<34>"),
    (r"s/-//g", "1-818-555", "1818555"),
    (r"s/A/b/gi", "aAa", "bbb"),
    (r"s/A/b/g", "aAa", "aba"),
    (r"s{^\+?1}{}", "+18185551234", "8185551234"),
    (r"s{^}  {cb}", "42", "cb42"),
    (r"s(x)[y]g", "xx", "yy"),
    (r"s{a{2}}<b>", "aaa", "ba"),  # balanced braces inside a bracketed part
    (r"s#/#\##g", "a/b/c", "a#b#c"),
    (r"s/\//./g", "a/b", "a.b"),  # escaped delimiter
    (r"s/^(\d+)?x$/[$1]/", "x", "[]"),  # group that did not take part -> empty
    (r"s/^cb//", "18185551234", "18185551234"),  # no match leaves the subject alone
    (r"s/[^0-9]//g", "+1 (818) 555", "1818555"),
    (r"s/[[:alpha:]]+//g", "ab12", "12"),
    (r"s/[\d-]//g", "1-a", "a"),
    (r"s/[]a]/x/g", "a]b", "xxb"),
    (r"s/\x41/\x42/", "A", "B"),
    (r"s/\x{263A}/:)/", "\u263a", ":)"),
    (r"s/\.$/\$/", "1.", "1$"),
    (r"s/(a)\1/b/", "aab", "bb"),
    (r"s/^(?:00|\+)(?=[1-9])//", "0044", "44"),
    (r"s/(?<!\d)7/8/g", "77 7", "87 8"),
    (r"s/x*/-/g", "abc", "-a-b-c-"),  # empty matches, as Perl
    (r"s/\bcb\b/CB/", "a cb b", "a CB b"),
    (r"s/a\z/b/", "a", "b"),
    (r"s/a\Z/b/", "a\n", "b\n"),
    ("  s/^/cb/  ", "1", "cb1"),
    (r"s/^/\t/", "1", "\t1"),
])
def test_rules_rewrite_like_perl(rule, subject, expected):
    assert compile_rule(rule).apply(subject) == expected


@pytest.mark.parametrize(("rule", "problem"), [
    ("s/a/b/e", "flag 'e' (evaluate code) is not allowed"),
    ("s/a/b/ee", "flag 'e'"),
    ("s/a/b/x", "flag 'x' is not supported"),
    ("s/a/b/m", "only g and i"),
    ("s/a/b/gg", "repeated"),
    (r"s/(?{ system('x') })/b/", "code constructs"),
    (r"s/(??{ 'a' })/b/", "code constructs"),
    (r"s/(?i)a/b/", "group construct"),
    (r"s/(?<n>a)/b/", "group construct"),
    (r"s/(?#c)a/b/", "group construct"),
    (r"s/(?>a)/b/", "group construct"),
    (r"s/(*FAIL)/b/", "control verbs"),
    (r"s/(a+)+$/b/", "exponential"),
    (r"s/(a|aa)*$/b/", "exponential"),
    (r"s/(?:\d*)+/b/", "exponential"),
    (r"s/\d*\d*\d*\d*\d*/b/", "variable repeats"),
    (r"s/a++/b/", "possessive"),
    (r"s/a**/b/", "follows another quantifier"),
    (r"s/*a/b/", "nothing to repeat"),
    (r"s/^*/b/", "anchor"),
    (r"s/a{3,1}/b/", "max below min"),
    (r"s/a{/b/", "unescaped '{'"),
    (r"s/$x/b/", "interpolate a Perl variable"),
    (r"s/@list/b/", "Perl array"),
    (r"s/[$]/b/", "inside a character class"),
    (r"s/a/$x/", "interpolate a Perl variable"),
    (r"s/a/b$/", "trailing '$'"),
    (r"s/a/$0/", "$0"),
    (r"s/a/${name}/", "${N}"),
    (r"s/a/@x/", "Perl array"),
    (r"s/(a)/$2/", "refers to group 2 but the pattern has 1"),
    (r"s/a/\u$&/", "case-changing"),
    (r"s/a/\10/", "above 9"),
    (r"s/\p{L}/b/", r"unsupported escape \p"),
    (r"s/\Qa/b/", r"unsupported escape \Q"),
    (r"s/\G/b/", r"unsupported escape \G"),
    (r"s/\12/b/", "multi-digit"),
    (r"s/\1(a)/b/", "not closed"),
    (r"s/(a\1)/b/", "not closed"),
    (r"s/[z-a]/b/", "reversed range"),
    (r"s/[a-\d]/b/", "range cannot end"),
    (r"s/[[:punct:]]/b/", "POSIX class"),
    (r"s/[abc/b/", "unclosed '['"),
    (r"s/(a/b/", "unclosed '('"),
    (r"s/a)/b/", "unmatched ')'"),
    (r"s/a/b", "missing closing delimiter"),
    (r"s{a}", "missing the replacement"),
    (r"s{a", "missing closing '}'"),
    (r"s|a|b|", "delimiter '|' is not supported"),
    (r"y/a/b/", "must be a substitution"),
    (r"tr/a/b/", "must be a substitution"),
    ("", "must be a substitution"),
    (r"s/a\/b/", "missing closing delimiter"),
    (r"s/a/b/ g", "flag ' ' is not supported"),
    (r"s/\x{110000}/b/", "beyond Unicode"),
    (r"s/a/\x{}/", "needs 1 to 6 hex digits"),
    ("s/" + "a" * MAX_RULE_CHARS + "//", "longer than"),
])
def test_refused_rules_name_the_problem(rule, problem):
    with pytest.raises(TranslationRuleError) as info:
        compile_rule(rule)
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)


def test_subject_length_is_capped():
    rule = compile_rule("s/^/cb/")
    assert rule.apply("1" * MAX_SUBJECT_CHARS) == "cb" + "1" * MAX_SUBJECT_CHARS
    with pytest.raises(TranslationInputError, match="longer"):
        rule.apply("1" * (MAX_SUBJECT_CHARS + 1))
    with pytest.raises(TranslationInputError, match="text"):
        rule.apply(1234)


def test_classes_are_ascii():
    assert compile_rule(r"s/\d//g").apply("1\u0661") == "\u0661"


def test_compiled_rule_exposes_its_python_pattern():
    rule = compile_rule(r"s/^00(\d+)\z/+$1/")
    assert rule.python_pattern == r"^00(\d+)\Z"
    assert rule.replacement == ("+", 1)
    assert re.compile(rule.python_pattern).pattern == rule.python_pattern
