"""`keys.CANONICALISER_VERSION` must change whenever a key an entry value gets changes: a node
uses a signer's shipped table (proxy/blocklist/shipped.py) only when both sides name the same
version, so a silent rule change would let a node map keys its own requests never meet.

The sample is a fixed set of tricky values (one or more per rule in blocklists/FORMAT.md); its
keys are digested and the digest is pinned to the version. A rule change moves the digest: bump
`CANONICALISER_VERSION` and record the new digest beside it here."""

import hashlib

import msgspec

from proxy.blocklist.keys import CANONICALISER_VERSION
from proxy.blocklist.model import Entry, EntryType, compile_entry

SAMPLE: list[tuple[EntryType, str]] = [
    (EntryType.URL, "http://example.com/manga/one"),
    (EntryType.URL, "HTTPS://EXAMPLE.com.:8080/MANGA/One/"),
    (EntryType.URL, "http://example.com/%6Danga/%256Fne"),
    (EntryType.URL, "http://example.com/manga%2Fone"),
    (EntryType.URL, "http://example.com/m%u0061nga/one"),
    (EntryType.URL, "http://example.com/manga%C0%AFone"),
    (EntryType.URL, "http://example.com/manga/one%23frag"),
    (EntryType.URL, "http://example.com/watch%3Fv=42"),
    (EntryType.URL, "http://example.com/\\manga\\\\one"),
    (EntryType.URL, "http://example.com//manga;jsessionid=1/one;v=2"),
    (EntryType.URL, "http://example.com/x/../manga/./one"),
    (EntryType.URL, "http://example.com/x/%2e%2e/manga/one"),
    (EntryType.URL, "http://example.com/x/..;/manga/one"),
    (EntryType.URL, "http://example.com/cafe%CC%81"),
    (EntryType.URL, "http://example.com/\uff0f\uff4d\uff41\uff4e\uff47\uff41"),
    (EntryType.URL, "http://example.com/manga/one.%20::$DATA"),
    (EntryType.URL, "http://example.com/watch?v=42&list=7"),
    (EntryType.URL, "http://example.com/watch?b=2;a=1+x&a=%31"),
    (EntryType.URL, "http://example.com/watch?next=%252F&v=4%32"),
    (EntryType.URL, "http://b\u00fccher.example/a"),
    (EntryType.URL, "http://BU\u0308CHER.example/a"),
    (EntryType.URL, "http://2130706433/a"),
    (EntryType.URL, "http://0x7f.1/a"),
    (EntryType.URL, "http://[0:0::1]:8443/a"),
    (EntryType.URL, "http://example\u3002com/a"),
    (EntryType.PREFIX, "http://example.com/manga/"),
    (EntryType.PREFIX, "https://Example.COM/Manga"),
    (EntryType.PREFIX, "http://example.com/"),
    (EntryType.HOST, "Pirate.Example."),
    (EntryType.HOST, "xn--bcher-kva.example"),
    (EntryType.HOST, "b\u00fccher.example"),
    (EntryType.HOST, "127.1"),
    (EntryType.HOST, "[::FFFF:127.0.0.1]"),
    (EntryType.HOST, "localhost"),
    (EntryType.SHA256, "08B81F7D" + "0" * 56),
]

# CANONICALISER_VERSION -> the digest of SAMPLE's keys under it.
DIGESTS = {
    1: "9f894582b61c87c3cf27ff21589442e37f726d56c3c5fbc63e04032b0868ba57",
}


def sample_digest() -> str:
    keys = []
    for n, (etype, value) in enumerate(SAMPLE):
        etype_, key, query = compile_entry(Entry(f"s{n}", etype, value))
        keys.append([str(etype_), key.hex() if isinstance(key, bytes) else key, query])
    return hashlib.sha256(msgspec.json.encode(keys)).hexdigest()


def test_keys_of_the_sample_are_those_of_the_version() -> None:
    assert DIGESTS.get(CANONICALISER_VERSION) == sample_digest(), (
        "the keys of tricky entry values changed: bump keys.CANONICALISER_VERSION and record "
        f"{sample_digest()} for it in DIGESTS"
    )
