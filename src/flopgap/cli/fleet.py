"""``flopgap study machines RUN [RUN ...]``: one zoo (or the seed's claims) on several
machines, side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from flopgap.cli._common import console, err_console, write_json
from flopgap.cli.study import DEFAULT_DB, CsvDirOpt, HtmlOpt, JsonOpt, NoPlotsOpt, StudyDbOpt, study_app


@study_app.command("machines")
def study_machines(
    runs: Annotated[list[str], typer.Argument(help="zoo or seed run ids (or 'latest'): one run measured with --machines, or one run per machine")],
    db: StudyDbOpt = DEFAULT_DB,
    allow_different_settings: Annotated[bool, typer.Option("--allow-different-settings", help="compare runs whose timing settings (batches, max-time, precision, threads, ...) differ")] = False,
    html: HtmlOpt = None,
    csv: CsvDirOpt = None,
    json_path: JsonOpt = None,
    no_plots: NoPlotsOpt = False,
) -> None:
    """One model zoo on several machines: latency per machine with CI, rank changes, swaps
    (two models that trade places), FLOPs inversions present on one machine and not on
    another, which of params / FLOPs / bytes / ops / prediction ranks latency best on each,
    and the seed's claims with a verdict per machine. Disturbed measurements are left out
    and listed."""
    from flopgap.report.fleet_view import machines_sections
    from flopgap.report.html import write_csv, write_html
    from flopgap.report.study_view import print_sections
    from flopgap.store import open_store
    from flopgap.study import compare_machines, machines_from_runs

    store = open_store(db, create=False)
    machines = machines_from_runs(store, runs, allow_different_settings=allow_different_settings)
    cmp = compare_machines(machines)
    sections = machines_sections(cmp, plots=bool(html) and not no_plots)
    if json_path != "-":
        print_sections(sections, console)
    title = f"flopgap: {len(machines)} machines (runs {', '.join(sorted({str(m.run_id) for m in machines}))})"
    if html:
        p = write_html(html, title, sections)
        err_console.print(f"wrote report {p}", markup=False, highlight=False)
    if csv:
        for p in write_csv(csv, sections):
            err_console.print(f"wrote {p}", markup=False, highlight=False)
    if json_path:
        write_json(json_path, cmp.to_dict())

