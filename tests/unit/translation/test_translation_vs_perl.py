"""Differential test: compiled rules rewrite numbers exactly as perl itself does.

Skipped when no ``perl`` is installed. Rules are generated from the supported
subset; each is applied by ``compile_rule`` and by perl's own ``s///`` (the
rules and subjects travel hex-encoded to one perl process per example).
"""

import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbserver.translation import TranslationRuleError, compile_rule

PERL = shutil.which("perl")
pytestmark = pytest.mark.skipif(PERL is None, reason="perl is not installed")

SCRIPT = r"""
no warnings;
while (my $line = <STDIN>) {
    chomp $line;
    my ($r, $s) = map { pack("H*", $_) } split / /, $line, -1;
    my $ok = eval "\$s =~ $r; 1";
    print $ok ? "=" . unpack("H*", $s) : "ERR", "\n";
}
"""

ATOMS = ["1", "2", "0", "a", "B", "-", r"\d", r"\w", r"\s", ".", "[0-5]", "[^1]", r"[\d-]",
         "[[:digit:]]", r"\+", r"\.", " ", r"\b"]
QUANTIFIERS = ["", "", "", "?", "*", "+", "{2}", "{1,3}", "{2,}", "*?", "+?", "??"]


@st.composite
def patterns(draw, depth=0):
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 2 and draw(st.integers(0, 4)) == 0:
            inner = draw(patterns(depth + 1))
            if draw(st.booleans()):
                inner += "|" + draw(patterns(depth + 1))
            opener = draw(st.sampled_from(["(", "(?:"]))
            atom = f"{opener}{inner})"
        else:
            atom = draw(st.sampled_from(ATOMS))
        parts.append(atom + draw(st.sampled_from(QUANTIFIERS)))
    text = "".join(parts)
    if depth == 0:
        text = draw(st.sampled_from(["", "^"])) + text + draw(st.sampled_from(["", "$"]))
    return text


replacements = st.lists(
    st.sampled_from(["x", "+", "cb", "$1", "${1}", r"\1", "$&", "9", r"\$", r"\-"]), max_size=4
).map("".join)
subjects = st.text(alphabet="0123456789+-aB ", max_size=14)


def perl_apply(cases):
    lines = "".join(f"{rule.encode().hex()} {subject.encode().hex()}\n" for rule, subject in cases)
    done = subprocess.run([PERL, "-e", SCRIPT], input=lines, capture_output=True, text=True,
                          timeout=30, check=True)
    return [bytes.fromhex(out[1:]).decode() if out.startswith("=") else None
            for out in done.stdout.splitlines()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(patterns(), replacements, st.sampled_from(["", "g", "i", "gi"]),
                          subjects), min_size=1, max_size=25))
def test_rules_agree_with_perl(cases):
    accepted = []
    for pattern, replacement, flags, subject in cases:
        rule = f"s/{pattern}/{replacement}/{flags}"
        try:
            compiled = compile_rule(rule)
        except TranslationRuleError:
            continue
        accepted.append((rule, subject, compiled.apply(subject)))
    if not accepted:
        return
    perl_results = perl_apply([(rule, subject) for rule, subject, _ in accepted])
    for (rule, subject, ours), theirs in zip(accepted, perl_results, strict=True):
        assert ours == theirs, f"{rule} on {subject!r}: ours {ours!r}, perl {theirs!r}"


def test_documented_rules_agree_with_perl():
    cases = [(r"s/^/cb/", "18185551234"), (r"s/^00(\d+)$/$1/", "0044207"),
             (r"s{^\+?1}{}", "+18185551234"), (r"s/[^0-9]//g", "+1 (818) 555"),
             (r"s/^(\d{3})(\d+)/${2}-$1/", "123456"), (r"s/^cb//i", "CB42"),
             (r"s/x*/-/g", "abc"), (r"s/a\Z/b/", "a\n"), (r"s/(?<!\d)7/8/g", "77 7")]
    ours = [compile_rule(rule).apply(subject) for rule, subject in cases]
    assert ours == perl_apply(cases)
