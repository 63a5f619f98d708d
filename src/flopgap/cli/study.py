"""``flopgap study zoo|seed|shufflenet-v2``, ``flopgap runs``, ``flopgap compare``,
``flopgap report`` and ``flopgap demo`` (the main job ``make demo`` runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from flopgap._terminal import printable
from flopgap.cli._app import FlopgapTyper, app
from flopgap.cli._common import CsvOpt as CsvDirOpt  # one --csv meaning on every command: a folder of tables
from flopgap.cli._common import (HtmlOpt, JsonOpt, PrecisionOpt, ThreadsOpt, console, err_console, say, write_json,
                                 write_tables)
from flopgap.cli._executor import AddressOpt, ExecutorOpt, LeaseOpt, MachinesOpt, check_lease, make_executor, report_nodes
from flopgap.cli._interrupt import deferred_sigint, wrote
from flopgap.errors import UsageError, one_line
from flopgap.timing import DEFAULT_PRECISION

STORE_HELP = ("results store: a SQLAlchemy URL (sqlite:///flopgap.db, postgresql://user@host/db) or a SQLite "
              "file path; default: flopgap.db in the current directory")
StudyDbOpt = Annotated[str, typer.Option("--db", help=STORE_HELP)]  # studies always store: a default, not optional
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue the latest unfinished run with the same settings on this machine (skips what it stored)")]
MaxTimeOpt = Annotated[float, typer.Option("--max-time", help="timing budget per model or pair, seconds")]
QuickProfileOpt = Annotated[bool, typer.Option("--quick-profile", help="use the machine stage's quick profile for predictions (seconds to measure instead of about a minute; measured once per machine, then cached)")]
NoPlotsOpt = Annotated[bool, typer.Option("--no-plots", help="leave plots out of the HTML report")]

DEFAULT_DB = "sqlite:///flopgap.db"

study_app = FlopgapTyper(
    help="Studies that answer the seed's question with evidence; each run is saved in the results store "
         "(flopgap.db by default, --db to change) and resumable with --resume.",
    no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(study_app, name="study")


def _timer(max_time: float, precision: float, threads: int | None, device: str | None = None):
    """One validated TimerOptions, built before minutes of profiling, not per model after."""
    from flopgap.timing import TimerOptions, check_device

    if device is not None:
        device = check_device(device, what="--device")
    return TimerOptions(max_time=max_time, precision=precision, threads=threads, device=device)


class _Bar:
    """The studies' progress: a transient rich bar on stderr (a terminal only), fed with
    :class:`flopgap.study.Progress` events."""

    def __init__(self):
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if err_console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=err_console, transient=True)
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event) -> None:
        if self.bar is None:
            return
        from rich.markup import escape

        if event.label not in self.tasks:
            self.tasks[event.label] = self.bar.add_task(escape(event.label), total=event.total)
        task = self.tasks[event.label]
        desc = f"{event.label} {event.item[:40]}" + (f" ({event.note})" if event.note else "")
        self.bar.update(task, completed=event.done, total=event.total, description=escape(desc))

    def profile(self, done: int, total: int, label: str = "") -> None:
        if self.bar is None:
            return
        if "profile" not in self.tasks:
            self.tasks["profile"] = self.bar.add_task("machine profile (measured once, then cached)", total=total)
        self.bar.update(self.tasks["profile"], completed=done, total=total)


def _profile(timer, quick: bool, bar: _Bar):
    from flopgap.cli.machine import print_profile_warnings
    from flopgap.study import study_profile

    prof = study_profile(timer, quick=quick, progress=bar.profile)
    print_profile_warnings(prof)
    return prof


def _emit(result, *, html: str | None, csv: str | None, json_path: str | None, plots: bool = True,
          quiet_tables: bool = False) -> None:
    from flopgap.report.html import write_html
    from flopgap.report.study_view import print_sections, sections_for, title_for

    sections = sections_for(result, plots=bool(html) and plots)
    if json_path != "-" and not quiet_tables:
        print_sections(sections, console)
    if html:
        with deferred_sigint():  # a report is written whole or not at all
            path = write_html(html, title_for(result), sections, machine=result.run.machine)
            wrote(repr(str(path)))
        say(f"wrote report {path}")
    if csv:
        write_tables(csv, sections)
    if json_path:
        write_json(json_path, result.to_dict())


def _stored(result, store, quiet: bool = False) -> None:
    if quiet:
        return
    o = result.outcome
    run = store.run(result.run.id)  # what the store holds now: the figures 'flopgap runs' lists
    extra = f": {run.models} models, {run.measurements} records"
    if o is not None:
        extra += f" ({len(o.measured)} measured now" + (f", {len(o.skipped)} already stored" if o.skipped else "") + \
                 (f", {len(o.elsewhere)} stored by another worker" if o.elsewhere else "") + \
                 (f", {len(o.failed)} failed" if o.failed else "") + \
                 (f"; executor {o.executor}" if o.executor != "local" else "") + ")"
    console.print(printable(f"stored as run {run.id} [{run.status}] in {store.url}{extra}"), markup=False,
                  highlight=False)


def _split_models(models: list[str] | None) -> list[str] | None:
    if not models:
        return None
    return [m for chunk in models for m in chunk.split(",") if m.strip()]


@study_app.command("zoo")
def study_zoo(
    zoo: Annotated[Optional[str], typer.Argument(help="seed, torchvision (every classification model, 224x224), transformers (built-in encoder/decoder blocks), hf (transformers encoders and MHA/GQA decoders at several sequence lengths) or timm (efficient and mobile image models)")] = None,
    models: Annotated[Optional[list[str]], typer.Option("--models", "-m", help="your own model specs instead of a zoo, comma-separated or repeated")] = None,
    batch: Annotated[Optional[list[int]], typer.Option("--batch", "-b", help="batch size; repeat for several (each analysed apart); default 1")] = None,
    max_time: MaxTimeOpt = 2.0,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    threads: ThreadsOpt = None,
    no_explain: Annotated[bool, typer.Option("--no-explain", help="skip explain's findings (the prediction is still made)")] = False,
    no_time: Annotated[bool, typer.Option("--no-time", help="count and predict only: nothing is timed, so items may share a machine (latencies shown are predictions)")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="time (and profile) on this device: cpu (default), cuda, cuda:N; on a cluster a kind of machine may name its own, --machines gpu-h200:cuda")] = None,
    quick_profile: QuickProfileOpt = False,
    resume: ResumeOpt = False,
    db: StudyDbOpt = DEFAULT_DB,
    html: HtmlOpt = None,
    csv: CsvDirOpt = None,
    json_path: JsonOpt = None,
    no_plots: NoPlotsOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    machines: MachinesOpt = None,
    lease: LeaseOpt = 60.0,
) -> None:
    """Zoo correlation study: count, time, predict and explain every model, then correlate
    params, FLOPs, bytes, op count and the prediction with measured latency (Spearman,
    Kendall, log-log Pearson, bootstrap CIs), list inversions (fewer FLOPs yet slower) and
    the outliers of a FLOPs-only fit. Each model is committed to the store as it finishes."""
    from flopgap.store import open_store
    from flopgap.study import run_zoo, zoo_items

    ex, lease_s = make_executor(executor, address, machines), check_lease(lease)
    timer = _timer(max_time, precision, threads, device if ex.name == "local" else None)
    if device is not None and ex.name != "local":  # the driver need not have the nodes' GPUs
        from dataclasses import replace

        from flopgap.timing import check_device

        timer = replace(timer, device=check_device(device, what="--device", need_cuda=False))
    model_list = _split_models(models)
    if zoo and model_list:
        raise UsageError("give a zoo name or --models, not both")
    zoo_items(zoo, model_list, tuple(batch or (1,)))  # a misspelt model fails before the profile is measured
    store = open_store(db, writable=True)
    with _Bar() as bar:
        # on a cluster every node measures (or reuses) its own profile
        profile = _profile(timer, quick_profile, bar) if ex.name == "local" else None
        result = run_zoo(zoo, store=store, models=model_list, batches=tuple(batch or (1,)), timer=timer,
                         with_explain=not no_explain, resume=resume, progress=bar, quick_profile=quick_profile,
                         profile=profile, timed=not no_time, executor=ex, lease_s=lease_s)
    report_nodes(ex, err_console)
    _emit(result, html=html, csv=csv, json_path=json_path, plots=not no_plots)
    _stored(result, store, quiet=json_path == "-")


@study_app.command("generation")
def study_generation(
    batch: Annotated[Optional[list[int]], typer.Option("--batch", "-b", help="batch size; repeat for several; default 1 and 4")] = None,
    prompt: Annotated[int, typer.Option("--prompt", help="prompt length P (tokens)")] = 128,
    new_tokens: Annotated[int, typer.Option("--new-tokens", help="tokens N generated; the decode step is timed at context P+(N-1)//2")] = 32,
    max_time: MaxTimeOpt = 2.0,
    precision: PrecisionOpt = 0.02,
    threads: ThreadsOpt = None,
    resume: ResumeOpt = False,
    db: StudyDbOpt = DEFAULT_DB,
    html: HtmlOpt = None,
    csv: CsvDirOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """LLM generation study: Llama-style decoders of growing size (GQA), prefill and
    decode at each batch size, counted and timed; FLOPs per token against ms per token
    across models, inversions, and whether batching decode is nearly free here."""
    from flopgap.store import open_store
    from flopgap.study.generation import run_generation_study

    _timer(max_time, precision, threads)  # validated before any model is built
    store = open_store(db, writable=True)
    with _Bar() as bar:
        result = run_generation_study(store=store, batches=tuple(batch or (1, 4)), prompt=prompt,
                                      new_tokens=new_tokens, max_time=max_time, precision=precision, threads=threads,
                                      resume=resume, progress=bar)
    _emit(result, html=html, csv=csv, json_path=json_path)
    _stored(result, store, quiet=json_path == "-")


@study_app.command("seed")
def study_seed(
    max_time: MaxTimeOpt = 3.0,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    threads: ThreadsOpt = None,
    no_explain: Annotated[bool, typer.Option("--no-explain", help="skip explain's reasons")] = False,
    quick_profile: QuickProfileOpt = False,
    resume: ResumeOpt = False,
    db: StudyDbOpt = DEFAULT_DB,
    html: HtmlOpt = None,
    csv: CsvDirOpt = None,
    json_path: JsonOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    machines: MachinesOpt = None,
    lease: LeaseOpt = 60.0,
) -> None:
    """The seed article's three examples measured rigorously: each claim's latency ratio
    with a 95% CI, a verdict (holds / does not hold / inconclusive at this noise) and
    explain's reason. Example 3 is run as written (bare Linear, left unchanged by
    quantize_dynamic) and as intended (really int8)."""
    from flopgap.store import open_store
    from flopgap.study import run_seed

    ex, lease_s = make_executor(executor, address, machines), check_lease(lease)
    timer = _timer(max_time, precision, threads)
    store = open_store(db, writable=True)
    with _Bar() as bar:
        local = ex.name == "local" and not no_explain
        result = run_seed(store=store, timer=timer, with_explain=not no_explain, resume=resume, progress=bar,
                          quick_profile=quick_profile, profile=_profile(timer, quick_profile, bar) if local else None,
                          executor=ex, lease_s=lease_s)
    report_nodes(ex, err_console)
    _emit(result, html=html, csv=csv, json_path=json_path)
    _stored(result, store, quiet=json_path == "-")


@study_app.command("shufflenet-v2")
def study_shufflenet(
    spatial: Annotated[int, typer.Option("--spatial", help="input height and width (the paper: 56; default 28 for a CPU, equal FLOPs kept)")] = 28,
    guideline: Annotated[Optional[list[str]], typer.Option("--guideline", "-g", help="G1..G4; repeat; default all")] = None,
    max_time: MaxTimeOpt = 2.0,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    threads: ThreadsOpt = None,
    resume: ResumeOpt = False,
    db: StudyDbOpt = DEFAULT_DB,
    html: HtmlOpt = None,
    csv: CsvDirOpt = None,
    json_path: JsonOpt = None,
    no_plots: NoPlotsOpt = False,
) -> None:
    """ShuffleNet V2's four guidelines rebuilt at equal FLOPs on this machine: relative
    speeds with CIs beside the paper's, one verdict per guideline.

    Micro-benchmarks of Ma et al. 2018, Tables 1-4: 10 stacked blocks, batch 1, the
    paper's channel counts, input --spatial x --spatial (the paper: 56)."""
    from flopgap.store import open_store
    from flopgap.study import run_shufflenet

    timer = _timer(max_time, precision, threads)
    store = open_store(db, writable=True)
    gl = tuple(g.upper() for g in (guideline or ("G1", "G2", "G3", "G4")))
    with _Bar() as bar:
        result = run_shufflenet(store=store, spatial=spatial, timer=timer, guidelines=gl, resume=resume,
                                progress=bar)
    _emit(result, html=html, csv=csv, json_path=json_path, plots=not no_plots)
    _stored(result, store, quiet=json_path == "-")


