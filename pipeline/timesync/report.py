"""The visual QA report of a TimeSync project: static HTML a project lead reads before the
plots go to TimeSync interpreters.

``write_report(project, project_id)`` writes, through the project's store (a local
directory or ``s3://``; every file atomically)::

    report/index.html                         the projects of the plot file, linked
    report/prj_{id}/img/plot_{plot}.png       a plot's spectral trajectories (matplotlib, Agg)
    report/prj_{id}/img/figures.json          what each figure was drawn from (a digest):
                                              a later report redraws only changed plots
    report/prj_{id}/plot_{plot}.html          a plot: filmstrip of its chips, trajectories, rows
    report/prj_{id}/summary.json              the project's figures, for report/index.html
    report/prj_{id}/index.html                one row per plot; written LAST (completeness marker)

What it shows comes from the per-plot series CSV (or, for a plot that is not finished, the
observation CSVs that exist), the catalogue's observation list, the fill record and the
failure record (failed observations and the catalogue items the run could not use);
rasters and chips are never read. Every link is relative (e.g.
``../../prj_1001/b743/plot_001/plot_001_2002_172.png``), so the report works from the file
system and from a downloaded or synced copy of an S3 project. Pages are self-contained:
inline CSS and plain JavaScript, no external assets.

This module computes what the pages show (``index_context``, ``plot_context``,
``top_context``); the markup is in the Jinja2 templates of the shared report frame
(:mod:`pipeline.report`): ``timesync_index.html``, ``timesync_plot.html`` and
``timesync_top.html`` on ``timesync_page.html`` (the base page with TimeSync's stylesheet),
autoescaped.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import itertools
import json
import math
import posixpath
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pipeline import report as report_frame
from pipeline.errors import PipelineError
from pipeline.failures import UnusableItem, unique_items
from pipeline.timesync import layout
from pipeline.timesync.engine import Project
from pipeline.timesync.layout import (
    figure_dir,
    figure_manifest,
    plot_figure,
    plot_page,
    report_index,
    report_summary,
    top_index,
)
from pipeline.timesync.plots import Plot
from pipeline.timesync.recipe import FILL_REFLECTANCE, SPECTRAL_COLUMNS, TC_COEFFICIENTS

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")  # series columns, recipe order
KINDS = ("b743", "tc", "b432")  # filmstrip composites; b743 is shown first


def report_files(project: Project, project_id: str) -> list[str]:
    """Every file of the project's report, in the order :func:`write_report` writes them
    (a figure whose data did not change since the last report is kept, not rewritten): the
    project's ``index.html`` (the completeness marker) is last."""
    files: list[str] = []
    for plot in _ordered(project.plots_of(project_id)):
        files += [plot_figure(project_id, plot.plot_id), plot_page(project_id, plot.plot_id)]
    return [
        *files,
        figure_manifest(project_id),
        report_summary(project_id),
        top_index(),
        report_index(project_id),
    ]


def _ordered(plots: Iterable[Plot]) -> list[Plot]:
    return sorted(plots, key=lambda p: p.plot_id)


def rel_link(page: str, target: str) -> str:
    """``target`` (a path under the project directory) relative to ``page``'s folder, URL-quoted."""
    return quote(posixpath.relpath(target, posixpath.dirname(page) or "."), safe="/._-~")


# ---- what the report knows of one observation and one plot -----------------------------
@dataclass(frozen=True, slots=True)
class ObsRow:
    """One written observation: its series row, with the indices computed from it once."""

    key: str
    year: int
    doy: int
    sensor: str
    hv: str
    date: str  # the item datetime as written
    values: tuple[int, ...]  # blue, green, red, nir, swir1, swir2 (Collection 1 scale)
    qa: int
    indices: dict[str, float] = field(init=False, compare=False)  # see spectral_indices
    snow: bool = field(init=False, compare=False)  # qa 0 but snow-like: see snow_suspect
    t: float = field(init=False, compare=False)  # decimal year (centre of the day)

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", spectral_indices(self.values))
        object.__setattr__(self, "snow", self.qa != 1 and snow_suspect(self.values))
        object.__setattr__(self, "t", _decimal_year(self.year, self.doy))

    @property
    def cloudy(self) -> bool:
        return self.qa == 1

    @property
    def clear(self) -> bool:
        """What trajectories join: qa 0 and not snow-like."""
        return not self.cloudy and not self.snow

    @property
    def partial_fill(self) -> bool:
        """A band is fill (-2000) at the plot pixel: indices are not computed."""
        return FILL_REFLECTANCE in self.values

    @property
    def day(self) -> str:
        return (
            self.date[:10] if len(self.date) >= 10 and self.date[4] == "-" else _day_of(self.year, self.doy)
        )

    def band(self, name: str) -> float:
        v = self.values[BANDS.index(name)]
        return math.nan if v == FILL_REFLECTANCE else float(v)


