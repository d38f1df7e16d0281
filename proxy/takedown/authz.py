"""Who may do what: one rule per API route, checked in one place (issue 14).

A rule names the roles that may always use the route (staff) and the relations to the case (or
notice) that let any other account use it: the complainant side (it filed a notice in the case)
or the affected customer (the case targets one of its sites). A route with no rule is refused
(deny by default), and `tests/takedown/test_authz.py` enumerates the app's router so a new route
without a rule fails there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from proxy.takedown.accounts import Account, Role

STAFF = frozenset({Role.OPERATOR, Role.ADMIN})
EVERYONE = frozenset(Role)


class Relation(StrEnum):
    SUBMITTER = "submitter"  # filed a notice in the case, or is the notice's author
    CUSTOMER = "customer"  # the case targets a site of the account's customer
    OWNER = "owner"  # the route's {customer} is the account's, or its {host} a site of it


class Refusal(StrEnum):
    """Why a request was refused; a refusal on an existing case is audited with it."""

    NO_RULE = "no-rule"
    ROLE = "role"
    NOT_A_PARTY = "not-a-party"


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[Role]  # may always
    related: frozenset[Relation] = frozenset()  # any role with one of these relations may
    public: bool = False  # no key needed at all

    def allows(self, account: Account, relations: frozenset[Relation]) -> bool:
        return account.role in self.roles or bool(self.related & relations)

    @property
    def needs_relations(self) -> bool:
        return bool(self.related)


# (method, route template) -> rule. Kept next to nothing else so it reads as the policy.
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(EVERYONE, public=True),
    # Counts only, no case content: scraped by Prometheus like an edge's admin /metrics.
    ("GET", "/metrics"): Rule(EVERYONE, public=True),
    ("POST", "/notices"): Rule(EVERYONE - {Role.CUSTOMER}),
    ("GET", "/notices/{notice}/raw"): Rule(STAFF, frozenset({Relation.SUBMITTER})),
    # The list itself is filtered to the account's own cases unless it is staff.
    ("GET", "/cases"): Rule(EVERYONE),
    ("GET", "/cases/{case}"): Rule(STAFF, frozenset({Relation.SUBMITTER, Relation.CUSTOMER})),
    ("GET", "/cases/{case}/statement"): Rule(
        STAFF, frozenset({Relation.SUBMITTER, Relation.CUSTOMER})
    ),
    ("POST", "/cases/{case}/decision"): Rule(STAFF),
    ("POST", "/cases/{case}/withdraw"): Rule(
        frozenset({Role.ADMIN}), frozenset({Relation.SUBMITTER})
    ),
    # 17 U.S.C. 512(g)(3): the subscriber whose material was removed, or staff acting for it.
    ("POST", "/cases/{case}/counter-notice"): Rule(STAFF, frozenset({Relation.CUSTOMER})),
    # 512(g)(2)(C): the complainant reports its action, or staff for it.
    ("POST", "/cases/{case}/lawsuit"): Rule(STAFF, frozenset({Relation.SUBMITTER})),
    # Undo (redress.py). Staff reverse and dismiss; the parties complain (DSA Art. 20: the
    # notifier and the affected recipient), staff need no complaint to reverse.
    ("POST", "/cases/{case}/reverse"): Rule(STAFF),
    ("POST", "/cases/{case}/complaint"): Rule(
        frozenset(), frozenset({Relation.SUBMITTER, Relation.CUSTOMER})
    ),
    ("POST", "/cases/{case}/complaint/dismiss"): Rule(STAFF),
    ("POST", "/sites/{host}/unsuspend"): Rule(STAFF),
    # Counts across every case, and what anyone sent that was refused: staff only.
    ("GET", "/reports"): Rule(STAFF),
    ("GET", "/rejected-submissions"): Rule(STAFF),
    ("GET", "/rejected-submissions/{submission}/raw"): Rule(STAFF),
}

ADMIN = frozenset({Role.ADMIN})
# Customer verification (issue 15, kyc_api.py): identity records are personal data, so only
# staff change them and only staff and the customer itself read them; a customer proves
# control of its own sites; accounts and keys are the admin's; a disclosure hands a
# customer's identity to a third party, so it is staff's act on a recorded order.
RULES.update(
    {
        ("GET", "/customers"): Rule(STAFF),
        ("GET", "/customers/{customer}"): Rule(STAFF, frozenset({Relation.OWNER})),
        ("PUT", "/customers/{customer}/identity"): Rule(STAFF),
        ("POST", "/customers/{customer}/evidence"): Rule(STAFF),
        ("POST", "/customers/{customer}/evidence/{evidence}/revoke"): Rule(STAFF),
        ("GET", "/sites"): Rule(STAFF),
        ("POST", "/sites"): Rule(ADMIN),
        ("GET", "/sites/{host}"): Rule(STAFF, frozenset({Relation.OWNER})),
        ("POST", "/sites/{host}/validations"): Rule(STAFF, frozenset({Relation.OWNER})),
        ("POST", "/sites/{host}/validations/{validation}/check"): Rule(
            STAFF, frozenset({Relation.OWNER})
        ),
        ("GET", "/accounts"): Rule(ADMIN),
        ("POST", "/accounts/{account}/disable"): Rule(ADMIN),
        ("POST", "/accounts/{account}/rotate-key"): Rule(ADMIN),
        ("POST", "/disclosures"): Rule(STAFF),
        ("GET", "/disclosures/{case}"): Rule(STAFF),
        ("POST", "/disclosures/{case}/disclose"): Rule(STAFF),
        ("POST", "/disclosures/{case}/reject"): Rule(STAFF),
        ("GET", "/roster"): Rule(STAFF),
    }
)


def rule_for(method: str, route: str) -> Rule | None:
    return RULES.get((method.upper(), route))


def case_relations(conn: sqlite3.Connection, case_id: int, account: Account) -> frozenset[Relation]:
    out: set[Relation] = set()
    if conn.execute(
        "SELECT 1 FROM notices WHERE case_id = ? AND account_id = ?", (case_id, account.id)
    ).fetchone():
        out.add(Relation.SUBMITTER)
    if (
        account.customer_id is not None
        and conn.execute(
            "SELECT 1 FROM targets t JOIN sites s ON s.host = t.host"
            " WHERE t.case_id = ? AND t.accepted = 1 AND s.customer_id = ?",
            (case_id, account.customer_id),
        ).fetchone()
    ):
        out.add(Relation.CUSTOMER)
    return frozenset(out)


def notice_relations(
    conn: sqlite3.Connection, notice_id: int, account: Account
) -> frozenset[Relation]:
    row = conn.execute("SELECT account_id FROM notices WHERE id = ?", (notice_id,)).fetchone()
    return frozenset({Relation.SUBMITTER}) if row and row[0] == account.id else frozenset()


def case_exists(conn: sqlite3.Connection, case_id: int) -> bool:
    return conn.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is not None
