"""The outbound URL guard: schemes, IP literals in every spelling, names resolving to
private addresses, the connection check, and the switch that allows private targets."""

import ipaddress
import socket

import pytest
import requests

from providers import urlguard
from providers.urlguard import UnsafeTarget, check_peer, check_url, guarded_session, parse_ip_literal

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1./hook",
    "http://2130706433/hook",  # decimal
    "http://0x7f000001/hook",  # hex
    "http://0X7F.0.0.1/hook",
    "http://0177.0.0.1/hook",  # octal
    "http://0177.0.0.01/hook",
    "http://127.1/hook",  # short forms
    "http://127.0.1/hook",
    "http://0x7f.1/hook",
    "http://[::1]/hook",
    "http://[0:0:0:0:0:0:0:1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "http://[::ffff:7f00:1]/hook",
    "http://[64:ff9b::127.0.0.1]/hook",  # NAT64
    "http://[2002:7f00:1::]/hook",  # 6to4
    "https://127.0.0.1:8443/hook",
    "http://user:secret@127.0.0.1/hook",
]

OTHER_NON_PUBLIC = [
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata, link-local
    "http://100.64.0.1/",  # shared address space
    "http://0.0.0.0/",
    "http://0/",
    "http://224.0.0.1/",  # multicast
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://192.0.2.10/",  # documentation
    "http://[fc00::1]/",  # unique local
    "http://[fe80::1%25eth0]/",  # link-local with a zone id
    "http://[fe80::1]/",
    "http://[ff02::1]/",  # multicast
    "http://[::]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
]


@pytest.fixture
def no_private(settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False


@pytest.fixture
def resolver(monkeypatch):
    """Names resolve to what the test says; anything else is an error (no DNS from tests)."""
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port, 0, 0) if ":" in address else (address, port),
            )
            for address in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_loopback_in_every_spelling_is_refused(no_private, url):
    with pytest.raises(UnsafeTarget, match="is not a public address"):
        check_url(url)


@pytest.mark.parametrize("url", OTHER_NON_PUBLIC)
def test_private_link_local_multicast_and_reserved_addresses_are_refused(no_private, url):
    with pytest.raises(UnsafeTarget, match="is not a public address"):
        check_url(url)


@pytest.mark.parametrize(
    "literal,address",
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.65535", "10.1.255.255"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1"),
        ("8.8.8.8", "8.8.8.8"),
        ("hooks.slack.com", None),
        ("1e100.net", None),
    ],
)
def test_ip_literals_are_read_as_http_clients_read_them(literal, address):
    parsed = parse_ip_literal(literal)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize("host", ["256.0.0.1", "1.2.3.4.5", "0x1g.0.0.1", "08.0.0.1", "1.2.16777216", "4294967296"])
def test_a_host_that_looks_numeric_but_is_no_address_is_refused(no_private, host):
    with pytest.raises(UnsafeTarget, match="is not a valid IPv4 address|is not an octal number"):
        check_url(f"http://{host}/")


@pytest.mark.parametrize(
    "url,message",
    [
        ("ftp://8.8.8.8/hook", "Only http and https URLs are allowed."),
        ("file:///etc/passwd", "Only http and https URLs are allowed."),
        ("gopher://hooks.slack.com/", "Only http and https URLs are allowed."),
        ("hooks.slack.com/services/x", "Only http and https URLs are allowed."),
        ("http:///services/x", "The URL has no host."),
        ("http://[::1/", "Not a valid URL: Invalid IPv6 URL."),
        ("http://8.8.8.8:99999/", "Not a valid URL: Port out of range 0-65535."),
    ],
)
def test_only_http_and_https_urls_with_a_host_pass(url, message, settings):
    # the allow switch does not lift these
    for allowed in (False, True):
        settings.BEACON_ALLOW_PRIVATE_TARGETS = allowed
        with pytest.raises(UnsafeTarget) as caught:
            check_url(url)
        assert caught.value.message == message


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "http://[2606:4700:4700::1111]/hook", "HTTPS://1.1.1.1"])
def test_public_literals_pass(no_private, url, resolver):
    assert check_url(url) is None