def spectral_indices(values: Sequence[int]) -> dict[str, float]:
    """NBR, NDVI and tasseled cap brightness/greenness/wetness of one row (blue..swir2).

    All NaN where a band is fill (-2000). NBR and NDVI are NaN where one of their two bands
    is negative (water, shadow: a normalized difference of negative reflectance can take any
    value) or both are 0. Tasseled cap uses the recipe's coefficients, summed left to right
    in float64."""
    names = ("nbr", "ndvi", "tcb", "tcg", "tcw")
    if len(values) != 6 or FILL_REFLECTANCE in values:
        return dict.fromkeys(names, math.nan)
    blue, green, red, nir, swir1, swir2 = (float(v) for v in values)
    out = {"nbr": _normalized_difference(nir, swir2), "ndvi": _normalized_difference(nir, red)}
    for name, coefficients in zip(("tcb", "tcg", "tcw"), TC_COEFFICIENTS, strict=True):
        acc = 0.0
        for c, v in zip(coefficients, (blue, green, red, nir, swir1, swir2), strict=True):
            acc += c * v
        out[name] = acc
    return out


SNOW_NDSI = 0.4  # NDSI = (green - swir1) / (green + swir1)
SNOW_MIN_NIR = 1100  # and nir > 0.11, green > 0.10 (reflectance x 10^4), as Fmask's snow test


def snow_suspect(values: Sequence[int]) -> bool:
    """A row that looks like snow: NDSI >= 0.4 with bright nir and green. A hint for the
    reviewer (winter acquisitions make NBR jump up), not part of the recipe's qa."""
    if len(values) != 6 or FILL_REFLECTANCE in values:
        return False
    _, green, _, nir, swir1, _ = values
    return (
        green + swir1 > 0
        and (green - swir1) / (green + swir1) >= SNOW_NDSI
        and nir > SNOW_MIN_NIR
        and green > 1000
    )


def _normalized_difference(a: float, b: float) -> float:
    if a < 0 or b < 0 or a + b == 0:
        return math.nan
    return (a - b) / (a + b)


def _decimal_year(year: int, doy: int) -> float:
    days = 366 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 365
    return year + (doy - 0.5) / days


def _day_of(year: int, doy: int) -> str:
    return (date(year, 1, 1) + timedelta(days=doy - 1)).isoformat()


def _key_t(key: str) -> float:
    year, doy = key.split("_")
    return _decimal_year(int(year), int(doy))


