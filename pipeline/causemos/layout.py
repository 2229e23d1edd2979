"""Every output key of a Causemos run, relative to the destination (the reference's bucket).

The layout is the reference's (``doc/minio-folder-structure.md`` and the paths its writers build):
everything of one run lives under ``{data_id}/{run_id}/``. Names go into keys unescaped, as the
reference puts them: a qualifier value or region id holding ``/`` makes a nested key, spaces stay.
``feature`` is the feature's key text (:func:`pipeline.causemos.recipe.feature_key`), ``timestamp``
the period start in epoch milliseconds, ``time_res`` ``month`` or ``year``, ``level`` one of
``country, admin1, admin2, admin3``.

The pipeline's own keys are named here too, apart at the end: its state (``_state/causemos/``:
records, manifests, points) and its QA report (``_qa/causemos/``).
"""

from __future__ import annotations

from urllib.parse import quote

TIME_RESOLUTIONS = ("month", "year")


def run_prefix(data_id: str, run_id: str) -> str:
    """Prefix of every object of the run (with a trailing ``/``: a listing of it holds this run only)."""
    return f"{data_id}/{run_id}/"


def raw_feature_prefix(data_id: str, run_id: str, feature: str) -> str:
    return f"{data_id}/{run_id}/raw/{feature}/"


def raw_csv(data_id: str, run_id: str, feature: str) -> str:
    """Input rows of one feature (only for features with at most ``raw_count_threshold`` rows)."""
    return f"{raw_feature_prefix(data_id, run_id, feature)}raw/raw.csv"


def info_json(data_id: str, run_id: str, feature: str, name: str) -> str:
    """The reference's ``info_to_json`` key; ``name`` may hold a ``/`` (``qualifiers/{qualifier}``)."""
    return f"{raw_feature_prefix(data_id, run_id, feature)}info/{name}.json"


def region_lists_json(data_id: str, run_id: str, feature: str) -> str:
    return info_json(data_id, run_id, feature, "region_lists")


def qualifier_counts_json(data_id: str, run_id: str, feature: str) -> str:
    return info_json(data_id, run_id, feature, "qualifier_counts")


def qualifier_values_json(data_id: str, run_id: str, feature: str, qualifier: str) -> str:
    return info_json(data_id, run_id, feature, f"qualifiers/{qualifier}")


def results_json(data_id: str, run_id: str) -> str:
    """The run's completion marker, written last."""
    return f"{data_id}/{run_id}/results/results.json"


def feature_prefix(data_id: str, run_id: str, time_res: str, feature: str) -> str:
    """Prefix of everything aggregated for one (time resolution, feature)."""
    return f"{data_id}/{run_id}/{time_res}/{feature}/"


def global_timeseries_csv(data_id: str, run_id: str, time_res: str, feature: str) -> str:
    return f"{feature_prefix(data_id, run_id, time_res, feature)}timeseries/global/global.csv"


def qualifier_timeseries_csv(
    data_id: str, run_id: str, time_res: str, feature: str, qualifier: str, agg: str
) -> str:
    """One aggregate column of the global series broken down by a qualifier (``agg`` e.g. ``s_count``)."""
    return f"{feature_prefix(data_id, run_id, time_res, feature)}timeseries/qualifiers/{qualifier}/{agg}.csv"


def regional_prefix(data_id: str, run_id: str, time_res: str, feature: str, level: str) -> str:
    return f"{feature_prefix(data_id, run_id, time_res, feature)}regional/{level}/"


def regional_extrema_json(data_id: str, run_id: str, time_res: str, feature: str, level: str) -> str:
    return f"{regional_prefix(data_id, run_id, time_res, feature, level)}stats/default/extrema.json"


def regional_timeseries_csv(
    data_id: str, run_id: str, time_res: str, feature: str, level: str, region_id: str
) -> str:
    return f"{regional_prefix(data_id, run_id, time_res, feature, level)}timeseries/default/{region_id}.csv"


