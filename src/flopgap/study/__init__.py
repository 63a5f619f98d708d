"""Studies: many measurements joined into answers, saved in the results store.

- :func:`run_zoo`: does params / FLOPs / bytes / op count / prediction rank a zoo of
  models by latency on this machine? (correlations with bootstrap CIs, inversions,
  outliers of a FLOPs-only fit)
- :func:`run_seed`: the seed article's three examples, measured rigorously, one
  verdict per claim.
- :func:`run_shufflenet`: ShuffleNet V2's four guidelines (Tables 1-4) at equal FLOPs.
- :func:`flopgap.study.generation.run_generation_study`: LLM decode across model and
  batch sizes: FLOPs per token against ms per token, with verdicts.

Each runs into a :class:`flopgap.store.Store`, commits every finished measurement at
once, and resumes an interrupted run (``resume=True``) without duplicates. The
``*_result(store, run_id)`` functions rebuild a result (and its analysis) from the store.
"""

from dataclasses import dataclass

from flopgap.study._runner import NO_RETIME, Progress, Retime
from flopgap.study._stats import Verdict, correlate, flops_fit, inversions, ratio_verdict
from flopgap.study.seed import CLAIMS, SeedResult, run_seed, seed_result
from flopgap.study.shufflenet import ShuffleResult, run_shufflenet, shufflenet_result
from flopgap.study.zoo import DEMO_MODELS, ZOOS, ZooResult, analyze_zoo, run_zoo, study_profile, zoo_items, zoo_result

SINGLE_KINDS = ("count", "time", "explain", "predict", "variants")  # runs saved by --db on those commands


@dataclass
class StoredResult:
    """A run that one command saved with ``--db`` (one measurement; reported generically)."""

    run: object
    measurements: list


__all__ = ["StoredResult", "SINGLE_KINDS", "run_zoo", "run_seed", "run_shufflenet", "zoo_result", "seed_result", "shufflenet_result",
           "result_for_run", "ZooResult", "SeedResult", "ShuffleResult", "analyze_zoo", "zoo_items", "ZOOS",
           "DEMO_MODELS", "CLAIMS", "correlate", "inversions", "flops_fit", "ratio_verdict", "Verdict", "Retime",
           "NO_RETIME", "Progress", "study_profile"]


def result_for_run(store, run_id):
    """The result of any stored study run, by its kind."""
    from flopgap.errors import UsageError

    run = store.run(run_id)
    from flopgap.study.generation import generation_result

    builders = {"zoo": zoo_result, "seed": seed_result, "shufflenet-v2": shufflenet_result,
                "generation": generation_result}
    if run.kind in builders:
        return builders[run.kind](store, run.id)
    if run.kind in SINGLE_KINDS:
        return StoredResult(run, store.measurements(run.id))
    raise UsageError(f"run {run.id} is a {run.kind!r} run; flopgap report knows "
                     f"{', '.join([*builders, *SINGLE_KINDS])} runs")
