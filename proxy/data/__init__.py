"""Files the wheel ships for `edgeproxy init`: a copy of config/edgeproxy.example.toml
(tests/test_identity.py keeps the two identical)."""