def parse_rows(text: str) -> list[ObsRow]:
    """The observation rows of a CSV with the spectral header (series or one observation)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in SPECTRAL_COLUMNS if c not in col]
    if missing:
        raise PipelineError(f"spectral CSV without column(s) {', '.join(missing)}")
    rows = []
    for r in reader:
        if not r:
            continue
        year, doy = int(r[col["year"]]), int(r[col["doy"]])
        rows.append(
            ObsRow(
                key=layout.obs_key(year, doy), year=year, doy=doy, sensor=r[col["sensor"]], hv=r[col["hv"]],
                date=r[col["date"]], values=tuple(int(r[col[b]]) for b in BANDS), qa=int(r[col["qa"]]),
            )
        )  # fmt: skip
    return sorted(rows, key=lambda o: (o.year, o.doy))


@dataclass
class PlotReport:
    plot: Plot
    status: str  # "complete", "failed" (the last attempt left failures), "incomplete"
    n_catalogue: int  # observations in the catalogue search
    rows: list[ObsRow]  # written observations, by date
    fill: list[str]  # keys skipped for fill at the plot
    failed: list[dict[str, Any]]  # the failure record's entries
    pending: list[str]  # neither written, fill nor failed (the run has not got there)
    series: bool  # the series CSV exists (rows come from it)
    unusable: list[UnusableItem] = field(
        default_factory=list
    )  # catalogue items of its tiles the run could not use

    @property
    def problem(self) -> bool:
        return self.status != "complete" or bool(self.failed) or bool(self.unusable)

    @property
    def plot_id(self) -> str:
        return self.plot.plot_id

    @property
    def cloudy(self) -> int:
        return sum(o.cloudy for o in self.rows)

    @property
    def snow(self) -> int:
        return sum(o.snow for o in self.rows)

    @property
    def first_year(self) -> int | None:
        return self.rows[0].year if self.rows else None

    @property
    def last_year(self) -> int | None:
        return self.rows[-1].year if self.rows else None

    def clear_nbr(self) -> list[tuple[float, float]]:
        """(time, NBR) of the clear observations (qa 0, not snow-like) with an NBR."""
        return [(o.t, o.indices["nbr"]) for o in self.rows if o.clear and not math.isnan(o.indices["nbr"])]

    @property
    def nbr_drop(self) -> tuple[float, int] | None:
        """Largest NBR decrease between consecutive clear observations (a disturbance is a
        drop), and the year of the observation after it."""
        drops = [(a - b, math.floor(tb)) for (_, a), (tb, b) in itertools.pairwise(self.clear_nbr())]
        return max(drops) if drops else None

    @property
    def hv(self) -> str:
        return ", ".join(sorted({o.hv for o in self.rows}))

    @property
    def sensors(self) -> str:
        return ", ".join(sorted({o.sensor for o in self.rows}))


def collect(project: Project, plot: Plot) -> PlotReport:
    """What the report shows of one plot: listings and the small CSV/JSON records only."""
    try:
        status = project.status_of(plot)
    except FileNotFoundError as e:
        raise PipelineError(
            f"plot {plot.name}: {e.filename or e}: not found; run the TimeSync extraction first, with the same parameters "
            "(they name its catalogue-search state)"
        ) from None
    keys = {o.key for o in status.observations}
    fill = sorted(project.fill_keys(plot) & keys)
    record = project.failure_record(plot)
    failed = sorted((f.to_json() for f in record.failed), key=lambda f: str(f.get("key", "")))
    failed_keys = {str(f.get("key")) for f in failed}
    if status.complete:
        rows = parse_rows(project.store.read_text(layout.series_csv(plot.project_id, plot.plot_id)))
        rows = [o for o in rows if o.key in keys]
        pending: list[str] = []
    else:
        # Not finished (or a file was deleted since): the observations whose four files exist.
        done = sorted(project.existing_keys(plot) & keys)
        texts = [project.store.read_text(layout.obs_csv(plot.project_id, plot.plot_id, k)) for k in done]
        rows = sorted((r for t in texts for r in parse_rows(t)), key=lambda o: (o.year, o.doy))
        written = {o.key for o in rows}
        pending = sorted(o.key for o in status.missing if o.key not in failed_keys and o.key not in written)
    if status.complete:
        state = "complete"
    elif failed:
        state = "failed"
    else:
        state = "incomplete"
    return PlotReport(
        plot, state, len(status.observations), rows, fill, failed, pending, status.complete, record.unusable
    )


# ---- writing ------------------------------------------------------------------------
def write_report(
    project: Project, project_id: str, *, progress: Callable[[int, int, str], None] | None = None
) -> list[str]:
    """Write the project's QA report (see the module docstring); returns the relative paths
    written, equal to :func:`report_files`, the project's ``index.html`` last."""
    store = project.store
    plots = _ordered(project.plots_of(project_id))
    if not plots:
        raise PipelineError(f"project {project_id!r} has no plots in {project.options.plot_file}")
    workers = 16 if store.is_s3 else 2
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reports = list(pool.map(lambda p: collect(project, p), plots))
        ctx = _Context.of(project, project_id, reports)
        written: list[str] = []
        pending_writes = []

        def put(rel: str, data: bytes) -> None:
            written.append(rel)
            pending_writes.append(pool.submit(store.write_bytes, rel, data))

        axis = TimeAxis(ctx.t0, ctx.t1)
        digests = {rep.plot_id: figure_digest(rep, axis) for rep in reports}
        drawn = _drawn_figures(project, project_id)
        on_disk = (
            store.list_names(figure_dir(project_id)) if drawn else set()
        )  # one listing, not a HEAD per plot
        redraw_ids = {
            rep.plot_id for rep in reports
            if drawn.get(rep.plot_id) != digests[rep.plot_id] or posixpath.basename(plot_figure(project_id, rep.plot_id)) not in on_disk
        }  # fmt: skip
        figures = _rendered_figures([rep for rep in reports if rep.plot_id in redraw_ids], axis)
        for i, rep in enumerate(reports):
            if rep.plot_id in redraw_ids:
                put(plot_figure(project_id, rep.plot_id), next(figures))
            else:
                written.append(plot_figure(project_id, rep.plot_id))  # current: kept
            prev_id = reports[i - 1].plot_id if i > 0 else None
            next_id = reports[i + 1].plot_id if i + 1 < len(reports) else None
            put(plot_page(project_id, rep.plot_id), plot_page_html(rep, ctx, prev_id, next_id).encode())
            if progress:
                progress(i + 1, len(reports), "plots in the report")
        for f in pending_writes:
            f.result()  # every plot page is in place before the pages that link to them
    # after the figures: a digest never names a figure that was not written
    store.write_text(
        figure_manifest(project_id),
        json.dumps({"format": FIGURE_FORMAT, "plots": digests}, indent=0, sort_keys=True) + "\n",
    )
    written.append(figure_manifest(project_id))
    summary = ctx.summary()
    store.write_text(report_summary(project_id), json.dumps(summary, indent=1) + "\n")
    written.append(report_summary(project_id))
    store.write_text(top_index(), top_index_html(project, summary))
    written.append(top_index())
    store.write_text(report_index(project_id), index_html(reports, ctx))  # last: the marker
    written.append(report_index(project_id))
    return written


@dataclass
class _Context:
    """Project-wide facts every page shares: the time axis and the NBR scale of sparklines."""

    project: Project
    project_id: str
    reports: list[PlotReport]
    t0: float
    t1: float
    nbr_lo: float
    nbr_hi: float
    ingest: list[str]  # the project's ingest files that exist
    generated: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    @classmethod
    def of(cls, project: Project, project_id: str, reports: list[PlotReport]) -> _Context:
        ts = [o.t for r in reports for o in r.rows] + [
            _key_t(k) for r in reports for k in (*r.fill, *r.pending)
        ]
        ts += [_key_t(str(f["key"])) for r in reports for f in r.failed if "key" in f]
        t0 = math.floor(min(ts)) if ts else 1984
        t1 = math.floor(max(ts)) + 1 if ts else datetime.now(UTC).year + 1
        nbr = sorted(v for r in reports for _, v in r.clear_nbr())
        if nbr:
            lo, hi = _quantile(nbr, 0.02), _quantile(nbr, 0.98)
            pad = max(0.05, 0.08 * (hi - lo))
            lo, hi = lo - pad, hi + pad
        else:
            lo, hi = -0.2, 0.8
        suffix = layout.ingest_csv_suffix(project_id)
        ingest = sorted(n for n in project.store.list_names("", "") if n.endswith(suffix) and n[:4].isdigit())
        return cls(project, project_id, reports, t0, t1, lo, hi, ingest)

    def summary(self) -> dict[str, Any]:
        rs = self.reports
        years = [y for r in rs for y in (r.first_year, r.last_year) if y is not None]
        return {
            "project_id": self.project_id,
            "plots": len(rs),
            "plots_complete": sum(r.status == "complete" for r in rs),
            "plots_failed": sum(r.status == "failed" for r in rs),
            "plots_incomplete": sum(r.status == "incomplete" for r in rs),
            "observations": sum(r.n_catalogue for r in rs),
            "written": sum(len(r.rows) for r in rs),
            "fill": sum(len(r.fill) for r in rs),
            "cloudy": sum(r.cloudy for r in rs),
            "snow": sum(r.snow for r in rs),
            "failed": sum(len(r.failed) for r in rs),
            "pending": sum(len(r.pending) for r in rs),
            "unusable": len(unique_items(u for r in rs for u in r.unusable)),
            "first_year": min(years) if years else None,
            "last_year": max(years) if years else None,
            "generated": self.generated,
        }


