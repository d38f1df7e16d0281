"""A fleet of edge nodes sharing one takedown feed on Redis Streams (issue 13).

feed.py      the stream layout, the connection (TLS, ACL, timeouts) and the publish script
follower.py  the node side, in the supervisor: follow, verify, apply, acknowledge; /readyz, metrics
ack.py       the takedown service side: mirror the file drop into the feed, each node's ack as proof
push.py      `edgeproxy blocklist push --fleet`: an operator publishing by hand
demo.py      `edgeproxy demo --fleet N`: redis-server, N nodes and the takedown service
"""