@app.command()
def runs(
    db: StudyDbOpt = DEFAULT_DB,
    kind: Annotated[Optional[str], typer.Option("--kind", help="only runs of this kind (zoo, seed, shufflenet-v2, generation, or a command: count, time, explain, predict, variants, generate)")] = None,
    limit: Annotated[int, typer.Option("--limit", help="at most this many, newest first")] = 20,
    json_path: JsonOpt = None,
) -> None:
    """List the runs in the results store, newest first: a study's name or the model of a
    single command's run, the models and records each holds."""
    from flopgap.report.study_view import runs_table
    from flopgap.store import open_store

    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    store = open_store(db, create=False)
    found = store.runs(kind=kind, limit=limit)
    if json_path:
        write_json(json_path, [r.to_dict() for r in found])
        if json_path == "-":
            return
    if not found:
        console.print(printable(f"no runs in {store.url}"), markup=False)
        return
    from flopgap.report.fit import Col, print_fit

    table = runs_table(found)  # the same rows as the HTML/CSV table; on a terminal, fitted to its width
    cols = [Col("run"), Col("kind", text=True, shrink=False), Col("name / model", text=True, shrink=False),
            Col("status", text=True, shrink=False), Col("started (UTC)", text=True), Col("models"), Col("records"),
            Col("machine", text=True, optional=1), Col("cpu", text=True, optional=2)]
    print_fit(console, cols, [[str(v) for v in row] for row in table.rows], f"runs in {store.url}, newest first")