def _quantile(sorted_values: list[float], q: float) -> float:
    i = q * (len(sorted_values) - 1)
    lo = math.floor(i)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (i - lo)


# ---- the trajectory figure ----------------------------------------------------------------
# Colours: bands in spectral order; tasseled cap in the tc chip's channel colours
# (brightness red, greenness green, wetness blue).
BAND_COLORS = {
    "blue": "#1c7ed6",
    "green": "#2f9e44",
    "red": "#e03131",
    "nir": "#862e9c",
    "swir1": "#f08c00",
    "swir2": "#795548",
}
INDEX_COLORS = {"nbr": "#0b7285", "ndvi": "#66a80f"}
TC_COLORS = {"tcb": "#d9480f", "tcg": "#2b8a3e", "tcw": "#1864ab"}
INDEX_LABELS = {
    "nbr": "NBR",
    "ndvi": "NDVI",
    "tcb": "TC brightness",
    "tcg": "TC greenness",
    "tcw": "TC wetness",
}


@dataclass(frozen=True)
class TimeAxis:
    """The years every plot's figure spans (what a figure needs of the project)."""

    t0: float
    t1: float


# Part of every figure's digest: change it when render_trajectories draws differently.
FIGURE_FORMAT = "trajectories-1"


@functools.cache
def _matplotlib_version() -> str:
    from importlib.metadata import version

    return version("matplotlib")  # ~2 ms a lookup: once per process, not once per plot


def figure_digest(rep: PlotReport, axis: TimeAxis) -> str:
    """A digest of everything the plot's trajectory figure shows (and of what draws it)."""
    drawn_from = (
        FIGURE_FORMAT, _matplotlib_version(), axis.t0, axis.t1, rep.plot.project_id, rep.plot_id,
        [(o.key, o.sensor, o.values, o.qa) for o in rep.rows], rep.fill,
        sorted(str(f.get("key")) for f in rep.failed), rep.pending,
    )  # fmt: skip
    return hashlib.sha256(repr(drawn_from).encode()).hexdigest()[:32]


def _drawn_figures(project: Project, project_id: str) -> dict[str, str]:
    """Plot id -> digest of the figures the last report drew (empty when there is none or
    it cannot be read: everything is drawn)."""
    try:
        doc = json.loads(project.store.read_text(figure_manifest(project_id)))
    except (FileNotFoundError, PipelineError, ValueError):
        return {}
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FIGURE_FORMAT
        or not isinstance(doc.get("plots"), dict)
    ):
        return {}
    return {str(k): str(v) for k, v in doc["plots"].items()}


# From this many plots on, figures are drawn on the Dask cluster (~0.1 s of CPU each);
# below it, starting a cluster would cost more than it saves. A run that extracted
# anything has its cluster already: then it is used for any number.
FIGURES_ON_DASK_FROM = 8


def _rendered_figures(reports: list[PlotReport], axis: TimeAxis) -> Iterator[bytes]:
    """Each plot's trajectory PNG, in order."""
    from pipeline.cluster import get_client, has_client

    if len(reports) < FIGURES_ON_DASK_FROM and not has_client():
        yield from (render_trajectories(rep, axis) for rep in reports)
        return

    client = get_client()
    futures = client.map(render_trajectories, reports, axis=axis, pure=False)
    for future in futures:  # in order, each released once written
        yield future.result()
        future.release()


def _band_value(band: str) -> Callable[[ObsRow], float]:
    """A trajectory panel's series: one band's value of an observation row."""
    return lambda o: o.band(band)


def _index_value(name: str) -> Callable[[ObsRow], float]:
    """A trajectory panel's series: one spectral index of an observation row."""
    return lambda o: o.indices[name]


