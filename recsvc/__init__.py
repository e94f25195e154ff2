"""recsvc: retention offers ranked by per-segment implicit-feedback models, served over gRPC."""

import os

# One BLAS thread, before numpy loads: implicit's ALS wants it, and serving threads doing small
# matrix products collapse when BLAS threads compete with them for two cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
