# The EdgeFleet hub as a container image (not built or run by the test suite: there is no
# container runtime where it runs; tests/test_container.py checks the paths and commands
# this file and compose.yaml name). Build from the repository root:
#   docker build -f deploy/container/hub.Dockerfile -t edgefleet-hub .
FROM python:3.11-slim

# gcc and the Python headers build the agent's native hot path (edge_agent/_hotpath.c).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY edge_agent ./edge_agent
COPY hub ./hub
COPY tui ./tui
COPY edgefleet_client ./edgefleet_client
RUN pip install --no-cache-dir '.[hub]' && rm -rf /src

RUN useradd --system --home-dir /var/lib/edgefleet-hub --shell /usr/sbin/nologin edgefleet \
    && install -d -o edgefleet -g edgefleet -m 0700 /var/lib/edgefleet-hub \
    && install -d -o edgefleet -g edgefleet -m 2750 /etc/mosquitto/edgefleet \
    && install -d -o edgefleet -g edgefleet -m 0755 /etc/edgefleet/tls
USER edgefleet
VOLUME ["/var/lib/edgefleet-hub"]
EXPOSE 8700
ENTRYPOINT ["edgefleet"]
CMD ["hub", "serve", "--data", "/var/lib/edgefleet-hub", "--api-host", "0.0.0.0"]