def test_a_name_resolving_only_to_public_addresses_passes(no_private, resolver):
    resolver["hooks.slack.com"] = ["3.120.1.1", "2a05:d018::1"]
    assert check_url("https://hooks.slack.com/services/T0/B0/x") is None


@pytest.mark.parametrize(
    "addresses,refused",
    [
        (["127.0.0.1"], "127.0.0.1"),
        (["3.120.1.1", "10.0.0.7"], "10.0.0.7"),  # any private answer is enough
        (["169.254.169.254"], "169.254.169.254"),
        (["::1"], "::1"),
        (["fe80::1%eth0"], "fe80::1"),
        (["::ffff:192.168.0.1"], "::ffff:c0a8:1"),
    ],
)
def test_a_name_resolving_to_a_private_address_is_refused(no_private, resolver, addresses, refused):
    resolver["hooks.example.com"] = addresses
    with pytest.raises(UnsafeTarget) as caught:
        check_url("https://hooks.example.com/hook")
    assert caught.value.message == f"hooks.example.com resolves to {refused}, which is not a public address."


def test_a_name_that_does_not_resolve_is_left_to_the_connection_check(no_private, resolver):
    assert check_url("https://nowhere.invalid/hook") is None


def test_the_allow_switch_lets_private_targets_through_without_resolving(settings, resolver):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    resolver["db.internal"] = ["10.0.0.5"]
    for url in [*LOOPBACK_SPELLINGS, *OTHER_NON_PUBLIC, "http://db.internal:5432/"]:
        assert check_url(url) is None, url


def test_the_setting_defaults_to_off():
    from config import settings as project_settings

    assert project_settings.BEACON_ALLOW_PRIVATE_TARGETS is False


# --- The connection check ------------------------------------------------------------------


def test_the_session_refuses_a_connection_to_a_private_peer(no_private, chat_server):
    # given: a URL that never went through check_url (a rebinding name would look the same)
    chat_server.reset()
    session = guarded_session()
    # when / then
    with pytest.raises(UnsafeTarget) as caught:
        session.post(chat_server.slack_url, json={"text": "hi"}, timeout=5)
    assert caught.value.message == "The connection reached 127.0.0.1, which is not a public address."
    assert chat_server.received() == []


def test_the_session_connects_to_a_private_peer_when_allowed(settings, chat_server):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    chat_server.reset()
    response = guarded_session().post(chat_server.slack_url, json={"text": "hi"}, timeout=5)
    assert (response.status_code, response.text) == (200, "ok")
    assert len(chat_server.received()) == 1


def test_the_session_ignores_proxies_from_the_environment(settings, chat_server, monkeypatch):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    chat_server.reset()
    response = guarded_session().post(chat_server.slack_url, json={"text": "hi"}, timeout=5)
    assert response.status_code == 200


@pytest.mark.parametrize("peer,refused", [("127.0.0.1", True), ("10.0.0.1", True), ("93.184.215.14", False)])
def test_check_peer_reads_the_connected_address(no_private, peer, refused):
    class FakeSocket:
        closed = False

        def getpeername(self):
            return (peer, 443)

        def close(self):
            self.closed = True

    sock = FakeSocket()
    if refused:
        with pytest.raises(UnsafeTarget):
            check_peer(sock)
    else:
        check_peer(sock)
    assert sock.closed is refused


def test_is_public_address_treats_embedded_ipv4_by_what_it_embeds():
    assert urlguard.is_public_address(ipaddress.ip_address("::ffff:8.8.8.8")) is True
    assert urlguard.is_public_address(ipaddress.ip_address("::ffff:10.0.0.1")) is False
    assert urlguard.is_public_address(ipaddress.ip_address("64:ff9b::a00:1")) is False
    assert urlguard.is_public_address(ipaddress.ip_address("2001:4860:4860::8888")) is True


def test_requests_without_the_guard_would_connect(settings, chat_server):
    """The control for the connection check: a plain session reaches the double."""
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    chat_server.reset()
    assert requests.post(chat_server.slack_url, json={}, timeout=5).status_code == 200