def render_trajectories(rep: PlotReport, axis: TimeAxis | _Context) -> bytes:
    """A PNG of the plot's trajectories over time: the six bands, NBR and NDVI, tasseled
    cap. Clear observations are joined by lines; cloudy ones (qa 1) are crosses on dotted
    grey date lines, snow-like ones hollow circles; fill, failed and pending observations are
    ticks under the last panel."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MultipleLocator

    fig, axes = _figure_frame()
    clear = [o for o in rep.rows if o.clear]
    cloudy = [o for o in rep.rows if o.cloudy]
    snow = [o for o in rep.rows if o.snow]
    # Dense series (hundreds of acquisitions) get smaller marks and no per-date lines.
    k = 1.0 if len(rep.rows) <= 120 else 0.6
    ms, lw, xs, mew = 3.2 * k, 1.3 * (0.5 + k / 2), 5.5 * k, 1.4 * (0.5 + k / 2)
    panels: list[list[tuple[str, str, Callable[[ObsRow], float]]]] = [
        [(b, BAND_COLORS[b], _band_value(b)) for b in BANDS],
        [(INDEX_LABELS[k], INDEX_COLORS[k], _index_value(k)) for k in ("nbr", "ndvi")],
        [(INDEX_LABELS[k], TC_COLORS[k], _index_value(k)) for k in ("tcb", "tcg", "tcw")],
    ]
    for ax, series in zip(axes, panels, strict=True):
        if cloudy and len(cloudy) <= 60:  # one collection, not a line per date (~15 % of the figure)
            ax.vlines(
                [o.t for o in cloudy],
                0,
                1,
                transform=ax.get_xaxis_transform(),
                color="#ced4da",
                lw=0.8,
                ls=(0, (2, 2)),
                zorder=0,
            )
        for label, color, value in series:
            line = [(o.t, v) for o in clear if not math.isnan(v := value(o))]  # a fill band leaves no gap
            ax.plot(
                [t for t, _ in line],
                [v for _, v in line],
                "-o",
                color=color,
                ms=ms,
                lw=lw,
                label=label,
                zorder=3,
            )
            if cloudy:
                ax.plot(
                    [o.t for o in cloudy],
                    [value(o) for o in cloudy],
                    "x",
                    color=color,
                    ms=xs,
                    mew=mew,
                    zorder=2,
                )
            if snow:
                ax.plot(
                    [o.t for o in snow],
                    [value(o) for o in snow],
                    "o",
                    mfc="none",
                    color=color,
                    ms=xs,
                    mew=mew * 0.85,
                    zorder=2,
                )
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.02),
            fontsize=8,
            frameon=False,
            handlelength=1.6,
        )
    axes[1].axhline(0, color="#868e96", lw=0.7)
    bottom = axes[-1]
    marks = [
        ("fill at plot (skipped)", "#868e96", [_key_t(k) for k in rep.fill]),
        ("failed", "#c92a2a", [_key_t(str(f["key"])) for f in rep.failed if "key" in f]),
        ("pending", "#f59f00", [_key_t(k) for k in rep.pending]),
    ]
    extra = [
        Line2D([], [], color="#495057", marker="o", ms=3.2, lw=1.3, label=f"clear ({len(clear)})"),
        Line2D(
            [],
            [],
            color="#495057",
            marker="x",
            ls="none",
            ms=5.5,
            mew=1.4,
            label=f"cloudy, qa = 1 ({len(cloudy)})",
        ),
    ]
    if snow:
        extra.append(
            Line2D(
                [],
                [],
                color="#495057",
                marker="o",
                mfc="none",
                ls="none",
                ms=5,
                mew=1.2,
                label=f"snow? qa = 0, NDSI ≥ {SNOW_NDSI} ({len(snow)})",
            )
        )
    for label, color, ts in marks:
        if ts:
            bottom.plot(
                ts,
                [0.0] * len(ts),
                "|",
                color=color,
                ms=9,
                mew=1.6,
                transform=bottom.get_xaxis_transform(),
                clip_on=False,
            )
            extra.append(
                Line2D(
                    [], [], color=color, marker="|", ls="none", ms=9, mew=1.6, label=f"{label} ({len(ts)})"
                )
            )
    fig.legend(
        handles=extra,
        loc="lower center",
        bbox_to_anchor=(0.465, 0.0),
        ncols=len(extra),
        fontsize=8,
        frameon=False,
    )
    bottom.set_xlim(axis.t0, axis.t1)
    span = axis.t1 - axis.t0
    bottom.xaxis.set_major_locator(MultipleLocator(1 if span <= 12 else 2 if span <= 24 else 5))
    if not rep.rows:
        axes[0].text(
            0.5,
            0.5,
            "no written observations",
            transform=axes[0].transAxes,
            ha="center",
            va="center",
            color="#868e96",
        )
    fig.suptitle(
        f"Project {rep.plot.project_id} · plot {rep.plot_id}: {len(rep.rows)} observations, {len(cloudy)} cloudy",
        fontsize=10, x=0.075, y=0.985, ha="left",
    )  # fmt: skip
    for ax in axes:  # the y range of this plot's artists alone (a reused frame held others)
        ax.relim()
        ax.autoscale_view(scalex=False)
    buf = io.BytesIO()
    fig.savefig(
        buf, format="png", metadata={"Software": None}, pil_kwargs={"compress_level": 1}
    )  # deflate 3x quicker than level 6, files ~10 % larger
    return buf.getvalue()


PANEL_LABELS = ("surface reflectance ×10⁴", "index", "tasseled cap")
_FRAMES = threading.local()


def _figure_frame() -> tuple[Any, Any]:
    """The trajectory figure's frame (figure, three styled panels), made once per thread and
    emptied of the previous plot's artists on every later call: making the figure and its
    axes and ticks was about a third of each figure's CPU (149 -> 106 ms). The output is the
    same as from a fresh figure (tested)."""
    frame: tuple[Any, Any] | None = getattr(_FRAMES, "frame", None)
    if frame is None:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        # Fixed margins, not constrained layout: the figure takes a third of the time.
        fig = Figure(figsize=(10.8, 7.4), dpi=100)
        axes = fig.subplots(3, 1, sharex=True, height_ratios=(1.2, 1.0, 1.0))
        fig.subplots_adjust(left=0.075, right=0.855, top=0.945, bottom=0.085, hspace=0.1)
        for ax, ylabel in zip(axes, PANEL_LABELS, strict=True):
            ax.set_ylabel(ylabel, fontsize=9)
            ax.grid(True, color="#e9ecef", lw=0.8)
            ax.tick_params(labelsize=8)
            ax.yaxis.set_major_locator(MaxNLocator(5))
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        frame = _FRAMES.frame = (fig, axes)
        return frame
    fig, axes = frame
    for ax in axes:
        for artist in [*ax.lines, *ax.collections, *ax.texts]:
            artist.remove()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for legend in list(fig.legends):
        legend.remove()
    return frame


# ---- HTML: the data of each page (the markup is in pipeline/report/templates/timesync_*.html) ----
GENERATOR = "pipeline.timesync.report"
DROP_MARK = 0.3  # an NBR drop this large is printed bold: a likely disturbance to check
CHIP_SIZES = ("s", "m", "l", "xl")  # the filmstrip's size buttons (pixels in the page script)
INDEX_LABELS_SHORT = ("NBR", "NDVI", "TCB", "TCG", "TCW")  # observation table headers
INDEX_DIGITS = {"nbr": 3, "ndvi": 3, "tcb": 0, "tcg": 0, "tcw": 0}
TOP_COLUMNS = ("plots", "plots_complete", "plots_failed", "written", "fill", "cloudy", "failed", "unusable")


def _num(value: float, digits: int = 0) -> str:
    """A table number: fixed decimals, an en dash for a missing (NaN) value."""
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Card:
    """A figure in the row of cards at the top of a page; ``tone`` is "", "warn" or "bad"."""

    label: str
    value: int | str
    tone: str = ""


@dataclass(frozen=True)
class Sparkline:
    """The geometry of a plot's NBR sparkline, in whole SVG pixels (the index template draws it)."""

    width: int
    height: int
    zero_y: int | None  # the NBR = 0 line, when the scale spans 0
    line: str  # polyline points of the clear observations ("" when fewer than two)
    dots: list[tuple[str, str]]  # (kind, path data): "clear", "cloudy", "snow"; kinds without a dot left out


