"""Tables of customer verification (issue 15), created next to the service's own (`store.py`).

identities          one identity record per customer, as declared or corrected
evidence            what a reviewer checked (method, document reference or its SHA-256), until when
customer_levels     the level last derived, so a drop (expiry) is noticed, audited and notified
domain_validations  ACME-style challenges per site: token, method, state, validity
rosters             every signed site roster published (the hosts allowed to go live)
roster_deliveries   which edge took which roster, and the last error of one that did not
disclosures         court orders and 512(h) subpoenas naming a site, and what was disclosed
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
  customer_id INTEGER PRIMARY KEY REFERENCES customers(id), legal_name TEXT NOT NULL,
  address TEXT NOT NULL, country TEXT NOT NULL, registration_number TEXT,
  contact_email TEXT NOT NULL, contact_phone TEXT, declared_at REAL NOT NULL,
  updated_at REAL NOT NULL, updated_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evidence (
  id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
  method TEXT NOT NULL, document_ref TEXT, document_sha256 TEXT,
  reviewer_id INTEGER NOT NULL REFERENCES accounts(id), verified_at REAL NOT NULL,
  expires_at REAL NOT NULL, revoked_at REAL, lapsed_at REAL, reminded_at REAL);
CREATE INDEX IF NOT EXISTS evidence_customer ON evidence(customer_id);
CREATE TABLE IF NOT EXISTS customer_levels (
  customer_id INTEGER PRIMARY KEY REFERENCES customers(id), level TEXT NOT NULL,
  since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS domain_validations (
  id INTEGER PRIMARY KEY, host TEXT NOT NULL REFERENCES sites(host), method TEXT NOT NULL,
  token TEXT NOT NULL UNIQUE, key_authorization TEXT NOT NULL, created_at REAL NOT NULL,
  token_expires_at REAL NOT NULL, state TEXT NOT NULL, requested_by TEXT NOT NULL,
  checked_at REAL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
  validated_at REAL, expires_at REAL, lapsed_at REAL, reminded_at REAL);
CREATE INDEX IF NOT EXISTS dcv_host ON domain_validations(host, state);
CREATE TABLE IF NOT EXISTS rosters (
  sequence INTEGER PRIMARY KEY, hosts TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS roster_deliveries (
  sequence INTEGER NOT NULL, edge TEXT NOT NULL, delivered_at REAL, attempts INTEGER NOT NULL
  DEFAULT 0, last_error TEXT, PRIMARY KEY (sequence, edge));
CREATE TABLE IF NOT EXISTS disclosures (
  id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL REFERENCES cases(id), host TEXT NOT NULL,
  customer_id INTEGER, kind TEXT NOT NULL, issuer TEXT NOT NULL, reference TEXT NOT NULL,
  order_date TEXT NOT NULL, document_sha256 TEXT NOT NULL, requester TEXT NOT NULL,
  recorded_at REAL NOT NULL, recorded_by TEXT NOT NULL, disclosed_at REAL, disclosed_by TEXT,
  disclosed TEXT);
"""
