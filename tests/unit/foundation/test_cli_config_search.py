"""Where ``cbserver`` commands find their configuration without ``--config`` (issue 15), and
what ``cbserver --help`` says about starting the server."""

from __future__ import annotations

import argparse

import pytest

from cbserver import cli
from cbserver.cli import CommandError
from cbserver.commands import db


@pytest.fixture
def system_file(tmp_path, monkeypatch):
    """/etc/cbserver/cbserver.toml, moved to a folder of the test's own (absent at first)."""
    path = tmp_path / "etc" / "cbserver.toml"
    monkeypatch.setattr(db, "SYSTEM_CONFIG", str(path))
    monkeypatch.delenv("CBSERVER_CONFIG", raising=False)
    return path


def test_the_environment_comes_before_the_system_file(system_file, tmp_path):
    system_file.parent.mkdir()
    system_file.write_text("")
    mine = tmp_path / "mine.toml"
    mine.write_text("")
    assert db.find_config({"CBSERVER_CONFIG": str(mine)}) == str(mine)
    assert db.find_config({}) == str(system_file)


def test_a_variable_naming_no_file_is_an_error_not_a_fallback(system_file, tmp_path):
    system_file.parent.mkdir()
    system_file.write_text("")
    with pytest.raises(CommandError, match=r"CBSERVER_CONFIG=.*nope.toml names no file"):
        db.find_config({"CBSERVER_CONFIG": str(tmp_path / "nope.toml")})


def test_nothing_found_names_the_three_places(system_file):
    with pytest.raises(CommandError) as err:
        db.find_config({})
    text = str(err.value)
    assert "--config" in text and "CBSERVER_CONFIG" in text and str(system_file) in text


def test_dsn_given_means_no_configuration_is_looked_for(system_file):
    args = argparse.Namespace(dsn="host=/x dbname=y", config=None)
    assert db.config_from_args(args) is None
    assert db.dsn_from_args(args) == "host=/x dbname=y"


def test_found_file_is_remembered_and_read(system_file, tmp_path, monkeypatch):
    from tests.support.world import config_text

    cfg = tmp_path / "env.toml"
    cfg.write_text(config_text("host=/from-env dbname=z", tmp_path, 5060, 5070, 8901, 30000))
    monkeypatch.setenv("CBSERVER_CONFIG", str(cfg))
    args = argparse.Namespace(dsn=None, config=None)
    assert db.dsn_from_args(args) == "host=/from-env dbname=z"
    assert args.config == str(cfg)


def test_command_without_any_configuration_fails_in_one_line(system_file, capsys):
    assert cli.main(["db", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cbserver db: no configuration found") and err.count("\n") == 1


def test_help_says_how_the_server_is_started(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "twistd -n --pidfile= cbserver --config /etc/cbserver/cbserver.toml" in out
    assert "CBSERVER_CONFIG" in out and "cbserver@.service" in out