def sparkline(rep: PlotReport, ctx: _Context, width: int = 220, height: int = 30) -> Sparkline:
    """NBR over the project's years: clear observations joined (with dots), cloudy ones red
    dots, snow-like ones light blue dots. Whole-pixel coordinates with repeats dropped, and
    one path per kind of dot, so a plot with hundreds of observations stays a few kilobytes."""
    span = max(ctx.t1 - ctx.t0, 1e-9)
    rng = max(ctx.nbr_hi - ctx.nbr_lo, 1e-9)

    def xy(t: float, v: float) -> tuple[int, int]:
        v = min(max(v, ctx.nbr_lo), ctx.nbr_hi)
        return round(2 + (t - ctx.t0) / span * (width - 4)), round(
            height - 2 - (v - ctx.nbr_lo) / rng * (height - 4)
        )

    zero_y = xy(ctx.t0, 0.0)[1] if ctx.nbr_lo < 0 < ctx.nbr_hi else None
    line = [xy(t, v) for t, v in rep.clear_nbr()]
    line = [p for i, p in enumerate(line) if i == 0 or p != line[i - 1]]
    others = [(o, o.indices["nbr"]) for o in rep.rows if not o.clear]
    dots = {
        "clear": line,
        "cloudy": [xy(o.t, v) for o, v in others if o.cloudy and not math.isnan(v)],
        "snow": [xy(o.t, v) for o, v in others if o.snow and not math.isnan(v)],
    }
    return Sparkline(
        width, height, zero_y,
        line=" ".join(f"{x},{y}" for x, y in line) if len(line) > 1 else "",
        dots=[
            (kind, "".join(f"M{x} {y}h0" for x, y in dict.fromkeys(points)))
            for kind, points in dots.items() if points
        ],
    )  # fmt: skip


@dataclass(frozen=True)
class CountCell:
    """A count column of the index table; ``tone`` "zero" greys a 0, "hot" marks a problem."""

    col: str
    n: int
    tone: str


def _count(col: str, n: int, hot: bool = False) -> CountCell:
    return CountCell(col, n, "zero" if n == 0 else ("hot" if hot else ""))


@dataclass(frozen=True)
class Drop:
    """The largest NBR drop of a plot as the index shows it (bold from DROP_MARK)."""

    text: str  # 2 decimals
    sort: str  # 4 decimals, what the column sorts by
    year: int
    strong: bool


@dataclass(frozen=True)
class IndexRow:
    plot_id: str
    href: str
    search: str  # what the filter box matches (lower case)
    problem: bool
    status: str
    hv: str
    counts: list[CountCell]
    first: str  # year, "" when the plot has no written observation
    last: str
    drop: Drop | None
    spark: Sparkline


