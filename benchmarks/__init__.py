"""EdgeFleet benchmarks: `make bench` (python -m benchmarks [NAME...]) prints their figures."""

import os

# Models are built with NumPy inside the benchmark processes; OpenBLAS's worker threads
# then spin for a while after each matrix product and show up in the process CPU time
# that bench_predict prints beside the wall time. One BLAS thread keeps that honest.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
