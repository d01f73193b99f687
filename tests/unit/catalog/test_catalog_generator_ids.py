"""Property tests of the generator's ID space and random draw (no database)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbserver.billing.generator import draw_ids, id_space
from cbserver.billing.validation import ValidationError

letters = st.text(alphabet="abcxyzCB", max_size=3)
digits = st.one_of(st.just(""), st.from_regex(r"[1-9][0-9]{0,3}", fullmatch=True))


@st.composite
def requests(draw):
    """A prefix, an ID length that fits it, and a quantity within the space."""
    pre_letters, pre_digits = draw(letters), draw(digits)
    length = draw(st.integers(min_value=max(1, len(pre_digits)), max_value=len(pre_digits) + 4))
    space = id_space(pre_letters + pre_digits, length)
    quantity = draw(st.integers(min_value=1, max_value=min(space.size, 300)))
    return pre_letters, pre_digits, length, quantity


@settings(max_examples=200, deadline=None)
@given(requests(), st.randoms(use_true_random=False))
def test_ids_are_unique_keep_the_prefix_have_the_right_length_and_no_leading_zero(req, rng):
    pre_letters, pre_digits, length, quantity = req
    ids = draw_ids(id_space(pre_letters + pre_digits, length), quantity, set(), rng)
    assert len(ids) == quantity
    assert len(set(ids)) == quantity
    for account_id in ids:
        assert account_id.startswith(pre_letters + pre_digits)
        numeric = account_id[len(pre_letters):]
        assert numeric.isdigit() and len(numeric) == length
        assert not numeric.startswith("0")


@settings(max_examples=200, deadline=None)
@given(letters, digits, st.integers(min_value=0, max_value=3), st.randoms(use_true_random=False))
def test_feasibility_is_exact_at_the_boundary(pre_letters, pre_digits, extra, rng):
    length = max(1, len(pre_digits)) + extra
    space = id_space(pre_letters + pre_digits, length)
    expected = 10 ** (length - len(pre_digits)) if pre_digits else 9 * 10 ** (length - 1)
    assert space.size == expected
    if space.size <= 2000:
        ids = draw_ids(space, space.size, set(), rng)  # exactly all of them: possible
        assert len(set(ids)) == space.size
    with pytest.raises(ValidationError) as e:
        draw_ids(space, space.size + 1, set(), rng)  # one more: refused
    assert e.value.field == "quantity"
    assert f"only {space.size} IDs are possible" in e.value.reason


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=99), max_size=60), st.randoms(use_true_random=False))
def test_taken_ids_are_avoided_and_counted_against_feasibility(taken_numbers, rng):
    space = id_space("cb55", 4)  # cb5500 .. cb5599
    taken = {space.make(n) for n in taken_numbers}
    free = 100 - len(taken)
    if free:
        ids = draw_ids(space, free, taken, rng)
        assert set(ids).isdisjoint(taken) and len(set(ids)) == free
    with pytest.raises(ValidationError, match=f"only {free} IDs are possible"):
        draw_ids(space, free + 1, taken, rng)


def test_the_manuals_infeasible_example_names_the_number_possible():
    with pytest.raises(ValidationError) as e:
        draw_ids(id_space("55", 4), 1000, set(), random.Random(1))
    assert e.value.field == "quantity"
    assert "only 100 IDs are possible" in e.value.reason


def test_the_manuals_cb1818_example():
    space = id_space("cb1818", 9)
    ids = draw_ids(space, 10, set(), random.Random(2))
    assert all(len(i) == 11 and i.startswith("cb1818") and i[6:].isdigit() for i in ids)


def test_prefix_whose_digits_start_with_zero_is_refused():
    with pytest.raises(ValidationError) as e:
        id_space("cb0", 5)
    assert e.value.field == "prefix"


def test_prefix_with_letters_after_digits_is_refused():
    with pytest.raises(ValidationError) as e:
        id_space("12cb", 5)
    assert e.value.field == "prefix"


def test_length_shorter_than_the_prefix_digits_is_refused():
    with pytest.raises(ValidationError) as e:
        id_space("5512", 3)
    assert e.value.field == "length"


def test_huge_spaces_draw_without_enumerating_them():
    ids = draw_ids(id_space("cb", 30), 50, set(), random.Random(3))
    assert len(set(ids)) == 50 and all(len(i) == 32 and i[2] != "0" for i in ids)
