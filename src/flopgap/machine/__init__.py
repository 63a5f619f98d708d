"""Stage 4 of the pipeline: this machine's measured ceilings (peak FLOP/s per dtype,
main-memory and cache bandwidth, eager dispatch overhead, CUDA launch latency) and a
per-op calibration grid, cached per machine fingerprint in ``$FLOPGAP_CACHE_DIR`` or
``~/.cache/flopgap/``.
"""

from flopgap.machine._bench import Figure
from flopgap.machine._profile import MACHINE_SCHEMA, MachineProfile, cache_dir, cache_path, fingerprint, profile_machine

__all__ = ["MachineProfile", "profile_machine", "fingerprint", "cache_dir", "cache_path", "Figure", "MACHINE_SCHEMA"]
