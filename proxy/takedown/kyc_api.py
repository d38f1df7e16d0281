"""HTTP routes of customer verification (registered on the service's app by `register`).

    GET  /customers                                     list with derived levels
    GET  /customers/{customer}                          identity, evidence, sites, accounts
    PUT  /customers/{customer}/identity                 record or correct the identity record
    POST /customers/{customer}/evidence                 {method, document_ref|document_sha256,
                                                        expires_at?}; the caller is the reviewer
    POST /customers/{customer}/evidence/{evidence}/revoke
    GET  /sites                                         every site: level, live on the edges
    POST /sites                                         {host, customer}: add or move a site
    GET  /sites/{host}                                  level, validations
    POST /sites/{host}/validations                      {method: http-01|dns-01}: a challenge
    POST /sites/{host}/validations/{validation}/check   fetch or resolve it now
    GET  /accounts                                      (admin)
    POST /accounts/{account}/disable                    (admin)
    POST /accounts/{account}/rotate-key                 (admin) the new key, shown once
    POST /disclosures                                   record a court order / 512(h) subpoena
    GET  /disclosures/{case}
    POST /disclosures/{case}/disclose                   returns the identity record disclosed
    POST /disclosures/{case}/reject                     {reason}
    GET  /roster                                        the newest site roster, per-edge delivery

Who may call each is in `authz.RULES` like every route; bad input answers 400 naming the
field, an unknown customer, site or account 404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.takedown.customers import Invalid
from proxy.takedown.http_io import ACCOUNT, SERVICE, _error, _json, _read_body
from proxy.takedown.kyc import Kyc
from proxy.takedown.states import Conflict, NotFound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await _read_body(request)
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise Invalid("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Invalid("body must be a JSON object")
    return body


def _int(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not text.isdigit():
        raise LookupError(f"no such {name} {text}")
    return int(text)


def _kyc(request: web.Request) -> Kyc:
    return request.app[SERVICE].kyc


def answered(fn: Callable[[web.Request, Kyc], Awaitable[Any]], status: int = 200) -> Handler:
    """Run `fn` and turn its result or the desk's mistake into a JSON answer."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return _json(await fn(request, _kyc(request)), status)
        except Invalid as exc:
            return _error(400, str(exc))
        except (LookupError, NotFound) as exc:
            return _error(404, str(exc) or "not found")
        except Conflict as exc:
            return _error(409, str(exc))
        except PermissionError as exc:
            return _error(403, str(exc))
        except ValueError as exc:  # e.g. a host that is not one
            return _error(400, str(exc))

    return handler


def _acct(request: web.Request) -> Any:
    return request[ACCOUNT]


async def _identity(r: web.Request, k: Kyc) -> Any:
    return await k.record_identity(_acct(r), r.match_info["customer"], await _body(r))


async def _evidence(r: web.Request, k: Kyc) -> Any:
    return await k.add_evidence(_acct(r), r.match_info["customer"], await _body(r))


async def _revoke(r: web.Request, k: Kyc) -> Any:
    return await k.revoke_evidence(_acct(r), r.match_info["customer"], _int(r, "evidence"))


async def _put_site(r: web.Request, k: Kyc) -> Any:
    body = await _body(r)
    host, customer = body.get("host"), body.get("customer")
    if not isinstance(host, str) or not host or not isinstance(customer, str) or not customer:
        raise Invalid('expected {"host": "…", "customer": "…"}')
    return await k.put_site(_acct(r), host, customer)


async def _start(r: web.Request, k: Kyc) -> Any:
    body = await _body(r)
    return await k.start_validation(_acct(r), r.match_info["host"], str(body.get("method", "")))


async def _check(r: web.Request, k: Kyc) -> Any:
    return await k.check_validation(_acct(r), r.match_info["host"], _int(r, "validation"))


async def _disable(r: web.Request, k: Kyc) -> Any:
    return await k.disable_account(_acct(r), _int(r, "account"))


async def _rotate(r: web.Request, k: Kyc) -> Any:
    return await k.rotate_key(_acct(r), _int(r, "account"))


async def _record_disclosure(r: web.Request, k: Kyc) -> Any:
    return await k.record_disclosure(_acct(r), await _body(r))


async def _get_disclosure(r: web.Request, k: Kyc) -> Any:
    found = await k.disclosure(_int(r, "case"))
    if found is None:
        raise LookupError("no such disclosure")
    return found


async def _disclose(r: web.Request, k: Kyc) -> Any:
    return await k.disclose(_acct(r), _int(r, "case"))


async def _reject(r: web.Request, k: Kyc) -> Any:
    reason = (await _body(r)).get("reason")
    if not isinstance(reason, str):
        raise Invalid('expected {"reason": "…"}')
    return await k.reject_disclosure(_acct(r), _int(r, "case"), reason)


def register(app: web.Application) -> None:
    add = app.router
    add.add_get("/customers", answered(lambda r, k: k.customers()))
    add.add_get(
        "/customers/{customer}", answered(lambda r, k: k.customer(r.match_info["customer"]))
    )
    add.add_put("/customers/{customer}/identity", answered(_identity))
    add.add_post("/customers/{customer}/evidence", answered(_evidence, 201))
    add.add_post("/customers/{customer}/evidence/{evidence}/revoke", answered(_revoke))
    add.add_get("/sites", answered(lambda r, k: k.sites()))
    add.add_post("/sites", answered(_put_site))
    add.add_get("/sites/{host}", answered(lambda r, k: k.site(r.match_info["host"])))
    add.add_post("/sites/{host}/validations", answered(_start, 201))
    add.add_post("/sites/{host}/validations/{validation}/check", answered(_check))
    add.add_get("/accounts", answered(lambda r, k: k.accounts()))
    add.add_post("/accounts/{account}/disable", answered(_disable))
    add.add_post("/accounts/{account}/rotate-key", answered(_rotate))
    add.add_post("/disclosures", answered(_record_disclosure, 201))
    add.add_get("/disclosures/{case}", answered(_get_disclosure))
    add.add_post("/disclosures/{case}/disclose", answered(_disclose))
    add.add_post("/disclosures/{case}/reject", answered(_reject))
    add.add_get("/roster", answered(lambda r, k: k.roster_status()))