def index_context(reports: list[PlotReport], ctx: _Context) -> dict[str, Any]:
    """What the project's index page shows (template timesync_index.html)."""
    pid = ctx.project_id
    page = report_index(pid)
    s = ctx.summary()
    years = f"{s['first_year']}–{s['last_year']}" if s["first_year"] is not None else "–"
    cards = [
        Card("plots", s["plots"]),
        Card("complete", s["plots_complete"]),
        Card("plots with failures", s["plots_failed"], "bad" if s["plots_failed"] else ""),
        Card("incomplete", s["plots_incomplete"], "warn" if s["plots_incomplete"] else ""),
        Card("observations written", s["written"]),
        Card("skipped for fill", s["fill"]),
        Card("cloudy (qa 1)", s["cloudy"], "warn" if s["cloudy"] else ""),
        Card("snow? (qa 0)", s["snow"]),
        Card("failed", s["failed"], "bad" if s["failed"] else ""),
        Card("unusable catalogue items", s["unusable"], "bad" if s["unusable"] else ""),
        Card("years", years),
    ]
    rows = []
    for r in reports:
        drop = r.nbr_drop
        rows.append(
            IndexRow(
                plot_id=r.plot_id, href=rel_link(page, plot_page(pid, r.plot_id)),
                search=f"{r.plot_id} {r.status} {r.hv}".lower(), problem=r.problem, status=r.status, hv=r.hv,
                counts=[
                    _count("obs", r.n_catalogue), _count("written", len(r.rows)), _count("fill", len(r.fill)),
                    _count("cloudy", r.cloudy), _count("snow", r.snow),
                    _count("failed", len(r.failed), hot=True), _count("pending", len(r.pending), hot=True),
                    _count("unusable", len(r.unusable), hot=True),
                ],
                first="" if r.first_year is None else str(r.first_year),
                last="" if r.last_year is None else str(r.last_year),
                drop=None if drop is None else Drop(f"{drop[0]:.2f}", f"{drop[0]:.4f}", drop[1], drop[0] >= DROP_MARK),
                spark=sparkline(r, ctx),
            )
        )  # fmt: skip
    return {
        "title": f"TimeSync QA · project {pid}",
        "generator": GENERATOR,
        "project_id": pid,
        "project_dir": ctx.project.store.url,
        "generated": ctx.generated,
        "cards": cards,
        "rows": rows,
        "ingest": [(rel_link(page, n), n[:4]) for n in ctx.ingest],
        "t0": ctx.t0,
        "t1": ctx.t1,
        "nbr_lo": f"{ctx.nbr_lo:.2f}",
        "nbr_hi": f"{ctx.nbr_hi:.2f}",
        "snow_ndsi": SNOW_NDSI,
        "drop_mark": DROP_MARK,
    }


def index_html(reports: list[PlotReport], ctx: _Context) -> str:
    return report_frame.render("timesync_index.html", **index_context(reports, ctx))


@dataclass(frozen=True)
class Chip:
    """One observation in the plot page's filmstrip."""

    key: str
    qa: int
    cloudy: bool
    snow: bool
    fill_band: bool  # a band is fill at the plot pixel
    src: dict[str, str]  # composite kind -> chip link, in KINDS order
    day: str
    sensor: str
    doy: str  # 3 digits
    files: list[tuple[str, str]]  # (label, link): the observation's CSV and chips


@dataclass(frozen=True)
class ObsLine:
    """One row of the plot page's observation table."""

    key: str
    cloudy: bool
    snow: bool
    day: str
    doy: str
    sensor: str
    hv: str
    qa: int
    bands: list[tuple[int, bool]]  # (value, is fill)
    indices: list[str]  # NBR, NDVI, TCB, TCG, TCW, formatted
    csv: str


@dataclass(frozen=True)
class Neighbour:
    """The previous or next plot of the project, for a plot page's navigation."""

    href: str
    plot_id: str


@dataclass(frozen=True)
class FailedObs:
    key: str
    attempts: str
    error: str


