"""The takedown desk: a web console for operators and admins, and the public notice form.

Served by the takedown service's process on a listener of its own (`[desk] listen`,
`edgeproxy takedown serve --desk-listen`): the console signs staff in with a password and a
server-side session cookie, the API keeps its bearer keys. Both call the service's own
coroutines (`TakedownService.decide`, `submit_notice`, ...), never the JSON API over HTTP.

    app.py          the aiohttp app: security headers, sessions, CSRF, one rule per route
    console.py      the console's pages and actions
    public.py       the public notice form (DSA Art. 16) and its receipt
    form.py         form fields -> the notice document the API takes, errors per field
    sessions.py     server-side sessions, CSRF tokens, the sign-in form's token
    passwords.py    scrypt password hashes for staff accounts
    limits.py       per-address rate limits (form posts, failed sign-ins)
    queries.py      what the pages read that the JSON views do not already give
    charts.py       the report's charts as SVG (no build step, no script)
    screenshots.py  `python -m proxy.takedown.desk.screenshots`: the PNGs under docs/
"""