def regional_qualifier_timeseries_csv(
    data_id: str,
    run_id: str,
    time_res: str,
    feature: str,
    level: str,
    qualifier: str,
    qualifier_value: str,
    region_id: str,
) -> str:
    prefix = regional_prefix(data_id, run_id, time_res, feature, level)
    return f"{prefix}timeseries/qualifiers/{qualifier}/{qualifier_value}/{region_id}.csv"


def regional_aggregate_csv(
    data_id: str, run_id: str, time_res: str, feature: str, level: str, timestamp: int
) -> str:
    return f"{regional_prefix(data_id, run_id, time_res, feature, level)}aggs/{timestamp}/default/default.csv"


def regional_qualifier_aggregate_csv(
    data_id: str, run_id: str, time_res: str, feature: str, level: str, timestamp: int, qualifier: str
) -> str:
    return f"{regional_prefix(data_id, run_id, time_res, feature, level)}aggs/{timestamp}/qualifiers/{qualifier}.csv"


def grid_stats_csv(data_id: str, run_id: str, time_res: str, feature: str, timestamp: int) -> str:
    return f"{feature_prefix(data_id, run_id, time_res, feature)}stats/grid/{timestamp}.csv"


def tile(
    data_id: str, run_id: str, time_res: str, feature: str, timestamp: int, z: int, x: int, y: int
) -> str:
    """A web-map tile, e.g. ``.../month/F1/tiles/1546300800000-8-156-120.tile``."""
    return f"{feature_prefix(data_id, run_id, time_res, feature)}tiles/{timestamp}-{z}-{x}-{y}.tile"


# ---- the pipeline's own state and QA report (not the reference's layout) -------------------
STATE_ROOT = "_state/causemos"


def state_prefix(data_id: str, run_id: str) -> str:
    return f"{STATE_ROOT}/{data_id}/{run_id}/"


def prepare_info_key(data_id: str, run_id: str) -> str:
    """The prepare stage's record: counts, features, points files, fingerprint."""
    return f"{state_prefix(data_id, run_id)}prepare.json"


def run_marker_key(data_id: str, run_id: str) -> str:
    """Written after results.json: the run (with its cleanup of vanished features) finished."""
    return f"{state_prefix(data_id, run_id)}run.json"


def manifests_prefix(data_id: str, run_id: str) -> str:
    return f"{state_prefix(data_id, run_id)}manifests/"


def prepare_manifest_key(data_id: str, run_id: str) -> str:
    return f"{manifests_prefix(data_id, run_id)}prepare.json.gz"


def feature_state_name(feature: str) -> str:
    """A feature as one path segment of a state key (features may hold ``/`` and anything else)."""
    return quote(feature, safe="")


def family_manifest_key(data_id: str, run_id: str, time_res: str, feature: str, family: str) -> str:
    return f"{manifests_prefix(data_id, run_id)}{time_res}/{feature_state_name(feature)}/{family}.json.gz"


def failure_record_key(data_id: str, run_id: str, time_res: str, feature: str, family: str) -> str:
    return f"{state_prefix(data_id, run_id)}failures/{time_res}/{feature_state_name(feature)}/{family}.json"


def points_prefix(data_id: str, run_id: str) -> str:
    return f"{state_prefix(data_id, run_id)}points/"


def points_key(data_id: str, run_id: str, fingerprint: str, time_res: str, index: int) -> str:
    """The temporally aggregated points of the ``index``-th feature at ``time_res`` (parquet), under the
    prepare stage's fingerprint: a killed prepare never overwrites the points a finished one recorded."""
    return f"{points_prefix(data_id, run_id)}{fingerprint}/{time_res}/{index}.parquet"


def report_html(data_id: str, run_id: str) -> str:
    """The run's QA report page (``python -m pipeline.causemos.report``)."""
    return f"_qa/causemos/{data_id}/{run_id}/index.html"