def plot_context(rep: PlotReport, ctx: _Context, prev_id: str | None, next_id: str | None) -> dict[str, Any]:
    """What a plot's page shows (template timesync_plot.html)."""
    pid, plot_id = rep.plot.project_id, rep.plot_id
    page = plot_page(pid, plot_id)

    def link(target: str) -> str:
        return rel_link(page, target)

    cards = [
        Card("in catalogue", rep.n_catalogue),
        Card("written", len(rep.rows)),
        Card("skipped for fill", len(rep.fill)),
        Card("cloudy (qa 1)", rep.cloudy, "warn" if rep.cloudy else ""),
        Card("snow? (qa 0)", rep.snow),
        Card("failed", len(rep.failed), "bad" if rep.failed else ""),
        Card("pending", len(rep.pending), "warn" if rep.pending else ""),
        Card("unusable items", len(rep.unusable), "bad" if rep.unusable else ""),
    ]
    drop = rep.nbr_drop
    files = [("series CSV", link(layout.series_csv(pid, plot_id)))] if rep.series else []
    if rep.rows:
        files += [(f"{k} chips", link(layout.chip_dir(k, pid, plot_id)) + "/") for k in layout.COMPOSITE_DIRS]
    files.append(("trajectory figure", link(plot_figure(pid, plot_id))))
    years: dict[int, list[Chip]] = {}
    lines = []
    for o in rep.rows:
        src = {k: link(layout.chip_png(k, pid, plot_id, o.key)) for k in KINDS}
        csv_link = link(layout.obs_csv(pid, plot_id, o.key))
        years.setdefault(o.year, []).append(
            Chip(
                o.key, o.qa, o.cloudy, o.snow, fill_band=o.partial_fill, src=src, day=o.day, sensor=o.sensor,
                doy=f"{o.doy:03d}", files=[("csv", csv_link), *((k, src[k]) for k in layout.COMPOSITE_DIRS)],
            )
        )  # fmt: skip
        lines.append(
            ObsLine(
                o.key, o.cloudy, o.snow, o.day, f"{o.doy:03d}", o.sensor, o.hv, o.qa,
                bands=[(v, v == FILL_REFLECTANCE) for v in o.values],
                indices=[_num(o.indices[k], d) for k, d in INDEX_DIGITS.items()], csv=csv_link,
            )
        )  # fmt: skip
    return {
        "title": f"Plot {plot_id} · project {pid} · TimeSync QA",
        "generator": GENERATOR,
        "project_id": pid,
        "plot_id": plot_id,
        "status": rep.status,
        "up": link(report_index(pid)),
        "prev": None if prev_id is None else Neighbour(link(plot_page(pid, prev_id)), prev_id),
        "next": None if next_id is None else Neighbour(link(plot_page(pid, next_id)), next_id),
        "cards": cards,
        "x": rep.plot.x,
        "y": rep.plot.y,
        "hv": rep.hv or "–",
        "sensors": rep.sensors or "–",
        "drop": "–" if drop is None else f"{drop[0]:.2f} ({drop[1]})",
        "files": files,
        "failed": [
            FailedObs(str(f.get("key", "?")), str(f.get("attempts", "?")), str(f.get("error", "")))
            for f in rep.failed
        ],
        "unusable": [(u.id or "<no id>", u.describe()) for u in rep.unusable],
        "pending": rep.pending,
        "fill": rep.fill,
        "n_rows": len(rep.rows),
        "kinds": KINDS,
        "sizes": CHIP_SIZES,
        "years": years,
        "figure": link(plot_figure(pid, plot_id)),
        "snow_ndsi": SNOW_NDSI,
        "band_heads": [*BANDS, *INDEX_LABELS_SHORT],
        "observations": lines,
    }


def plot_page_html(rep: PlotReport, ctx: _Context, prev_id: str | None, next_id: str | None) -> str:
    return report_frame.render("timesync_plot.html", **plot_context(rep, ctx, prev_id, next_id))


@dataclass(frozen=True)
class TopRow:
    """A project on the top index; ``cells`` None when its report is not written yet."""

    project_id: str
    href: str
    cells: list[str] | None  # TOP_COLUMNS, "–" for a missing figure
    generated: str


def top_context(project: Project, current: dict[str, Any]) -> dict[str, Any]:
    """The projects of the plot file: a link and figures for each whose report exists
    (``current`` is the summary of the project being written)."""
    rows = []
    for pid in project.project_ids():
        summary: dict[str, Any] | None = current
        if pid != current["project_id"]:
            try:
                summary = json.loads(project.store.read_text(report_summary(pid)))
            except FileNotFoundError:
                summary = None
        href = rel_link(top_index(), report_index(pid))
        if summary is None:
            rows.append(TopRow(pid, href, None, ""))
            continue
        cells = ["–" if summary.get(k) is None else str(summary.get(k)) for k in TOP_COLUMNS]
        rows.append(TopRow(pid, href, cells, str(summary.get("generated", "now"))))
    return {"title": "TimeSync QA", "generator": GENERATOR, "project_dir": project.store.url, "rows": rows}


def top_index_html(project: Project, current: dict[str, Any]) -> str:
    return report_frame.render("timesync_top.html", **top_context(project, current))


# ---- command line -------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.timesync.report --plot-file ... --project-dir ... --catalog ...``
    (the run's own parameters: they locate its catalogue-search state)."""
    from pipeline.config import archive, output
    from pipeline.timesync.engine import RunOptions
    from targets.store import Store

    ap = argparse.ArgumentParser(prog="python -m pipeline.timesync.report", description=main.__doc__)
    ap.add_argument("--plot-file", required=True)
    ap.add_argument("--project-dir", required=True)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--region", default="CU")
    ap.add_argument("--datetime", default="1984-01-01/..")
    ap.add_argument("--asset-href", default="s3", choices=("s3", "href"))
    ap.add_argument("--collection", default="landsat-c2ard-sr")
    ap.add_argument("--chip-size", type=int, default=255)
    ap.add_argument("--project-id", action="append", help="only this project id (repeatable; default: all)")
    a = ap.parse_args(argv)
    opts = RunOptions(
        a.plot_file, a.project_dir, a.catalog, a.region, a.datetime, a.asset_href, a.collection, a.chip_size
    )
    project = Project(
        opts, store=Store(opts.project_dir, output().s3_options()), access=archive().access(a.asset_href)
    )
    try:
        for pid in a.project_id or project.project_ids():
            started = time.perf_counter()
            files = write_report(project, pid)
            print(
                f"project {pid}: {len(files)} files, {project.store.uri(report_index(pid))} ({time.perf_counter() - started:.1f} s)"
            )
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
