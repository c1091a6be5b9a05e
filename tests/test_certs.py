"""Ordering SCM's chain (certs.build_chain): small units with the lab's PKI, no servers."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509.oid import NameOID

from connector import certs
from lab import pki


def test_a_chain_that_stops_short_of_the_root_is_completed_from_the_firewall() -> None:
    root = pki.make_root("Test Root", pki.generate_key("EC", 256), "Test")
    issuing = pki.make_intermediate("Test Issuing CA", pki.generate_key("EC", 256), root, "Test")
    key = pki.generate_key("EC", 256)
    now = pki.utcnow()
    leaf = pki.issue_leaf(issuing, key.public_key(),
                          x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")]),
                          ["www.example.com"], now - dt.timedelta(hours=1),
                          now + dt.timedelta(days=90))
    # SCM sent leaf and intermediate; the root is only on the firewall (an anchor).
    chain = certs.build_chain([leaf, issuing.cert], certs.spki(key.public_key()),
                              anchors=[root.cert])
    assert chain.leaf == leaf and chain.intermediates == [issuing.cert]
    assert chain.root == root.cert
    certs.verify_issued(chain, certs.spki(key.public_key()), ["www.example.com"])
