"""The demo catalog the node tests and the soak provision (``cbserver.devtools.democatalog``):
the demo's own file, edited, its rating lists copied per node, the accounts appended, read
back by the provisioning loader."""

from __future__ import annotations

from cbserver.billing.provision import load
from cbserver.devtools.democatalog import demo_catalog, demo_file, with_rating_for


def _entries(doc, node):
    """(product, access code, tariff, overdraft) of each rating-list entry of ``node``."""
    return sorted((p["name"], e["access_code"], e["tariff"], e["overdraft_protection"])
                  for p in doc["product"] for e in p.get("rating_list", []) if e["node"] == node)


def test_the_accounts_are_added_to_the_demo_catalog_unchanged_otherwise(tmp_path):
    path = demo_catalog(tmp_path, ["acc1", "acc2"], "pw-1", balance="0.60")
    assert path == tmp_path / "catalog.toml"
    assert path.read_text().startswith(demo_file().read_text())
    demo, doc = load(demo_file()), load(path)
    added = doc["account"][len(demo.get("account", [])):]
    assert [(a["id"], a["opening_balance"], a["password"], a["account_type"], a["status"])
            for a in added] == [("acc1", "0.60", "pw-1", "debit", "active"),
                                ("acc2", "0.60", "pw-1", "debit", "active")]
    assert all(a["product"] == "Callback Services" for a in added)
    assert str(load(demo_catalog(tmp_path, ["x"], "p"))["account"][-1]["opening_balance"]) == "20"


def test_every_node_gets_the_rating_entries_of_the_one_the_demo_names(tmp_path):
    demo = load(demo_file())
    node1 = _entries(demo, "node1")
    assert node1 and not _entries(demo, "node2")
    doc = load(demo_catalog(tmp_path, [], "p", nodes=("node1", "node2", "node3")))
    assert _entries(doc, "node1") == _entries(doc, "node2") == _entries(doc, "node3") == node1
    # No nodes, or only the demo's own: the text as it was.
    text = demo_file().read_text()
    assert with_rating_for(text, ()) == with_rating_for(text, ("node1",)) == text
    # A node the catalog already names is left as it is.
    once = with_rating_for(text, ("node1", "node2"))
    assert with_rating_for(once, ("node1", "node2")) == once


def test_the_edit_applies_before_the_accounts(tmp_path):
    marker = "# edited by the test\n"
    path = demo_catalog(tmp_path, ["acc9"], "p", lambda text: marker + text)
    assert path.read_text().startswith(marker + demo_file().read_text())
    assert load(path)["account"][-1]["id"] == "acc9"
