"""Hub tests reuse the agent tests' real broker, bundles, bundle server and agent config."""

from __future__ import annotations

from tests.agent.conftest import (  # noqa: F401  (fixtures, registered by import)
    agent_config,
    broker,
    bundles,
    reference_x,
    server,
    trust_file,
)
