"""``include``: a shared configuration file plus one file per node (cbserver.configfiles)."""

from __future__ import annotations

import pytest

from cbserver.config import ConfigError, load_config
from cbserver.configfiles import merge
from tests.support.world import config_text


def test_merge_lays_tables_key_by_key_and_replaces_arrays():
    base = {"server": {"node": "a", "state_dir": "/s"}, "application": [{"name": "x"}]}
    top = {"server": {"node": "b"}, "application": [{"name": "y"}]}
    assert merge(base, top) == {"server": {"node": "b", "state_dir": "/s"},
                                "application": [{"name": "y"}]}
    assert base["server"]["node"] == "a"  # not changed in place


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def shared(tmp_path):
    """A full configuration as the shared file."""
    return write(tmp_path / "cbserver.toml",
                 config_text("host=/db dbname=cbserver", tmp_path / "s", 5060, 5070, 8901, 30000))


def test_node_file_overrides_the_shared_file(tmp_path):
    shared(tmp_path)
    node = write(tmp_path / "nodes" / "2.toml", 'include = "../cbserver.toml"\n'
                 '[server]\nnode = "h-2"\nstate_dir = "/var/lib/cbserver/2"\n'
                 '[sip]\nlisten = "127.0.0.1:5061"\n[rtp]\nports = "21000-21999"\n')
    cfg = load_config(node)
    assert cfg.server.node == "h-2" and cfg.server.state_dir == "/var/lib/cbserver/2"
    assert cfg.sip.listen == "127.0.0.1:5061" and cfg.rtp.ports == "21000-21999"
    # Everything else comes from the shared file, the sibling keys of overridden tables too.
    assert cfg.sip.public_address == "127.0.0.1" and cfg.sip.no_answer_timeout == 3.0
    assert cfg.database.dsn == "host=/db dbname=cbserver"
    assert [a.name for a in cfg.application] == ["Web callback"]


def test_a_list_of_includes_is_read_in_order(tmp_path):
    shared(tmp_path)
    write(tmp_path / "site.toml", '[limits]\nper_client = 7\n[server]\nnode = "site"\n')
    node = write(tmp_path / "n.toml", 'include = ["cbserver.toml", "site.toml"]\n'
                 '[server]\nnode = "mine"\n')
    cfg = load_config(node)
    assert cfg.limits.per_client == 7 and cfg.server.node == "mine"


@pytest.mark.parametrize("files, problem", [
    ({"n.toml": 'include = "n.toml"\n'}, "is included by itself"),
    ({"n.toml": 'include = "m.toml"\n', "m.toml": 'include = "n.toml"\n'},
     "is included by itself"),
    ({"n.toml": 'include = "missing.toml"\n'}, "missing.toml does not exist"),
    ({"n.toml": "include = 3\n"}, "expected a file name or a list of file names"),
    ({"n.toml": 'include = "m.toml"\n', "m.toml": "[server\n"}, "invalid TOML"),
    ({"n.toml": 'include = "cbserver.toml"\n[server]\nnodes = "x"\n'}, "unknown key"),
])
def test_bad_includes_are_one_clear_error(tmp_path, files, problem):
    shared(tmp_path)
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=problem):
        load_config(tmp_path / "n.toml")
