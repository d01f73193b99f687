"""The demo catalog with accounts of one's own, for the nodes the tests and benchmarks run.

``demo/demo.toml`` (the catalog ``cbserver demo`` provisions) plus one debit account per name,
written to a folder for ``cbserver provision``. One account per callback in flight: a callback
holds its account's whole balance (its maximum duration priced), so a second one on the same
account would be refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from cbserver.resources import checkout_dir

RATING_ENTRY = "[[product.rating_list]]"


def demo_file() -> Path:
    """The demo's catalog in the checkout (``demo/demo.toml``)."""
    return checkout_dir() / "demo" / "demo.toml"


def with_rating_for(text: str, nodes: Iterable[str]) -> str:
    """``text`` (a catalog) with every ``[[product.rating_list]]`` entry of one of ``nodes``
    copied for each of the others that the catalog does not name at all.

    A product's rating list is per node name (the manual's "Node"); the demo's has entries
    for ``node1`` only, and a callback on a node with no entry is refused ``forbidden``
    ("callback is not available for this account"). Every node of ``nodes`` gets the same ones.
    """
    nodes = tuple(nodes)
    out: list[str] = []
    for chunk in text.split(RATING_ENTRY):
        if not out:
            out.append(chunk)
            continue
        body, sep, rest = chunk.partition("\n\n")
        out.append(RATING_ENTRY + body + sep)
        named = [ln.split("=", 1)[1].strip().strip('"') for ln in body.splitlines()
                 if ln.strip().startswith("node ")]
        if named and named[0] in nodes:
            for node in nodes:
                if node != named[0] and f'node = "{node}"' not in text:
                    out.append(RATING_ENTRY + body.replace(f'node = "{named[0]}"', f'node = "{node}"')
                               + "\n\n")
        out[-1] += rest
    return "".join(out)


def demo_catalog(folder: Path, accounts: Iterable[str], password: str,
                 edit: Callable[[str], str] | None = None, *, balance: str = "20",
                 nodes: Iterable[str] = ()) -> Path:
    """The demo catalog, changed by ``edit(text)`` if given, with its rating lists copied for
    every node of ``nodes`` (``with_rating_for``), plus one active debit account per name in
    ``accounts`` with ``balance`` and ``password``; written to ``folder/catalog.toml``, whose
    path is returned."""
    text = demo_file().read_text()
    if edit is not None:
        text = edit(text)
    text = with_rating_for(text, nodes)
    for account in accounts:
        text += (f'\n[[account]]\nid = "{account}"\ncustomer = "Retail Callback"\n'
                 f'product = "Callback Services"\naccount_type = "debit"\n'
                 f'opening_balance = "{balance}"\nstatus = "active"\npassword = "{password}"\n')
    path = Path(folder) / "catalog.toml"
    path.write_text(text)
    return path
