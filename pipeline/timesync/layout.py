"""Every output and state name of a TimeSync project, in one place.

Outputs follow ``shared/spec/timesync.md``; ``YYYY_DDD`` is year and zero-padded day of
year. Pipeline state (catalogue searches, fill records, manifests) lives under
``_state/`` in the project directory, so an S3 project carries its own state.
"""

from __future__ import annotations

COMPOSITE_DIRS = ("tc", "b743", "b432")
STATE = "_state"


def obs_key(year: int, doy: int) -> str:
    return f"{year:04d}_{doy:03d}"


def project_dir(project_id: str) -> str:
    return f"prj_{project_id}"


def obs_csv_prefix(plot_id: str) -> str:
    """Name prefix shared by one plot's observation CSVs (and no other plot's: ids hold no '_s')."""
    return f"{plot_id}_spectral_files_set_"


def obs_csv(project_id: str, plot_id: str, key: str) -> str:
    return f"{project_dir(project_id)}/{obs_csv_prefix(plot_id)}{key}.csv"


def chip_dir(kind: str, project_id: str, plot_id: str) -> str:
    return f"{project_dir(project_id)}/{kind}/plot_{plot_id}"


def chip_name(plot_id: str, key: str) -> str:
    return f"plot_{plot_id}_{key}.png"


def chip_png(kind: str, project_id: str, plot_id: str, key: str) -> str:
    return f"{chip_dir(kind, project_id, plot_id)}/{chip_name(plot_id, key)}"


def obs_files(project_id: str, plot_id: str, key: str) -> list[str]:
    """The four files of one observation: three PNGs, then the CSV (written last)."""
    return [
        *(chip_png(k, project_id, plot_id, key) for k in COMPOSITE_DIRS),
        obs_csv(project_id, plot_id, key),
    ]


def series_csv(project_id: str, plot_id: str) -> str:
    return f"{project_dir(project_id)}/series/plot_{plot_id}_series.csv"


def ingest_csv(project_id: str, year: int) -> str:
    return f"{year:04d}{ingest_csv_suffix(project_id)}"


def ingest_csv_suffix(project_id: str) -> str:
    """How the project's ingest files' names end (after the year): to find them in a listing."""
    return f"_prj_{project_id}_region_spectrals.csv"


def search_state(fingerprint: str, region: str, hv: str) -> str:
    return f"{STATE}/search/{fingerprint}/{region}_{hv}.json"


def fill_record(project_id: str, plot_id: str) -> str:
    return f"{STATE}/{project_dir(project_id)}/fill/plot_{plot_id}.json"


def ingest_manifest(project_id: str, fingerprint: str) -> str:
    return f"{STATE}/{project_dir(project_id)}/ingest_{fingerprint}.json"


def failure_record(project_id: str, plot_id: str) -> str:
    """The plot's failed observations of its last attempt; removed once the plot is done."""
    return f"{STATE}/{project_dir(project_id)}/failed/plot_{plot_id}.json"


def completeness_snapshot(project_id: str) -> str:
    """Stats of a local project's complete plots' directories, so a finished project is
    recognised without listings (see engine.Project.current_entry). Relative to the
    machine's snapshot cache, not the project: inode numbers and mtimes describe this
    copy on this machine only (a copied or synced project must not inherit them), and
    the project's own files stay the same, byte for byte, whichever run wrote them."""
    return f"{project_dir(project_id)}.json"


# ---- the QA report ---------------------------------------------------------------------
REPORT = "report"


def top_index() -> str:
    return f"{REPORT}/index.html"


def report_dir(project_id: str) -> str:
    return f"{REPORT}/{project_dir(project_id)}"


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
