"""Config loading: the example is valid, and every kind of mistake names its key."""

from pathlib import Path

import pytest

from cbserver.config import ConfigError, example_path, load_config, parse_config

MINIMAL = """
[database]
dsn = "dbname=cbserver"
[sip]
public_address = "127.0.0.1"
[sip.trunk]
address = "127.0.0.1:5070"
from_domain = "trunk.test"
[rtp]
address = "127.0.0.1"
[[application]]
name = "Web callback"
callback_page_address = "https://127.0.0.1:8901/"
"""


def _with(extra: str = "", replace: tuple[str, str] | None = None) -> str:
    text = MINIMAL
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    return text + extra


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    return info.value


def test_shipped_example_is_valid():
    cfg = load_config(example_path())
    assert cfg.web.endpoint == "ssl:8901"
    assert cfg.application[0].access_code == "WEBCALLBACK"
    assert cfg.application[0].url_path == "/web-callback"
    assert cfg.sip.trunk.address == "127.0.0.1:5070"


def test_minimal_config_takes_documented_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.server.node == "node1"
    assert cfg.rtp.ports == "20000-29999"
    assert cfg.sip.t1 == 0.5 and cfg.sip.t2 == 4.0 and cfg.sip.t4 == 5.0
    assert cfg.application[0].hosted_allowed_clients == ()
    assert cfg.application[0].access_code == "WEBCALLBACK"


def test_config_is_frozen():
    cfg = parse_config(MINIMAL)
    with pytest.raises(AttributeError):
        cfg.database.dsn = "x"  # type: ignore[misc]


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml does not exist" in str(info.value)
    assert "cbserver config example" in str(info.value)


