"""The offline training job: tables -> per-segment implicit models -> a published version.

Imports recsvc first so OPENBLAS_NUM_THREADS=1 is set before numpy loads.
"""

import recsvc  # noqa: F401
