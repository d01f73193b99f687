"""Digest auth against the RFC example vectors."""

import pytest

from cbserver.sip.auth import (
    AuthAttempts,
    AuthError,
    DigestClient,
    parse_challenge,
    pick_challenge,
)

# RFC 2617 section 3.5
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# RFC 7616 section 3.9.1
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def _rfc7616(alg):
    return (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def _params(value):
    from cbserver.sip.auth import _split_params

    assert value.startswith("Digest ")
    return _split_params(value[len("Digest ") :])


def test_rfc2617_example_response():
    ch = parse_challenge(RFC2617_CHALLENGE)
    client = DigestClient("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    name, value = client.authorization(ch, "GET", "/dir/index.html")
    assert name == "Authorization"
    p = _params(value)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["nc"] == "00000001"
    assert p["qop"] == "auth"
    assert p["cnonce"] == "0a4f113b"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize(
    "alg,expected",
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example_responses(alg, expected):
    ch = parse_challenge(_rfc7616(alg), proxy=True)
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    name, value = client.authorization(ch, "GET", "/dir/index.html")
    assert name == "Proxy-Authorization"
    assert _params(value)["response"] == expected
    assert _params(value)["algorithm"] == alg


def test_nonce_count_increments_per_nonce_and_restarts_for_new_nonce():
    ch = parse_challenge(RFC2617_CHALLENGE)
    client = DigestClient("u", "p", cnonce_factory=lambda: "c")
    ncs = [_params(client.authorization(ch, "INVITE", "sip:a@b")[1])["nc"] for _ in range(3)]
    assert ncs == ["00000001", "00000002", "00000003"]
    fresh = parse_challenge(RFC2617_CHALLENGE.replace("dcd98b", "aaaaaa"))
    assert _params(client.authorization(fresh, "INVITE", "sip:a@b")[1])["nc"] == "00000001"


def test_sess_variant_folds_nonce_and_cnonce_into_ha1():
    import hashlib

    ch = parse_challenge(_rfc7616("SHA-256-sess"))
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: "cn")
    p = _params(client.authorization(ch, "INVITE", "sip:x@y")[1])

    def h(s):
        return hashlib.sha256(s.encode()).hexdigest()

    ha1 = h(f"{h('Mufasa:http-auth@example.org:Circle of Life')}:{RFC7616_NONCE}:cn")
    ha2 = h("INVITE:sip:x@y")
    assert p["response"] == h(f"{ha1}:{RFC7616_NONCE}:00000001:cn:auth:{ha2}")
    assert p["algorithm"] == "SHA-256-sess"


def test_no_qop_uses_rfc2069_form():
    import hashlib

    ch = parse_challenge('Digest realm="r", nonce="n"')
    p = _params(DigestClient("u", "p").authorization(ch, "REGISTER", "sip:r")[1])
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    assert p["response"] == md5(f"{md5('u:r:p')}:n:{md5('REGISTER:sip:r')}")
    assert "nc" not in p and "qop" not in p


def test_pick_strongest_supported_challenge():
    offered = [
        'Digest realm="r", nonce="1", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="3", algorithm=UNKNOWN-HASH, qop="auth"',
        'Basic realm="r"',
    ]
    ch = pick_challenge(offered)
    assert ch.algorithm in ("SHA-256", "SHA-512-256")
    assert ch.nonce == "2"


def test_pick_rejects_when_nothing_usable():
    with pytest.raises(AuthError):
        pick_challenge(['Basic realm="x"', 'Digest realm="r", nonce="n", algorithm=FOO'])


def test_stale_challenge_allows_retry_but_plain_repeat_does_not():
    attempts = AuthAttempts()
    first = parse_challenge('Digest realm="r", nonce="1"')
    stale = parse_challenge('Digest realm="r", nonce="2", stale=true')
    again = parse_challenge('Digest realm="r", nonce="3"')
    assert attempts.should_retry(first)
    assert attempts.should_retry(stale)
    assert not attempts.should_retry(again)


def test_quoted_params_with_commas_and_escapes():
    ch = parse_challenge(r'Digest realm="a, \"b\"", nonce="n,1", stale=TRUE')
    assert ch.realm == 'a, "b"'
    assert ch.nonce == "n,1"
    assert ch.stale
