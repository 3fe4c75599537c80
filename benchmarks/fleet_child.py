"""Child process for bench_rollout: N real agents in one process until stdin closes.

Usage: python -m benchmarks.fleet_child PREFIX N HOST PORT TRUST DATA_DIR [PASSWORD]
Prints "ready" once every agent is started.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_agent.daemon.agent import Agent, limit_malloc_arenas
from edge_agent.daemon.config import AgentConfig, BrokerConfig


def main() -> None:
    limit_malloc_arenas()
    prefix, n, host, port, trust, data = sys.argv[1:7]
    password = sys.argv[7] if len(sys.argv) > 7 else None
    agents = []
    for i in range(int(n)):
        device = f"{prefix}-{i:03d}"
        config = AgentConfig(
            device_id=device,
            data_dir=Path(data) / device,
            trust_file=Path(trust),
            broker=BrokerConfig(
                host=host, port=int(port), username=device if password else None, password=password
            ),
            window_s=3600,
            local_api_port=-1,
            state_interval_s=3600,
        )
        agents.append(Agent(config, local_api=False).start())
    print("ready", flush=True)
    sys.stdin.read()  # the parent closes stdin to stop us
    for agent in agents:
        agent.stop()


if __name__ == "__main__":
    main()
