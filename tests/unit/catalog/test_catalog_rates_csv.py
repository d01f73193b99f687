"""The rates CSV reader of ``cbserver rates import`` (no database)."""

from __future__ import annotations

from cbserver.commands.rates import parse_csv

HEADER = b"prefix,first_interval,next_interval,first_price,next_price\n"


def test_rows_carry_their_physical_line_numbers_and_skip_blank_lines():
    rows, problems = parse_csv(HEADER + b"55,60,6,0.05,0.05\n\n1,30,6,0.02,0.02\n")
    assert problems == []
    assert [line for line, _ in rows] == [2, 4]
    assert rows[0][1] == {"prefix": "55", "first_interval": "60", "next_interval": "6",
                          "first_price": "0.05", "next_price": "0.05"}


def test_quoted_formula_with_commas_and_a_bom():
    data = ("\ufeff" + HEADER.decode().rstrip("\n") + ",formula\n"
            '55,60,6,0.05,0.05,"max(amount, 0.10)"\n').encode()
    rows, problems = parse_csv(data)
    assert problems == [] and rows[0][1]["formula"] == "max(amount, 0.10)"


def test_empty_cells_are_left_out():
    rows, _ = parse_csv(HEADER.rstrip(b"\n") + b",effective_from\n55,60,6,0.05,0.05,\n")
    assert "effective_from" not in rows[0][1]


def test_wrong_columns_are_one_problem_on_line_one():
    _, problems = parse_csv(b"prefix,prefix,price\n")
    assert problems[0][0] == 1 and problems[0][1] == "header"
    assert "unknown column(s) price" in problems[0][2] and "named twice" in problems[0][2]


def test_rows_of_the_wrong_width_are_reported_and_the_others_kept():
    rows, problems = parse_csv(HEADER + b"55,60\n1,30,6,0.02,0.02\n")
    assert problems == [(2, "columns", "2 fields, the header has 5")]
    assert [line for line, _ in rows] == [3]


def test_bad_encoding_names_the_line():
    _, problems = parse_csv(HEADER + b"55,60,6,0.05,0.05\n1,30,6,0.02,0.02 \xff\n")
    assert problems[0][:2] == (3, "encoding")


def test_empty_file():
    assert parse_csv(b"") == ([], [(1, "header", "the file is empty")])