def test_file_that_is_not_utf8(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xff\xfe[database]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_directory_instead_of_file_is_unreadable(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)


def test_invalid_toml_reports_line():
    e = _error(MINIMAL + "\n[sip\n")
    assert "invalid TOML" in str(e) and "line" in str(e)
    assert str(e).startswith("test.toml: ")


def test_unknown_key_suggests_nearest():
    e = _error(_with(replace=("dsn =", "dns =")))
    assert e.path == "database.dns"
    assert "did you mean 'dsn'" in str(e)


def test_unknown_key_in_application_array_names_index():
    e = _error(_with('[[application]]\nname = "b"\ncallback_page_address = "https://cb.example.net/x"\n'
                     'acess_code = "X"\n'))
    assert e.path == "application[1].acess_code"
    assert "did you mean 'access_code'" in str(e)


def test_unknown_table():
    e = _error(_with("[databse]\ndsn = 'x'\n"))
    assert e.path == "databse" and "did you mean 'database'" in str(e)


def test_wrong_type_names_key_and_expectation():
    e = _error(_with(replace=('[rtp]\naddress = "127.0.0.1"', '[rtp]\naddress = "127.0.0.1"\n'
                                                              'inactivity_timeout = "soon"')))
    assert e.path == "rtp.inactivity_timeout"
    assert "expected a number" in str(e)


def test_boolean_is_not_an_integer():
    e = _error(_with(replace=('dsn = "dbname=cbserver"', 'dsn = "dbname=cbserver"\npool_size = true')))
    assert e.path == "database.pool_size" and "expected an integer" in str(e)


def test_out_of_range_port():
    e = _error(_with(replace=('address = "127.0.0.1:5070"', 'address = "127.0.0.1:70000"')))
    assert e.path == "sip.trunk.address"
    assert "out of range" in str(e)


def test_listen_needs_host_and_port():
    e = _error(_with(replace=('public_address = "127.0.0.1"',
                              'public_address = "127.0.0.1"\nlisten = "5060"')))
    assert e.path == "sip.listen" and "host:port" in str(e)


def test_bad_port_range():
    e = _error(_with(replace=('[rtp]\naddress = "127.0.0.1"',
                              '[rtp]\naddress = "127.0.0.1"\nports = "30000-20000"')))
    assert e.path == "rtp.ports"


def test_required_key_missing():
    e = _error(_with(replace=('dsn = "dbname=cbserver"\n', "")))
    assert e.path == "database.dsn" and "required" in str(e)


def test_no_application_is_allowed_the_catalog_may_hold_them_all():
    # Issue 15: voice applications are catalog objects; a node's config may list none.
    text = MINIMAL.split("[[application]]")[0]
    assert parse_config(text).application == ()


def test_bad_endpoint_kind():
    e = _error(_with("[web]\nendpoint = 'https:8901'\n"))
    assert e.path == "web.endpoint" and "unknown kind 'https'" in str(e)


def test_short_admin_token():
    e = _error(_with("[web]\nadmin_token = 'short'\n"))
    assert e.path == "web.admin_token"


def test_password_and_password_file_conflict():
    e = _error(_with(replace=('from_domain = "trunk.test"',
                              'from_domain = "trunk.test"\npassword = "a"\npassword_file = "b"')))
    assert e.path == "sip.trunk.password_file"


def test_password_file_is_read_relative_to_config(tmp_path):
    (tmp_path / "trunk.secret").write_text("s3cret\n")
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(_with(replace=('from_domain = "trunk.test"',
                                       'from_domain = "trunk.test"\npassword_file = "trunk.secret"')))
    assert load_config(cfg_path).sip.trunk.password == "s3cret"


def test_missing_password_file_names_key(tmp_path):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(_with(replace=('from_domain = "trunk.test"',
                                       'from_domain = "trunk.test"\npassword_file = "gone"')))
    with pytest.raises(ConfigError) as info:
        load_config(cfg_path)
    assert info.value.path == "sip.trunk.password_file"


def test_hosted_needs_internal_account():
    e = _error(_with("hosted_allowed_clients = ['10.0.0.0/8']\n"))
    assert e.path == "application[0].internal_account"


def test_hosted_client_must_be_network_or_token():
    e = _error(_with("internal_account = 'cbi'\nhosted_allowed_clients = ['everyone']\n"))
    assert e.path == "application[0].hosted_allowed_clients"


def test_bad_access_code():
    e = _error(_with("access_code = 'web callback'\n"))
    assert e.path == "application[0].access_code"
    assert _error(_with("access_code = ''\n")).path == "application[0].access_code"


def test_any_access_code_a_rating_entry_can_carry_can_be_selected():
    # The catalog accepts [A-Za-z0-9_.-]{0,64} for an entry's code; an instance can name any
    # non-empty one of those.
    code = "Web.Callback-2_" + "x" * 49
    assert parse_config(_with(f"access_code = '{code}'\n")).application[0].access_code == code


@pytest.mark.parametrize("address", ["x", "cb.example.net/web-callback", "ftp://cb.example.net/",
                                     "https:///web-callback"])
def test_callback_page_address_must_be_an_absolute_http_url(address):
    e = _error(_with(replace=('callback_page_address = "https://127.0.0.1:8901/"',
                              f'callback_page_address = "{address}"')))
    assert e.path == "application[0].callback_page_address"
    assert "absolute address" in str(e)


def test_a_page_address_that_does_not_lead_to_the_page_is_named():
    from cbserver.web.hosts import page_address_mismatch

    def mismatch(address, extra=""):
        return page_address_mismatch(parse_config(_with(extra, replace=(
            'callback_page_address = "https://127.0.0.1:8901/"',
            f'callback_page_address = "{address}"'))).application[0])

    assert mismatch("https://cb.example.net:8901/web-callback") is None
    assert mismatch("https://cb.example.net/web-callback/") is None
    why = mismatch("https://cb.example.net:8901/")
    assert "has path '/'" in why and "served at '/web-callback'" in why
    # A host the instance lists is served at the root, a "*." entry included.
    assert mismatch("https://cb.example.net/", 'hosts = ["cb.example.net"]\n') is None
    assert mismatch("https://cb.example.net:8901/", 'hosts = ["*.example.net"]\n') is None
    assert mismatch("https://example.net/", 'hosts = ["*.example.net"]\n') is not None
    assert mismatch("https://cb.example.net/other", 'path = "other"\n') is None


def test_bad_second_number():
    e = _error(_with("second_number = 'helpdesk'\n"))
    assert e.path == "application[0].second_number"


def test_bad_translation_rule_is_refused_at_load():
    e = _error(_with("account_id_translation_rule = 's/^/cb/e'\n"))
    assert e.path == "application[0].account_id_translation_rule"


def test_good_translation_rule_is_accepted():
    cfg = parse_config(_with("account_id_translation_rule = 's/^/cb/'\n"))
    assert cfg.application[0].account_id_translation_rule == "s/^/cb/"


def test_duplicate_application_paths():
    e = _error(_with('[[application]]\nname = "Web callback"\ncallback_page_address = "https://cb.example.net/x"\n'))
    assert e.path == "application[1].path"


def test_hosts_are_lower_cased_without_trailing_dot():
    cfg = parse_config(_with('hosts = ["CB.Example.NET.", "*.Brand.example.org", "10.1.2.3"]\n'))
    assert cfg.application[0].hosts == ("cb.example.net", "*.brand.example.org", "10.1.2.3")
    assert parse_config(MINIMAL).application[0].hosts == ()


@pytest.mark.parametrize("bad", ["cb.example.net:8901", "https://cb.example.net", "cb_example.net",
                                 "-cb.example.net", "cb..example.net", "*.", "a.*.example.net",
                                 "", "x" * 64 + ".example.net"])
def test_bad_host_names_the_key(bad):
    e = _error(_with(f'hosts = ["ok.example.net", "{bad}"]\n'))
    assert e.path == "application[0].hosts" and repr(bad) in str(e)


def test_hosts_must_be_a_list_of_strings():
    e = _error(_with('hosts = "cb.example.net"\n'))
    assert e.path == "application[0].hosts" and "list" in str(e)


def test_host_listed_twice_by_one_instance():
    e = _error(_with('hosts = ["cb.example.net", "CB.example.net"]\n'))
    assert e.path == "application[0].hosts" and "listed twice" in str(e)


def test_duplicate_host_across_instances_names_both():
    e = _error(_with('hosts = ["cb.example.net"]\n[[application]]\nname = "Other"\n'
                     'callback_page_address = "https://cb.example.net/x"\n'
                     'hosts = ["cb.example.org", "Cb.Example.Net"]\n'))
    assert e.path == "application[1].hosts"
    assert "'cb.example.net' is already used by application[0]" in str(e)


def test_metrics_are_for_loopback_unless_configured():
    assert parse_config(MINIMAL).web.metrics_allowed_clients == ("127.0.0.0/8", "::1/128")
    cfg = parse_config(_with("[web]\nmetrics_allowed_clients = ['10.2.0.0/16', '192.0.2.9']\n"))
    assert cfg.web.metrics_allowed_clients == ("10.2.0.0/16", "192.0.2.9")
    assert parse_config(_with("[web]\nmetrics_allowed_clients = []\n")).web.metrics_allowed_clients == ()


def test_bad_metrics_network_names_the_key():
    e = _error(_with("[web]\nmetrics_allowed_clients = ['prometheus.internal']\n"))
    assert e.path == "web.metrics_allowed_clients" and "IP network" in str(e)


def test_shutdown_grace_must_be_positive():
    e = _error(_with("[server]\nshutdown_grace = 0\n"))
    assert e.path == "server.shutdown_grace" and "positive" in str(e)


def test_example_documents_every_key():
    """Every key of the schema appears in the shipped example file."""
    from cbserver.config import Config
    from cbserver.configschema import describe

    text = Path(example_path()).read_text()
    for key, _type, _default, _doc in describe(Config):
        leaf = key.rsplit(".", 1)[-1]
        assert f"{leaf} =" in text, f"{key} is not documented in the example"


def test_readme_documents_every_key():
    """The README's configuration reference names every key of the schema."""
    from cbserver.config import Config
    from cbserver.configschema import describe
    from cbserver.resources import checkout_dir

    readme = (checkout_dir() / "README.md").read_text()
    for key, _type, _default, _doc in describe(Config):
        assert f"`{key}`" in readme, f"{key} missing from the README"


def test_notifications_are_off_by_default_and_each_mistake_names_its_key(tmp_path):
    assert parse_config(MINIMAL).notifications.smtp == ""
    table = "[notifications]\n"
    assert _error(MINIMAL + table + "smtp = 'mail relay'\n").path == "notifications.smtp"
    assert _error(MINIMAL + table + "sender = 'cbserver'\n").path == "notifications.sender"
    assert _error(MINIMAL + table + "smtp = 'relay'\ngenerator_recipients = ['ops@x', 'Ops <o@x>']\n"
                  ).path == "notifications.generator_recipients"
    # Recipients with nowhere to send them, and a password sent in clear, are refused.
    assert _error(MINIMAL + table + "generator_recipients = ['ops@example.net']\n").path == \
        "notifications.generator_recipients"
    e = _error(MINIMAL + table + "smtp = 'relay'\nsmtp_username = 'u'\nsmtp_password = 'p'\n")
    assert e.path == "notifications.starttls" and "TLS" in e.problem
    secret = tmp_path / "smtp.secret"
    secret.write_text("s3cret\n")
    cfg = parse_config(MINIMAL + table + "smtp = 'relay.example.net'\nstarttls = true\n"
                       "smtp_username = 'u'\nsmtp_password_file = 'smtp.secret'\n", base=tmp_path)
    assert (cfg.notifications.smtp, cfg.notifications.smtp_password) == ("relay.example.net", "s3cret")


def test_second_number_is_normalised_as_the_page_does():
    # Issue 15: the page accepts "+1 800 555-0100", so the config does too, stored as digits.
    from cbserver.web.api import normalise_number  # noqa: PLC0415

    for typed in ("+1 800 555-0100", "(1) 800.555.0100", "+18005550100", "1/800/5550100"):
        cfg = parse_config(_with(f"second_number = '{typed}'\n"))
        assert cfg.application[0].second_number == "18005550100" == normalise_number(typed)
    for bad in ("12", "+1 800 CALL-NOW", "1" * 21):
        e = _error(_with(f"second_number = '{bad}'\n"))
        assert e.path == "application[0].second_number" and "3 to 20 digits" in e.problem


def test_path_must_be_url_safe():
    for bad in ("<x>", "a b", "a/../b", "call?me"):
        assert _error(_with(f"path = '{bad}'\n")).path == "application[0].path"
    assert parse_config(_with("path = '/cb/v2.1_x~y'\n")).application[0].url_path == "/cb/v2.1_x~y"


@pytest.mark.parametrize(("node", "says"), [("*", "any node"), ("", "1-100 characters"),
                                            (" edge1", "surrounding spaces"), ("x" * 101, "1-100")])
def test_node_name_is_not_the_any_node_mark_nor_blank(node, says):
    e = _error('[server]\nnode = "' + node + '"\n' + MINIMAL)
    assert e.path == "server.node" and says in str(e)


def test_recovery_and_billing_settings_default_and_override():
    cfg = parse_config(MINIMAL)
    assert (cfg.recovery.stale_after, cfg.recovery.interval, cfg.billing.cut_margin) == (15, 5.0, 2.0)
    cfg = parse_config(_with("\n[recovery]\nstale_after = 30\ninterval = 2.5\n[billing]\ncut_margin = 3.5\n"))
    assert (cfg.recovery.stale_after, cfg.recovery.interval, cfg.billing.cut_margin) == (30, 2.5, 3.5)


@pytest.mark.parametrize("extra, key, words", [
    ("[recovery]\nstale_after = 5", "recovery.stale_after", "at least 10"),
    ("[recovery]\nstale_after = 12.5", "recovery.stale_after", "integer"),
    ("[recovery]\ninterval = 0", "recovery.interval", "positive"),
    ("[recovery]\nstale_after = 20\ninterval = 30", "recovery.interval", "at most stale_after"),
    ("[billing]\ncut_margin = -1", "billing.cut_margin", "0.5-30"),
    ("[billing]\ncut_margin = 0.1", "billing.cut_margin", "0.5-30"),
    ("[billing]\ncut_margin = 90", "billing.cut_margin", "0.5-30"),
    ("[billing]\ncut_margni = 1", "billing.cut_margni", "cut_margin"),
])
def test_bad_recovery_and_billing_settings_are_named(extra, key, words):
    e = _error(_with("\n" + extra + "\n"))
    assert e.path == key and words in str(e), str(e)
