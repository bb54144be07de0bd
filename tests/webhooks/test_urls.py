"""SSRF: what may be registered and called."""

import pytest

from chatsvc.webhooks import urls


@pytest.fixture
def strict(settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = False


@pytest.mark.parametrize(
    "url, why",
    [
        ("https://169.254.169.254/latest/meta-data/", "non-public address (169.254.169.254)"),
        ("https://10.0.0.1/hook", "non-public address (10.0.0.1)"),
        ("https://192.168.1.20/hook", "non-public"),
        ("https://100.64.0.1/hook", "non-public"),
        ("https://localhost/hook", "non-public address"),
        ("https://127.0.0.1/hook", "non-public address (127.0.0.1)"),
        ("https://[::1]/hook", "non-public address (::1)"),
        ("https://[::ffff:10.0.0.1]/hook", "non-public"),
        ("https://[fe80::1]/hook", "non-public"),
        ("https://224.0.0.1/hook", "non-public"),
        ("https://0.0.0.0/hook", "non-public"),
        ("http://93.184.215.14/hook", "must be an https URL"),
        ("ftp://93.184.215.14/hook", "must be an https URL"),
        ("https://93.184.215.14:8443/hook", "port 443"),
        ("https://user:pw@93.184.215.14/hook", "credentials"),
        ("https:///hook", "must name a host"),
        ("https://93.184.215.14/ho ok", "spaces"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_refused(strict, url, why):
    with pytest.raises(urls.UrlRefused, match=why.replace("(", r"\(").replace(")", r"\)")):
        urls.check(url)


def test_a_public_https_address_is_accepted(strict):
    target = urls.resolve("https://93.184.215.14/chatsvc/hook?x=1")
    assert (target.scheme, target.host, target.port, target.address) == (
        "https",
        "93.184.215.14",
        443,
        "93.184.215.14",
    )
    assert target.path == "/chatsvc/hook?x=1"


def test_allow_private_lets_loopback_http_through(settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = True
    target = urls.resolve("http://127.0.0.1:8123/hook")
    assert (target.scheme, target.port, target.address) == ("http", 8123, "127.0.0.1")
