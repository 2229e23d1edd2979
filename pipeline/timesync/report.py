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
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import html
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

from pipeline.errors import PipelineError
from pipeline.failures import UnusableItem, unique_items
from pipeline.timesync import layout
from pipeline.timesync.engine import Project
from pipeline.timesync.plots import Plot
from pipeline.timesync.recipe import FILL_REFLECTANCE, SPECTRAL_COLUMNS, TC_COEFFICIENTS

REPORT = "report"
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")  # series columns, recipe order
KINDS = ("b743", "tc", "b432")  # filmstrip composites; b743 is shown first


# ---- layout of the report ------------------------------------------------------------
def top_index() -> str:
    return f"{REPORT}/index.html"


def report_dir(project_id: str) -> str:
    return f"{REPORT}/{layout.project_dir(project_id)}"


def report_index(project_id: str) -> str:
    """The project's index page: written last, so it marks a finished report."""
    return f"{report_dir(project_id)}/index.html"


def report_summary(project_id: str) -> str:
    return f"{report_dir(project_id)}/summary.json"


def plot_page(project_id: str, plot_id: str) -> str:
    return f"{report_dir(project_id)}/plot_{plot_id}.html"


def figure_dir(project_id: str) -> str:
    return f"{report_dir(project_id)}/img"


def plot_figure(project_id: str, plot_id: str) -> str:
    return f"{figure_dir(project_id)}/plot_{plot_id}.png"


def figure_manifest(project_id: str) -> str:
    """What each trajectory figure was drawn from (a digest per plot): a later report draws
    only the figures whose data changed."""
    return f"{figure_dir(project_id)}/figures.json"


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
        suffix = f"_prj_{project_id}_region_spectrals.csv"
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