@app.command("compare")
def compare_cmd(
    a: Annotated[str, typer.Argument(help="baseline: a run id in --db ('latest' too) or a JSON file written by --json of any command")],
    b: Annotated[str, typer.Argument(help="the run id or JSON file to compare with it")],
    db: StudyDbOpt = DEFAULT_DB,
    threshold: Annotated[float, typer.Option("--threshold", help="flag changes whose whole 95% CI lies beyond this fraction (default 0.05 = 5%)")] = 0.05,
    force: Annotated[bool, typer.Option("--force", help="compare even when threads, inputs, device, precision, machine or torch version differ (the differences are stated first)")] = False,
    fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", help="exit 1 if any model regressed")] = False,
    html: HtmlOpt = None,
    csv: CsvDirOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Compare the latencies of the same models in two results: B / A with a 95% CI, a
    regression / improvement / no change flag beyond --threshold, in the layout of
    torch.utils.benchmark.Compare. Each side is a run in the results store or a JSON file
    of any command (time, explain, predict --measure, variants, study); a model is matched
    at the same batch whichever command timed it. Results measured under different
    settings (threads, inputs, device, precision, machine, torch version) are refused
    (exit 2) unless --force: their ratio would measure the difference in settings."""
    from flopgap.errors import FlopgapError
    from flopgap.report.html import write_html
    from flopgap.report.study_view import compare_sections, print_sections
    from flopgap.study.compare import compare_sources, load_source

    def needs_store(ref: str) -> bool:
        return not (ref.lower().endswith(".json") or Path(ref).exists())

    store = None
    if needs_store(a) or needs_store(b):
        from flopgap.store import open_store

        store = open_store(db, create=False)
    cmp = compare_sources(load_source(a, store), load_source(b, store), threshold=threshold, force=force)
    sections = compare_sections(cmp)
    if json_path != "-":
        print_sections(sections, console)
    if json_path:
        write_json(json_path, cmp.to_dict())
    if html:
        p = write_html(html, f"flopgap: {cmp.b.label} vs {cmp.a.label}", sections, machine=cmp.b.machine or None)
        say(f"wrote report {p}")
    if csv:
        write_tables(csv, sections)
    if fail_on_regression and cmp.regressions:
        raise FlopgapError(f"{cmp.regressions} regression(s) beyond {100 * threshold:g}%")


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="run id (flopgap runs lists them) or 'latest'")],
    db: StudyDbOpt = DEFAULT_DB,
    out: Annotated[Optional[str], typer.Option("--html", "--out", "-o", help="HTML path (default reports/run-ID-KIND.html)")] = None,
    csv: CsvDirOpt = None,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Write one self-contained HTML report of a stored run: a study's (tables, verdicts,
    plots) or a single command's saved with --db (the same page its --html wrote, plots
    drawn again from the stored result); machine metadata; opens without network."""
    from flopgap.report.html import write_html
    from flopgap.report.study_view import sections_for, title_for
    from flopgap.store import open_store
    from flopgap.study import result_for_run

    store = open_store(db, create=False)
    try:  # a store is anyone's file: stored payloads flopgap did not write are refused, not trusted
        result = result_for_run(store, run)
        sections = sections_for(result, plots=not no_plots)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as e:
        if os.environ.get("FLOPGAP_DEBUG"):
            raise
        raise UsageError(f"run {run} in {store.url} holds results flopgap cannot read ({one_line(e)[:200]})") from None
    path = write_html(out or f"reports/run-{result.run.id}-{result.run.kind}.html", title_for(result), sections,
                      machine=result.run.machine)
    console.print(printable(f"wrote report {path}"), markup=False)
    if csv:
        write_tables(csv, sections)


@app.command()
def demo(
    db: StudyDbOpt = DEFAULT_DB,
    out: Annotated[str, typer.Option("--out", help="folder for the HTML reports")] = "reports",
    max_time: Annotated[float, typer.Option("--max-time", help="timing budget per model or pair, seconds")] = 2.0,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    threads: ThreadsOpt = None,
) -> None:
    """The main job: the seed case study and a small torchvision zoo study (six small
    models, batch 1; a few minutes on 2 cores), stored in the results store, with an
    HTML report each in --out."""
    from flopgap.report.html import write_html
    from flopgap.report.study_view import print_sections, sections_for, title_for
    from flopgap.store import open_store
    from flopgap.study import DEMO_MODELS, run_seed, run_zoo

    timer = _timer(max_time, precision, threads)
    store = open_store(db, writable=True)
    console.print("[bold]1/2 seed case study[/bold]: the article's three examples, measured rigorously")
    with _Bar() as bar:
        profile = _profile(timer, False, bar)
        seed = run_seed(store=store, timer=timer, progress=bar, profile=profile)
    seed_sections = sections_for(seed)
    print_sections([s for s in seed_sections if s.title == "Claims and verdicts"], console)
    console.print(f"[bold]2/2 zoo study[/bold]: {len(DEMO_MODELS)} torchvision models, batch 1", highlight=False)
    with _Bar() as bar:
        zoo = run_zoo(store=store, models=list(DEMO_MODELS), batches=(1,), timer=timer, progress=bar,
                      profile=profile)
    zoo_sections = sections_for(zoo)
    print_sections([s for s in zoo_sections if s.title.startswith("Batch")], console)
    paths = [write_html(Path(out) / "seed.html", title_for(seed), seed_sections, machine=seed.run.machine),
             write_html(Path(out) / "zoo.html", title_for(zoo), zoo_sections, machine=zoo.run.machine)]
    console.print(printable(f"stored runs {seed.run.id} (seed) and {zoo.run.id} (zoo) in {store.url}"), markup=False)
    for p in paths:
        console.print(printable(f"report: {p.resolve()}"), markup=False)
