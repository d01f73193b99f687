from hypothesis import assume, given
from hypothesis import strategies as st

from cbserver.translation import TranslationRuleError, compile_rule

PUNCT = ".+*?()[]{}|^$/-#@ ,:!%&~=<>'\""
literal_chars = st.sampled_from(list("abcXYZ019" + PUNCT))


def perl_literal(text):
    """Quote text for a Perl pattern or replacement with backslashes."""
    return "".join(ch if ch.isalnum() else "\\" + ch for ch in text)


@given(st.text(literal_chars, min_size=1, max_size=6), st.text(literal_chars, max_size=6),
       st.text(literal_chars, max_size=30), st.booleans())
def test_literal_rules_behave_like_str_replace(needle, replacement, subject, global_):
    rule = compile_rule(f"s/{perl_literal(needle)}/{perl_literal(replacement)}/"
                        + ("g" if global_ else ""))
    expected = subject.replace(needle, replacement, -1 if global_ else 1)
    assert rule.apply(subject) == expected


@given(st.text(st.sampled_from("abAB"), min_size=1, max_size=4),
       st.text(st.sampled_from("abAB1"), max_size=20))
def test_case_insensitive_matches_ignoring_ascii_case(needle, subject):
    at = subject.lower().find(needle.lower())
    expected = subject if at < 0 else subject[:at] + "#" + subject[at + len(needle):]
    assert compile_rule(f"s/{needle}/#/i").apply(subject) == expected


@given(st.text(st.sampled_from("abc0123456789_"), max_size=8), st.text("0123456789", max_size=20))
def test_prefix_rule_prepends(prefix, number):
    assert compile_rule(f"s/^/{prefix}/").apply(number) == prefix + number


PIECES = list("ab1\\(){}[]*+?|^$.-,:dswzZxgie&@ ") + ["(?", "{2,3}", "[[:digit:]]", "\\1"]


@given(st.lists(st.sampled_from(PIECES), max_size=20).map("".join),
       st.text("0123456789+", max_size=16))
def test_arbitrary_rules_compile_or_fail_cleanly(body, number):
    for rule in (f"s/{body}", f"s{{{body}}}{{x}}", f"s/{body}/$1/g"):
        try:
            compiled = compile_rule(rule)
        except TranslationRuleError:
            continue
        result = compiled.apply(number)
        assert isinstance(result, str)


@given(st.integers(min_value=1, max_value=9), st.text("0123456789", min_size=9, max_size=20))
def test_capture_groups_pick_the_right_digit(n, number):
    assume(len(number) >= 9)
    rule = compile_rule("s/^" + r"(\d)" * 9 + f"/${n}/")
    assert rule.apply(number) == number[n - 1] + number[9:]