# ---- HTML ---------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def sparkline(rep: PlotReport, ctx: _Context, width: int = 220, height: int = 30) -> str:
    """An inline SVG of NBR over the project's years: clear observations joined (with dots),
    cloudy ones red dots, snow-like ones light blue dots. Whole-pixel coordinates with
    repeats dropped, and one path per kind of dot, so a plot with hundreds of observations
    stays a few kilobytes."""
    span = max(ctx.t1 - ctx.t0, 1e-9)
    rng = max(ctx.nbr_hi - ctx.nbr_lo, 1e-9)

    def xy(t: float, v: float) -> tuple[int, int]:
        v = min(max(v, ctx.nbr_lo), ctx.nbr_hi)
        return round(2 + (t - ctx.t0) / span * (width - 4)), round(
            height - 2 - (v - ctx.nbr_lo) / rng * (height - 4)
        )

    def dots(points: list[tuple[int, int]], cls: str) -> str:
        unique = list(dict.fromkeys(points))
        return (
            f'<path class="{cls}" d="' + "".join(f"M{x} {y}h0" for x, y in unique) + '"/>' if unique else ""
        )

    parts = [
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="NBR over time">'
    ]
    if ctx.nbr_lo < 0 < ctx.nbr_hi:
        _, y0 = xy(ctx.t0, 0.0)
        parts.append(f'<path class="zero" d="M0 {y0}H{width}"/>')
    line = [xy(t, v) for t, v in rep.clear_nbr()]
    line = [p for i, p in enumerate(line) if i == 0 or p != line[i - 1]]
    if len(line) > 1:
        parts.append('<polyline points="' + " ".join(f"{x},{y}" for x, y in line) + '"/>')
    parts.append(dots(line, "clear"))
    others = [(o, o.indices["nbr"]) for o in rep.rows if not o.clear]
    parts.append(dots([xy(o.t, v) for o, v in others if o.cloudy and not math.isnan(v)], "cloudy"))
    parts.append(dots([xy(o.t, v) for o, v in others if o.snow and not math.isnan(v)], "snow"))
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
:root{--fg:#212529;--muted:#6c757d;--line:#dee2e6;--bg:#f8f9fa;--accent:#1864ab;--cloud:#e03131;--warn:#f08c00;--ok:#2b8a3e}
*{box-sizing:border-box}
body{margin:0;font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:#fff}
header.top{background:#1f2933;color:#fff;padding:10px 20px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
header.top h1{font-size:17px;margin:0;font-weight:600}
header.top .crumbs a{color:#a5d8ff;text-decoration:none}
header.top .meta{color:#adb5bd;font-size:12px;margin-left:auto}
main{padding:14px 20px 40px}
a{color:var(--accent)}
h2{font-size:15px;margin:22px 0 8px;font-weight:600}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:4px 0 12px}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 12px;min-width:104px;background:var(--bg)}
.card b{display:block;font-size:19px;font-weight:600}
.card span{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.04em}
.card.bad b{color:var(--cloud)} .card.warn b{color:var(--warn)}
.toolbar{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin:8px 0;color:var(--muted)}
.toolbar input[type=search]{padding:4px 8px;border:1px solid var(--line);border-radius:4px;min-width:220px}
table.grid{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
table.grid th,table.grid td{padding:3px 8px;border-bottom:1px solid #edf0f2;text-align:right;white-space:nowrap}
table.grid th{position:sticky;top:0;background:#f1f3f5;font-weight:600;font-size:12px;border-bottom:1px solid var(--line);z-index:1}
table.grid th.sortable{cursor:pointer;user-select:none}
table.grid th.sortable:after{content:" ⇅";color:#adb5bd;font-size:10px}
table.grid th[aria-sort=ascending]:after{content:" ▲";color:var(--accent)}
table.grid th[aria-sort=descending]:after{content:" ▼";color:var(--accent)}
table.grid td.l,table.grid th.l{text-align:left}
table.grid tbody tr:nth-child(even){background:#fafbfc}
table.grid tbody tr:hover{background:#e7f5ff}
table.grid tbody tr.plot{cursor:pointer}
table.grid tbody tr.plot[data-problem="1"] td:first-child{box-shadow:inset 3px 0 0 #e03131}
td.zero{color:#ced4da}
td.hot{color:var(--cloud);font-weight:600}
td.strong{font-weight:700} td .sub{color:var(--muted);font-weight:400;font-size:11px}
.pill{display:inline-block;padding:0 7px;border-radius:9px;font-size:11px;font-weight:600;line-height:17px}
.pill.complete{background:#d3f9d8;color:#2b8a3e}.pill.failed{background:#ffe3e3;color:#c92a2a}.pill.incomplete{background:#fff3bf;color:#e67700}
svg.spark{display:block}
svg.spark polyline{fill:none;stroke:#0b7285;stroke-width:1.3;stroke-linejoin:round}
svg.spark path{stroke-linecap:round;fill:none}
svg.spark path.clear{stroke:#0b7285;stroke-width:2.6}
svg.spark path.cloudy{stroke:var(--cloud);stroke-width:3.8}
svg.spark path.snow{stroke:#74c0fc;stroke-width:3.8}
svg.spark path.zero{stroke:#dee2e6;stroke-width:1}
.legend{color:var(--muted);font-size:12px}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;vertical-align:middle;margin:0 3px 0 8px}
.seg{display:inline-flex;border:1px solid #adb5bd;border-radius:5px;overflow:hidden}
.seg button{border:0;background:#fff;padding:4px 11px;font:inherit;cursor:pointer;border-right:1px solid #dee2e6}
.seg button:last-child{border-right:0}
.seg button[aria-pressed=true]{background:var(--accent);color:#fff}
.filmstrip{display:flex;flex-wrap:wrap;gap:12px 16px;align-items:flex-start}
.filmstrip .year{display:flex;flex-wrap:wrap;gap:6px;align-items:stretch}
.filmstrip .yr{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:700;color:#343a40;font-size:12px;border-right:3px solid #adb5bd;padding:4px 2px;text-align:right}
figure.chip{position:relative;margin:0;width:calc(var(--chip) + 6px);padding:2px;border:1px solid var(--line);border-radius:5px;background:#fff}
figure.chip:hover{border-color:var(--accent)}
figure.chip .frame{display:block;width:var(--chip);height:var(--chip);background:#000;line-height:0;position:relative}
figure.chip img{width:100%;height:100%;display:block}
.big figure.chip img{image-rendering:pixelated}
figure.chip .frame:after{content:"";position:absolute;left:50%;top:50%;width:9px;height:9px;margin:-5px 0 0 -5px;border:1px solid #ffd43b;box-shadow:0 0 0 1px rgba(0,0,0,.55);pointer-events:none}
.nomark figure.chip .frame:after{display:none}
figure.chip.cloudy{border:2px solid var(--cloud);padding:1px;background:#fff5f5}
figure.chip.snow{border:2px solid #74c0fc;padding:1px}
figure.chip .badge{position:absolute;top:6px;left:6px;background:var(--cloud);color:#fff;font:700 10px/1 system-ui,sans-serif;padding:3px 5px;border-radius:3px;letter-spacing:.04em;pointer-events:none}
figure.chip .badge.snow{background:#1c7ed6}
figure.chip .badge.fillband{left:auto;right:6px;background:#495057}
figure.chip figcaption{padding:3px 2px 0;font-size:11.5px;line-height:1.35}
figure.chip figcaption .d{display:flex;justify-content:space-between;gap:4px}
figure.chip figcaption b{font-weight:600}
figure.chip figcaption .sub{color:var(--muted)}
figure.chip figcaption .files a{margin-left:4px;color:var(--muted);font-size:10.5px}
.flag{display:inline-block;padding:0 5px;border-radius:3px;font-size:10.5px;font-weight:700;color:#fff}
.flag.cloud{background:var(--cloud)} .flag.snow{background:#1c7ed6}
table.obs tr.snow td{background:#e7f5ff}
.hidecloudy figure.chip.cloudy{display:none}
.figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
table.obs td.cloudyq{color:var(--cloud);font-weight:700}
table.obs tr.cloudy td{background:#fff5f5}
table.obs td.fill{color:#868e96;text-decoration:line-through}
.nav{display:flex;gap:14px;align-items:center;margin-left:auto}
.nav a{color:#e9ecef;text-decoration:none;border:1px solid #495057;border-radius:4px;padding:2px 9px}
.nav a:hover{background:#343a40}
.nav .off{color:#6c757d;border:1px solid #343a40;border-radius:4px;padding:2px 9px}
.note{color:var(--muted)}
ul.fail{margin:4px 0;padding-left:18px} ul.fail li{margin:2px 0} ul.fail code{color:#c92a2a}
.keys{font-size:11px;color:var(--muted)}
kbd{border:1px solid #ced4da;border-bottom-width:2px;border-radius:3px;padding:0 4px;font-size:11px;background:#f8f9fa}
"""

_INDEX_JS = """
(function(){
  var table=document.getElementById('plots'), body=table.tBodies[0];
  var heads=table.tHead.rows[0].cells;
  function val(row,i,num){var c=row.cells[i],v=c.getAttribute('data-v');if(v===null)v=c.textContent.trim();
    if(!num)return v;var n=parseFloat(v);return isNaN(n)?null:n;}
  Array.prototype.forEach.call(heads,function(th,i){
    if(!th.classList.contains('sortable'))return;
    th.addEventListener('click',function(){
      var asc=th.getAttribute('aria-sort')!=='ascending', num=th.getAttribute('data-type')==='num';
      Array.prototype.forEach.call(heads,function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=val(a,i,num),y=val(b,i,num);
        if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
        var r=num?x-y:String(x).localeCompare(String(y),undefined,{numeric:true});return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  var q=document.getElementById('filter'), prob=document.getElementById('problems'), shown=document.getElementById('shown');
  function apply(){var t=q.value.trim().toLowerCase(),n=0;
    Array.prototype.forEach.call(body.rows,function(r){
      var ok=(!t||r.getAttribute('data-search').indexOf(t)>=0)&&(!prob.checked||r.getAttribute('data-problem')==='1');
      r.hidden=!ok;if(ok)n++;});
    shown.textContent=n;}
  q.addEventListener('input',apply);prob.addEventListener('change',apply);
  Array.prototype.forEach.call(body.rows,function(r){r.addEventListener('click',function(e){
    if(e.target.closest('a'))return;window.location.href=r.getAttribute('data-href');});});
})();
"""

_PLOT_JS = """
(function(){
  var KINDS=['b743','tc','b432'], SIZES={s:96,m:160,l:255,xl:510}, store={};
  try{store=window.localStorage||{};}catch(e){}
  function get(k,d){try{return store.getItem?store.getItem(k)||d:d;}catch(e){return d;}}
  function put(k,v){try{if(store.setItem)store.setItem(k,v);}catch(e){}}
  var strip=document.getElementById('filmstrip');
  function setKind(kind){
    Array.prototype.forEach.call(strip.querySelectorAll('img[data-b743]'),function(img){
      var src=img.getAttribute('data-'+kind);img.src=src;img.parentNode.href=src;
      img.alt=img.alt.replace(/(b743|tc|b432)$/,kind);});
    Array.prototype.forEach.call(document.querySelectorAll('#kinds button'),function(b){
      b.setAttribute('aria-pressed',String(b.getAttribute('data-kind')===kind));});
    strip.setAttribute('data-kind',kind);put('timesync-report-kind',kind);}
  function setSize(size){strip.style.setProperty('--chip',SIZES[size]+'px');
    strip.classList.toggle('big',SIZES[size]>255);
    Array.prototype.forEach.call(document.querySelectorAll('#sizes button'),function(b){
      b.setAttribute('aria-pressed',String(b.getAttribute('data-size')===size));});
    put('timesync-report-size',size);}
  Array.prototype.forEach.call(document.querySelectorAll('#kinds button'),function(b){
    b.addEventListener('click',function(){setKind(b.getAttribute('data-kind'));});});
  Array.prototype.forEach.call(document.querySelectorAll('#sizes button'),function(b){
    b.addEventListener('click',function(){setSize(b.getAttribute('data-size'));});});
  var hc=document.getElementById('hidecloudy'),mk=document.getElementById('marker');
  hc.addEventListener('change',function(){strip.classList.toggle('hidecloudy',hc.checked);});
  mk.addEventListener('change',function(){strip.classList.toggle('nomark',!mk.checked);});
  var k=get('timesync-report-kind','b743');if(k!=='b743'&&KINDS.indexOf(k)>=0)setKind(k);
  var s=get('timesync-report-size','m');if(s!=='m'&&SIZES[s])setSize(s);
  document.addEventListener('keydown',function(e){
    if(e.target.tagName==='INPUT'||e.ctrlKey||e.metaKey||e.altKey)return;
    var i='123'.indexOf(e.key);if(i>=0){setKind(KINDS[i]);return;}
    var nav={ArrowLeft:'prev',ArrowRight:'next',u:'up'}[e.key];
    if(nav){var a=document.getElementById(nav);if(a&&a.href)window.location.href=a.href;}
  });
})();
"""


def _page(title: str, header: str, body: str, script: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="pipeline.timesync.report">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f'<header class="top">{header}</header>\n<main>\n{body}\n</main>\n'
        + (f"<script>{script}</script>\n" if script else "")
        + "</body></html>\n"
    )


def _cards(items: list[tuple[str, Any, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card {cls}"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v, cls in items)
        + "</div>"
    )


def index_html(reports: list[PlotReport], ctx: _Context) -> str:
    pid = ctx.project_id
    page = report_index(pid)
    s = ctx.summary()
    years = f"{s['first_year']}–{s['last_year']}" if s["first_year"] is not None else "–"
    header = (
        f'<h1>TimeSync QA · project {_e(pid)}</h1><span class="crumbs"><a href="../index.html">all projects</a></span>'
        f'<span class="meta">{_e(ctx.project.store.url)} · generated {_e(ctx.generated)}</span>'
    )
    cards = _cards([
        ("plots", s["plots"], ""),
        ("complete", s["plots_complete"], ""),
        ("plots with failures", s["plots_failed"], "bad" if s["plots_failed"] else ""),
        ("incomplete", s["plots_incomplete"], "warn" if s["plots_incomplete"] else ""),
        ("observations written", s["written"], ""),
        ("skipped for fill", s["fill"], ""),
        ("cloudy (qa 1)", s["cloudy"], "warn" if s["cloudy"] else ""),
        ("snow? (qa 0)", s["snow"], ""),
        ("failed", s["failed"], "bad" if s["failed"] else ""),
        ("unusable catalogue items", s["unusable"], "bad" if s["unusable"] else ""),
        ("years", years, ""),
    ])  # fmt: skip
    rows = []
    for r in reports:
        href = rel_link(page, plot_page(pid, r.plot_id))
        drop = r.nbr_drop
        problem = r.problem
        search = f"{r.plot_id} {r.status} {r.hv}".lower()
        rows.append(
            f'<tr class="plot" data-plot="{_e(r.plot_id)}" data-href="{href}" data-search="{_e(search)}" data-problem="{int(problem)}">'
            f'<td class="l"><a href="{href}">{_e(r.plot_id)}</a></td>'
            f'<td class="l" data-col="status" data-v="{_e(r.status)}"><span class="pill {r.status}">{_e(r.status)}</span></td>'
            f'<td class="l">{_e(r.hv)}</td>'
            + _count_td("obs", r.n_catalogue)
            + _count_td("written", len(r.rows))
            + _count_td("fill", len(r.fill))
            + _count_td("cloudy", r.cloudy)
            + _count_td("snow", r.snow)
            + _count_td("failed", len(r.failed), hot=True)
            + _count_td("pending", len(r.pending), hot=True)
            + _count_td("unusable", len(r.unusable), hot=True)
            + f'<td data-col="first" data-v="{_opt(r.first_year)}">{_opt(r.first_year, "–")}</td>'
            f'<td data-col="last" data-v="{_opt(r.last_year)}">{_opt(r.last_year, "–")}</td>'
            + _drop_td(drop)
            + f'<td class="l">{sparkline(r, ctx)}</td></tr>'
        )
    ingest = (
        '<p class="note">Ingest files for the TimeSync server: '
        + ", ".join(f'<a href="{rel_link(page, n)}">{_e(n[:4])}</a>' for n in ctx.ingest)
        + "</p>"
        if ctx.ingest
        else '<p class="note">No ingest files yet (they are written once every plot of the project is done).</p>'
    )
    legend = (
        f'<span class="legend">NBR {ctx.t0}–{ctx.t1}, scale {ctx.nbr_lo:.2f} to {ctx.nbr_hi:.2f}:'
        '<span class="dot" style="background:#0b7285"></span>clear<span class="dot" style="background:#e03131"></span>cloudy'
        '<span class="dot" style="background:#74c0fc"></span>snow?</span>'
    )
    body = f"""{cards}
<div class="toolbar"><input type="search" id="filter" placeholder="filter: plot id, status, tile" aria-label="filter plots">
<label><input type="checkbox" id="problems"> only plots with failures, missing observations or unusable items</label>
<span><b id="shown">{len(reports)}</b> of {len(reports)} plots shown</span>{legend}</div>
<table class="grid" id="plots"><thead><tr>
<th class="l sortable" data-type="text">plot</th><th class="l sortable" data-type="text">status</th><th class="l sortable" data-type="text">tile hv</th>
<th class="sortable" data-type="num" title="observations in the catalogue search">obs</th>
<th class="sortable" data-type="num" title="observations written (CSV and three chips)">written</th>
<th class="sortable" data-type="num" title="skipped: the plot pixel is fill">fill</th>
<th class="sortable" data-type="num" title="written with qa = 1 at the plot pixel">cloudy</th>
<th class="sortable" data-type="num" title="written with qa = 0 but snow-like: NDSI ≥ {SNOW_NDSI}, bright nir and green">snow?</th>
<th class="sortable" data-type="num" title="failed in the last attempt">failed</th>
<th class="sortable" data-type="num" title="not yet written, fill or failed">pending</th>
<th class="sortable" data-type="num" title="catalogue items of the plot's tiles the run could not use">unusable</th>
<th class="sortable" data-type="num">first</th><th class="sortable" data-type="num">last</th>
<th class="sortable" data-type="num" title="largest NBR decrease between consecutive clear observations, and the year after it; bold from {DROP_MARK}">NBR drop</th>
<th class="l">NBR over time</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
{ingest}
<p class="keys">Click a row to open the plot; click a column header to sort. Clear = qa 0 and not snow-like.</p>"""
    return _page(f"TimeSync QA · project {pid}", header, body, _INDEX_JS)


DROP_MARK = 0.3  # an NBR drop this large is printed bold: a likely disturbance to check


def _drop_td(drop: tuple[float, int] | None) -> str:
    if drop is None:
        return '<td data-col="drop" data-v="">–</td>'
    value, year = drop
    text = f'{value:.2f} <span class="sub">{year}</span>'
    return f'<td data-col="drop" data-v="{value:.4f}" class="{"strong" if value >= DROP_MARK else ""}">{text}</td>'


def _count_td(col: str, n: int, hot: bool = False) -> str:
    cls = "zero" if n == 0 else ("hot" if hot else "")
    return f'<td class="{cls}" data-col="{col}" data-v="{n}">{n}</td>'


def _opt(value: Any, none: str = "") -> str:
    return none if value is None else str(value)


def plot_page_html(rep: PlotReport, ctx: _Context, prev_id: str | None, next_id: str | None) -> str:
    pid, plot_id = rep.plot.project_id, rep.plot_id
    page = plot_page(pid, plot_id)

    def link(target: str) -> str:
        return rel_link(page, target)

    def nav(name: str, label: str, other: str | None) -> str:
        if other is None:
            return f'<span class="off">{label}</span>'
        return f'<a id="{name}" href="{link(plot_page(pid, other))}" title="plot {_e(other)}">{label}</a>'

    header = (
        f'<h1>Plot {_e(plot_id)}</h1><span class="crumbs"><a href="../index.html">all projects</a> › '
        f'<a id="up" href="{link(report_index(pid))}">project {_e(pid)}</a></span>'
        f'<span class="pill {rep.status}">{_e(rep.status)}</span>'
        f'<span class="nav">{nav("prev", "← previous", prev_id)}{nav("next", "next →", next_id)}</span>'
    )
    facts = _cards([
        ("in catalogue", rep.n_catalogue, ""),
        ("written", len(rep.rows), ""),
        ("skipped for fill", len(rep.fill), ""),
        ("cloudy (qa 1)", rep.cloudy, "warn" if rep.cloudy else ""),
        ("snow? (qa 0)", rep.snow, ""),
        ("failed", len(rep.failed), "bad" if rep.failed else ""),
        ("pending", len(rep.pending), "warn" if rep.pending else ""),
        ("unusable items", len(rep.unusable), "bad" if rep.unusable else ""),
    ])  # fmt: skip
    drop = rep.nbr_drop
    where = (
        f'<p class="note">x {rep.plot.x}, y {rep.plot.y} (ARD Albers, m) · tile hv {_e(rep.hv or "–")} · '
        f"sensors {_e(rep.sensors or '–')} · largest NBR drop {'–' if drop is None else f'{drop[0]:.2f} ({drop[1]})'}</p>"
    )
    files = []
    if rep.series:
        files.append(f'<a href="{link(layout.series_csv(pid, plot_id))}">series CSV</a>')
    if rep.rows:
        files += [
            f'<a href="{link(layout.chip_dir(k, pid, plot_id))}/">{k} chips</a>'
            for k in layout.COMPOSITE_DIRS
        ]
    files.append(f'<a href="{link(plot_figure(pid, plot_id))}">trajectory figure</a>')
    files_html = f'<p class="note">Files: {" · ".join(files)}</p>'

    groups: dict[int, list[str]] = {}
    for o in rep.rows:
        srcs = {k: link(layout.chip_png(k, pid, plot_id, o.key)) for k in KINDS}
        badges = '<span class="badge">CLOUDY</span>' if o.cloudy else ""
        if o.snow:
            badges += '<span class="badge snow" title="qa 0 but snow-like (NDSI ≥ 0.4)">SNOW?</span>'
        if o.partial_fill:
            badges += '<span class="badge fillband" title="a band is fill (-2000) at the plot pixel">FILL BAND</span>'
        data = " ".join(f'data-{k}="{v}"' for k, v in srcs.items())
        file_links = f'<a href="{link(layout.obs_csv(pid, plot_id, o.key))}">csv</a>' + "".join(
            f'<a href="{srcs[k]}">{k}</a>' for k in layout.COMPOSITE_DIRS
        )
        flags = " cloudy" if o.cloudy else (" snow" if o.snow else "")
        groups.setdefault(o.year, []).append(
            f'<figure class="chip{flags}" data-key="{o.key}" data-qa="{o.qa}">'
            f'<a class="frame" href="{srcs["b743"]}">'
            f'<img src="{srcs["b743"]}" {data} width="255" height="255" loading="lazy" decoding="async" '
            f'alt="plot {_e(plot_id)} {o.key} b743"></a>{badges}'
            f'<figcaption><span class="d"><b>{_e(o.day)}</b><span class="sub">{_e(o.sensor)}</span></span>'
            f'<span class="d"><span class="sub">doy {o.doy:03d}</span><span class="files">{file_links}</span></span></figcaption></figure>'
        )
    strip = "\n".join(
        f'<div class="year" data-year="{y}"><div class="yr">{y}</div>{"".join(c)}</div>'
        for y, c in groups.items()
    )
    if not strip:
        strip = '<p class="note">No written observations: nothing to show.</p>'
    controls = (
        '<div class="toolbar"><span>composite</span><span class="seg" id="kinds">'
        + "".join(
            f'<button type="button" data-kind="{k}" aria-pressed="{str(k == "b743").lower()}" title="key {i + 1}">{k}</button>'
            for i, k in enumerate(KINDS)
        )
        + '</span><span>size</span><span class="seg" id="sizes">'
        + "".join(
            f'<button type="button" data-size="{s}" aria-pressed="{str(s == "m").lower()}">{s.upper()}</button>'
            for s in ("s", "m", "l", "xl")
        )
        + '</span><label><input type="checkbox" id="hidecloudy"> hide cloudy</label>'
        '<label><input type="checkbox" id="marker" checked> plot-pixel marker</label>'
        '<span class="keys"><kbd>1</kbd><kbd>2</kbd><kbd>3</kbd> composite · <kbd>←</kbd><kbd>→</kbd> plot · <kbd>u</kbd> project</span></div>'
    )
    problems = ""
    if rep.failed:
        items = "".join(
            f"<li><b>{_e(f.get('key', '?'))}</b> (attempts: {_e(f.get('attempts', '?'))}): <code>{_e(f.get('error', ''))}</code></li>"
            for f in rep.failed
        )
        problems += (
            f'<h2>Failed observations ({len(rep.failed)})</h2><ul class="fail" id="failed">{items}</ul>'
            '<p class="note">Rerun the same pipeline command to retry only these.</p>'
        )
    if rep.unusable:
        items = "".join(
            f"<li><b>{_e(u.id or '<no id>')}</b>: <code>{_e(u.describe())}</code></li>" for u in rep.unusable
        )
        problems += (
            f'<h2>Catalogue items that could not be used ({len(rep.unusable)})</h2><ul class="fail" id="unusable">{items}</ul>'
            '<p class="note">Their acquisitions are missing from this plot. Fix the catalogue and rerun the pipeline command: '
            "the searches are repeated and the items picked up.</p>"
        )
    if rep.pending:
        problems += f'<h2>Not yet written ({len(rep.pending)})</h2><p class="note" id="pending">{_e(", ".join(rep.pending))}</p>'
    fill = (
        f'<p class="note" id="fill">Skipped for fill at the plot pixel ({len(rep.fill)}): {_e(", ".join(rep.fill))}</p>'
        if rep.fill
        else ""
    )
    figure = link(plot_figure(pid, plot_id))
    explain = (
        "Lines join clear observations (qa 0); <b>×</b> on a dotted line: cloudy (qa 1); <b>○</b>: snow-like with qa 0 "
        f"(NDSI ≥ {SNOW_NDSI}); ticks under the last panel: observations without a row (fill, failed, pending). "
        "NBR = (nir − swir2)/(nir + swir2), NDVI = (nir − red)/(nir + red), left out where a band is negative "
        "(water, shadow) or fill; tasseled cap from the six bands with the recipe's coefficients. "
        "The time axis is the project's, the same on every plot page."
    )
    body = f"""{facts}{where}{files_html}{problems}
<h2>Chips ({len(rep.rows)}, by date)</h2>
{controls}
<div class="filmstrip" id="filmstrip" data-kind="b743" style="--chip:160px">
{strip}
</div>
<h2>Spectral trajectories</h2>
<p class="legend">{explain}</p>
<div class="figure"><a href="{figure}"><img id="trajectories" src="{figure}" alt="spectral trajectories of plot {_e(plot_id)}" width="1080" height="740"></a></div>
<h2>Observations</h2>
{fill}
{_obs_table(rep, link)}"""
    return _page(f"Plot {plot_id} · project {pid} · TimeSync QA", header, body, _PLOT_JS)


def _obs_table(rep: PlotReport, link: Callable[[str], str]) -> str:
    pid, plot_id = rep.plot.project_id, rep.plot_id
    head = "".join(f"<th>{h}</th>" for h in (*BANDS, "NBR", "NDVI", "TCB", "TCG", "TCW"))
    rows = []
    for o in rep.rows:
        ind = o.indices
        bands = "".join(f'<td class="{"fill" if v == FILL_REFLECTANCE else ""}">{v}</td>' for v in o.values)
        idx = "".join(
            f"<td>{_num(ind[k], 3 if k in ('nbr', 'ndvi') else 0)}</td>"
            for k in ("nbr", "ndvi", "tcb", "tcg", "tcw")
        )
        flag = (
            '<span class="flag cloud">cloudy</span>'
            if o.cloudy
            else ('<span class="flag snow">snow?</span>' if o.snow else "")
        )
        rows.append(
            f'<tr class="obs{" cloudy" if o.cloudy else (" snow" if o.snow else "")}" data-key="{o.key}">'
            f'<td class="l">{_e(o.day)}</td><td>{o.doy:03d}</td><td class="l">{_e(o.sensor)}</td><td class="l">{_e(o.hv)}</td>'
            f'<td class="{"cloudyq" if o.cloudy else ""}">{o.qa}</td><td class="l">{flag}</td>{bands}{idx}'
            f'<td class="l"><a href="{link(layout.obs_csv(pid, plot_id, o.key))}">csv</a></td></tr>'
        )
    return (
        '<table class="grid obs"><thead><tr><th class="l">date</th><th>doy</th><th class="l">sensor</th><th class="l">hv</th><th>qa</th>'
        f'<th class="l">flag</th>{head}<th class="l">file</th></tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def top_index_html(project: Project, current: dict[str, Any]) -> str:
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
            rows.append(
                f'<tr><td class="l">{_e(pid)}</td><td class="l note" colspan="9">report not written yet</td></tr>'
            )
            continue

        def cell(k: str, summary: dict[str, Any] = summary) -> str:
            v = summary.get(k)
            return f"<td>{'–' if v is None else _e(v)}</td>"

        rows.append(
            f'<tr class="project" data-project="{_e(pid)}"><td class="l"><a href="{href}">{_e(pid)}</a></td>'
            + "".join(
                cell(k)
                for k in ("plots", "plots_complete", "plots_failed", "written", "fill", "cloudy", "failed")
            )
            + cell("unusable")
            + f'<td class="l note">{_e(summary.get("generated", "now"))}</td></tr>'
        )
    header = f'<h1>TimeSync QA</h1><span class="meta">{_e(project.store.url)}</span>'
    body = (
        '<table class="grid" style="width:auto"><thead><tr><th class="l">project</th><th>plots</th><th>complete</th>'
        "<th>with failures</th><th>written</th><th>fill</th><th>cloudy</th><th>failed</th><th>unusable items</th>"
        '<th class="l">report generated</th></tr></thead>'
        "<tbody>" + "".join(rows) + "</tbody></table>"
        '<p class="note">Figures are those of each project\'s last report; open a project for its plots.</p>'
    )
    return _page("TimeSync QA", header, body)


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
