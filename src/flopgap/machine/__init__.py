"""Stage 4 of the pipeline: this machine's measured ceilings (peak FLOP/s per dtype,
main-memory and cache bandwidth, eager dispatch overhead, CUDA launch latency) and a
per-op calibration grid, cached per machine fingerprint (thread count included) in
``$FLOPGAP_CACHE_DIR`` or ``~/.cache/flopgap/``, measured lazily: a prediction measures
only the grid cases near its model's ops (:func:`needs_for`), and each run adds to the
cache.
"""

from flopgap.machine._bench import Figure
from flopgap.machine._chains import chain_reference_s
from flopgap.machine._grid import Needs, grid
from flopgap.machine._keys import (GATHER, GATHER_MAX_RUN, CalKey, channels, cold_share, footprint_bytes, gather_run, is_conv, itemsize,
                                   model_is_cold, op_features, op_key, pool_keeps_size, pool_window, weight_bytes)
from flopgap.machine._measure import Sample
from flopgap.machine._profile import (MACHINE_SCHEMA, MachineProfile, cache_dir, cache_path, fingerprint, needs_for,
                                      profile_machine)

__all__ = ["MachineProfile", "profile_machine", "needs_for", "Needs", "CalKey", "Sample", "fingerprint", "cache_dir",
           "cache_path", "Figure", "MACHINE_SCHEMA",
           # the calibration keys and features the predictor shares with the grid
           "grid", "chain_reference_s", "channels", "cold_share", "footprint_bytes", "is_conv", "model_is_cold",
           "op_features", "op_key", "pool_keeps_size", "pool_window", "weight_bytes", "GATHER", "GATHER_MAX_RUN", "gather_run",
           "itemsize"]
