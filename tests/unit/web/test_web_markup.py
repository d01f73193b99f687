"""Every page the server renders is balanced HTML with unique ids and labelled inputs."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.unit.web.harness import TOKEN, Harness, app_config

VOID = {"meta", "link", "input", "br", "img", "hr"}


class Checker(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.labels, self.inputs, self.problems = [], [], set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "label":
            self.labels.add(a.get("for"))
        if tag == "input" and a.get("type") != "hidden":
            self.inputs.append(a.get("id"))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def check(text: str) -> Checker:
    c = Checker()
    c.feed(text)
    assert c.problems == [] and c.stack == []
    assert len(c.ids) == len(set(c.ids)), "duplicate ids"
    assert all(i in c.labels for i in c.inputs), "an input without a label"
    assert text.startswith("<!doctype html>") and '<html lang="en">' in text
    return c


@pytest.fixture
def h():
    harness = Harness(apps=[app_config(hosted_allowed_clients=("127.0.0.0/8", f"token:{TOKEN}"))])
    yield harness
    harness.finish()


@pytest.mark.parametrize("mode", ["extended", "simple", "hosted"])
def test_form_pages_are_well_formed(h, mode):
    check(h.get(f"/web-callback?mode={mode}").text)


def test_error_and_status_pages_are_well_formed(h):
    check(h.submit("extended", account="", phone="x").text)
    loc = h.submit("simple", account="cb1001", phone="15550100").header("location")
    for _ in range(7):
        check(h.get(loc).text)
        h.clock.advance(1)
    check(h.get("/web-callback/status/unknown").text)


def test_token_form_page_is_well_formed():
    h = Harness(apps=[app_config(hosted_allowed_clients=("10.0.0.0/8", f"token:{TOKEN}"))])
    c = check(h.get("/web-callback").text)
    assert "f-token" in c.inputs
    h.finish()
