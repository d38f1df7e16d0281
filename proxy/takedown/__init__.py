"""The takedown service: from an infringement notice to proof that every edge enforced it.

elements      elements of notices (512(c)(3), DSA 16(2)) and counter-notices (512(g)(3))
states        case states and the transition function
cases         intake, duplicates, decisions, blocklist entries of a case
strikes       repeat-infringer policy (512(i)): strikes, warning, site suspension
restore       counter-notice, lawsuit hold, put-back in 10-14 business days (calendar)
redress       internal complaints (DSA Art. 20), reversal, withdrawal after action, unsuspension
schema        the shape of every body the API accepts; errors that name the field
rejected      junk kept byte for byte as rejected submissions, never a case
publications  what must reach each edge, and each edge's acknowledgement
publisher     delivery to edge admin APIs (and a signed file drop), retries with backoff
audit         the append-only hash-chained event log, and its verification
views         case record, overdue list, DSA Art. 17 statement of reasons
reports       transparency report (JSON, CSV, Markdown, PNG)
casefile      `takedown cases` (triage table) and `takedown case` (a timeline as Markdown)
store         SQLite (WAL, synchronous=FULL) on one writer thread with group commit
service, api  the service object and its aiohttp HTTP API; cli: `edgeproxy takedown …`
customers     identity records, evidence, derived verification levels, expiry (kyc_schema)
dcv           domain-control validation of sites (http-01 through an edge, dns-01)
roster        the signed site roster the edges' go-live gate enforces (proxy/gate.py)
disclosure    court orders and 512(h) subpoenas as cases; account_ops: disable, rotate key
kyc, kyc_api  the service's verification coroutines and their routes; kyc_cli its commands
"""
