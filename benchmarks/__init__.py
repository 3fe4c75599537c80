"""EdgeFleet benchmarks: `make bench` (python -m benchmarks [NAME...]) prints their figures."""
