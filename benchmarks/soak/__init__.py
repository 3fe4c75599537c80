"""The fault-injection soak (issue 16): a fleet of real agents under faults, and the
invariants that must hold at the end (nothing lost, nothing counted twice, every device
converged), each printed with its figure and written as JSON.

    python -m benchmarks.soak --seed 7 --duration 600 --agents 50 --broker mosquitto \
        --out soak.json

It lives in ``benchmarks/`` (not ``hub/``): it is a developer's measurement, not an
operator's command, it must not ship in the hub's package, and like the benchmarks it
may use every room of the project (the agent daemon, the hub, the test suite's
Mosquitto set-up with the ``deploy/`` configuration).

Rooms: :mod:`.run` (the run), :mod:`.parts` (the hub and Mosquitto processes),
:mod:`.proxy` (the loopback fault proxy), :mod:`.rogue` (the tap and the rogue
client), :mod:`.ledger` (each agent's own record of what it produced),
:mod:`.invariants` (verdicts, table, JSON).
"""
