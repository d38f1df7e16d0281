# An edgeproxy node in a container (see README "Running in production"; compose.yaml adds redis).
#   docker build -t edgeproxy .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8081:8081 -e EDGEPROXY_ADMIN_TOKEN=… \
#       -v "$PWD/edge.toml:/etc/edgeproxy/edgeproxy.toml:ro" edgeproxy
# Not built in CI: the checks in tests/test_container.py read it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
# uvloop, httptools, brotli and cryptography ship manylinux wheels: no compiler needed.
RUN pip install '.[shared]' && rm -rf /src

# A fixed unprivileged uid owning only the state directory; the config is mounted read-only.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin edgeproxy \
    && install -d -o edgeproxy -g edgeproxy -m 700 /var/lib/edgeproxy \
    && install -d -m 755 /etc/edgeproxy \
    && edgeproxy init /etc/edgeproxy/edgeproxy.toml
USER edgeproxy
WORKDIR /var/lib/edgeproxy
# The node's default state dir when this is set (pushed entries survive a new container).
ENV STATE_DIRECTORY=/var/lib/edgeproxy
VOLUME ["/var/lib/edgeproxy"]

EXPOSE 8080 8081
# Ready = every worker listens on the current config and blocklist, origins reachable.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8081/readyz', timeout=2).status != 200)"]

# Listen on every address inside the container; the admin API then needs a token
# (EDGEPROXY_ADMIN_TOKEN or --admin-token-file), else the node refuses to start.
ENTRYPOINT ["edgeproxy"]
CMD ["serve", "--config", "/etc/edgeproxy/edgeproxy.toml", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:8081", "--log-format", "json"]
