"""Bad input, as a user gives it: each case is a file under tests/data/bad_inputs/ and is
run through the luigi command line (tests/helpers.run_luigi).

- plots/*.csv: plot files (missing column, non-numeric or fractional coordinates, empty,
  header only, duplicates, ids with '/', '..', spaces or nothing, outside the grid, ...).
  A BOM and CRLF line ends must WORK; every other one is fatal.
- params/*.args: command-line parameters (one argument per line; ``{data}`` is this data
  directory): unknown region, even / zero / negative chip size, bad interval, missing files.
- catalog/*.json: a change to one item of the small archive's catalogue (``line``: its line
  in items.ndjson; ``remove``/``set`` dotted fields; ``replace_line``).
- assets/*.json: one asset of one item replaced (``href``) or truncated (``truncate``).
- s3/*.json: an s3:// project directory with a wrong endpoint, bucket or credentials.

A fatal error: ONE clear message naming the file, line or field (asserted on stderr), no
Python traceback, a non-zero exit status, and nothing written (the project directory is
absent or empty). A local error (one item, one asset): reported by name, and the rest of
the project is complete, compared with the oracle run on the remaining items.

Security: ids and by-name task parameters can never place a file outside the project
directory; no credential appears in what a failed S3 run prints or writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import oracle
from tests.helpers import AWS_ENDPOINT_VARIABLES, luigi_env, run_luigi, timesync_args

DATA = Path(__file__).resolve().parent / "data" / "bad_inputs"
BASE_PLOTS = DATA / "base_plots.csv"


@dataclass(frozen=True)
class Fatal:
    """What stderr must say (regexes, after ``{file}`` is replaced by the case file's path)."""

    patterns: tuple[str, ...]


def fatal(*patterns: str) -> Fatal:
    return Fatal(patterns)


ID_RULE = r"may only hold letters, digits, '\.', '-' and '_'"

PLOT_CASES = {
    "missing_column.csv": fatal(r"{file}, line 1: missing column\(s\) y"),
    "non_numeric.csv": fatal(r"{file}, line 3, field 'x': '-19667x0' is not a number"),
    "fractional.csv": fatal(r"{file}, line 4, field 'y': 2600790\.5 is not an integer"),
    "empty.csv": fatal(r"{file}, line 1: empty plot file"),
    "header_only.csv": fatal(r"{file}, line 2: no plots"),
    "duplicate.csv": fatal(
        r"{file}, line 4, field 'plot_id': duplicate plot \(project_id '1001', plot_id '001'\), first on line 2"
    ),
    "id_slash.csv": fatal(r"{file}, line 3, field 'plot_id': id 'a/b' " + ID_RULE),
    "id_dotdot.csv": fatal(r"{file}, line 3, field 'plot_id': id '\.\.' " + ID_RULE),
    "id_space.csv": fatal(r"{file}, line 3, field 'plot_id': id '0 3' " + ID_RULE),
    "id_empty.csv": fatal(r"{file}, line 3, field 'project_id': empty id"),
    "outside_grid.csv": fatal(
        r"{file}, line 4, field 'x,y': point \(-9004570, 2600790\) is outside the CU ARD grid"
    ),
    "short_row.csv": fatal(r"{file}, line 3: 3 fields, the header has 4"),
    "latin1.csv": fatal(r"{file}(, line 3)?: not UTF-8 text"),
}
WORKING_PLOT_FILES = ["bom.csv", "crlf.csv"]

PARAM_CASES = {
    "region_XX.args": fatal(r"(?i:region)\W+'XX'"),
    "chip_even.args": fatal(r"field 'chip-size': chip size 254 must be a positive odd number"),
    "chip_zero.args": fatal(r"field 'chip-size': chip size 0 must be a positive odd number"),
    "chip_negative.args": fatal(r"field 'chip-size': chip size -5 must be a positive odd number"),
    "chip_not_a_number.args": fatal(r"(?i:chip.size)\W+'abc'"),
    "asset_href_bad.args": fatal(r"(?i:asset.href)\W+'foo'"),
    "datetime_bad.args": fatal(r"field 'datetime': .*2020-13"),
    "plot_file_missing.args": fatal(r"plots/does_not_exist\.csv, field 'plot-file': plot file not found"),
    "catalog_missing.args": fatal(
        r"catalog/does_not_exist\.ndjson, field 'catalog': catalogue file not found"
    ),
}

# Local catalogue problems: (what names the item in the message, the field).
ITEM_CASES = {
    "item_missing_asset.json": r"field 'assets\.red'",
    "item_missing_grid.json": r"field 'properties\.landsat:grid_vertical'",
    "item_missing_datetime.json": r"field 'properties\.datetime'",
    "item_bad_datetime.json": r"field 'properties\.datetime'.*(1997-13-29|month)",
}
FATAL_CATALOG_CASES = {"item_not_json.json": fatal(r"{catalog}, line 25: not a JSON item")}
ASSET_CASES = {
    "asset_not_geotiff.json": r"not_a_geotiff\.TIF",
    "asset_truncated.json": r"SR_B3\.TIF",
}
AFFECTED = ("1001", "001", "1997_029")  # the one non-fill observation reading item 25's red band


# --------------------------------------------------------------------------- helpers
def run_case(
    archive,
    project: Path,
    *,
    plot_file: Path = BASE_PLOTS,
    catalog: Path | None = None,
    extra: list[str] = (),
    env=None,
):
    args = timesync_args(archive, project, catalog=str(catalog) if catalog else None)
    args[args.index("--plot-file") + 1] = str(plot_file)
    # later occurrences of an option win in argparse: case arguments override the defaults
    return run_luigi([*args, *extra], cwd=project.parent, env=env)


def assert_fatal(proc, project_dir: Path | None, case: Fatal, **names: str) -> None:
    err = proc.stderr
    assert proc.returncode != 0, f"exit status 0 for a fatal input error\n{err[-3000:]}"
    assert "Traceback" not in err, f"a Python traceback for a user error:\n{err[-4000:]}"
    lines = [ln for ln in err.splitlines() if not ln.startswith("DEBUG")]
    for i, pattern in enumerate(case.patterns):
        pattern = pattern.format(**{k: re.escape(v) for k, v in names.items()})
        hits = [ln for ln in lines if re.search(pattern, ln)]
        assert hits, f"no message matching {pattern!r} in:\n{_tail(err)}"
        if i == 0:  # ONE message, not one per project or per task
            assert len(hits) == 1, f"{len(hits)} lines repeat the error:\n" + "\n".join(
                h[-300:] for h in hits
            )
    # the closing summary must not call a run that could not start a success
    assert "Nothing to do" not in err and "already complete" not in err, (
        f"the summary says all is done:\n{_tail(err)}"
    )
    assert not re.search(r": , field", err), (
        f"a message starting with an empty source (': , field'):\n{_tail(err)}"
    )
    if project_dir is not None:
        assert not project_dir.exists() or not any(project_dir.iterdir()), (
            f"files written despite a fatal error: {list(project_dir.rglob('*'))[:10]}"
        )


def _tail(err: str) -> str:
    lines = [ln for ln in err.splitlines() if not ln.startswith("DEBUG")]
    return "\n".join(lines[-30:])


def catalog_lines(archive) -> list[str]:
    return Path(archive.catalog_ndjson).read_text().splitlines()


def set_path(doc: dict, dotted: str, value=None, *, remove: bool = False) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc[key]
    if remove:
        del doc[last]
    else:
        doc[last] = value


def apply_case(archive, spec: dict, dest: Path) -> tuple[Path, str, str]:
    """Write the changed catalogue to ``dest``; return (its path, the item id, the original
    line's item json)."""
    lines = catalog_lines(archive)
    index = spec["line"] - 1
    original = lines[index]
    item = json.loads(original)
    if "replace_line" in spec:
        lines[index] = spec["replace_line"]
    else:
        for dotted in spec.get("remove", []):
            set_path(item, dotted, remove=True)
        for dotted, value in spec.get("set", {}).items():
            set_path(item, dotted, value)
        for band, href in spec.get("href", {}).items():
            item["assets"][band]["href"] = href.replace("{data}", str(DATA))
        for band, size in spec.get("truncate", {}).items():
            source = Path(item["assets"][band]["href"])
            cut = dest.parent / f"truncated_{source.name}"
            cut.write_bytes(source.read_bytes()[:size])
            item["assets"][band]["href"] = str(cut)
        lines[index] = json.dumps(item)
    dest.write_text("\n".join(lines) + "\n")
    return dest, json.loads(original)["id"], original


def expected_without(archive, item_id: str, tmp: Path, plot_file: Path = BASE_PLOTS) -> dict:
    """The oracle's outputs for the catalogue without one item."""
    kept = [ln for ln in catalog_lines(archive) if json.loads(ln)["id"] != item_id]
    path = tmp / "remaining_items.ndjson"
    path.write_text("\n".join(kept) + "\n")
    return oracle.expected_outputs(path, plot_file, asset_href="href")


# --------------------------------------------------------------------------- plot files
def test_every_case_file_exists():
    names = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file()}
    cases = (
        [f"plots/{n}" for n in [*PLOT_CASES, *WORKING_PLOT_FILES]] + [f"params/{n}" for n in PARAM_CASES]
        + [f"catalog/{n}" for n in [*ITEM_CASES, *FATAL_CATALOG_CASES]] + [f"assets/{n}" for n in ASSET_CASES]
        + [f"s3/{n}" for n in S3_CASES]
    )  # fmt: skip
    assert set(cases) <= names
    assert len(cases) >= 20


def test_base_plots_are_plots_of_the_archive(small_archive):
    """The case files reuse the archive's plot coordinates (its special plots are placed
    by rule, not by the seed)."""
    rows = set(Path(small_archive.plot_file).read_text().splitlines()[1:])
    assert set(BASE_PLOTS.read_text().splitlines()[1:]) <= rows


@pytest.mark.parametrize("name", sorted(PLOT_CASES))
def test_bad_plot_file_is_fatal_and_writes_nothing(name, small_archive, tmp_path):
    plot_file = DATA / "plots" / name
    project = tmp_path / "project"
    proc = run_case(small_archive, project, plot_file=plot_file)
    assert_fatal(proc, project, PLOT_CASES[name], file=str(plot_file))


@pytest.mark.slow
@pytest.mark.parametrize("name", WORKING_PLOT_FILES)
def test_bom_and_crlf_plot_files_work(name, small_archive, tmp_path):
    plot_file = DATA / "plots" / name
    project = tmp_path / "project"
    proc = run_case(small_archive, project, plot_file=plot_file)
    assert proc.returncode == 0, _tail(proc.stderr)
    expected = oracle.expected_outputs(small_archive.catalog_ndjson, plot_file, asset_href="href")
    assert {k.split("/")[0] for k in expected} >= {"prj_1001", "prj_0042"}
    assert oracle.compare_tree(project, expected) == []


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", sorted(PARAM_CASES))
def test_bad_parameter_is_fatal_and_writes_nothing(name, small_archive, tmp_path):
    extra = [
        line.replace("{data}", str(DATA))
        for line in (DATA / "params" / name).read_text().splitlines()
        if line
    ]
    project = tmp_path / "project"
    proc = run_case(small_archive, project, extra=extra)
    assert_fatal(proc, project, PARAM_CASES[name])


# --------------------------------------------------------------------------- catalogue
@pytest.mark.parametrize("name", sorted(FATAL_CATALOG_CASES))
def test_unreadable_catalogue_is_fatal(name, small_archive, tmp_path):
    spec = json.loads((DATA / "catalog" / name).read_text())
    catalog, _, _ = apply_case(small_archive, spec, tmp_path / "items.ndjson")
    project = tmp_path / "project"
    proc = run_case(small_archive, project, catalog=catalog)
    assert_fatal(proc, project, FATAL_CATALOG_CASES[name], catalog=str(catalog))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ITEM_CASES))
def test_bad_item_is_reported_and_the_rest_completes(name, small_archive, tmp_path):
    spec = json.loads((DATA / "catalog" / name).read_text())
    catalog, item_id, _ = apply_case(small_archive, spec, tmp_path / "items.ndjson")
    project = tmp_path / "project"
    proc = run_case(small_archive, project, catalog=catalog)
    err = proc.stderr
    assert "Traceback" not in err, _tail(err)
    # one clear message: the catalogue file, the item's line, its id and the field
    where = re.escape(f"{catalog}, line {spec['line']}")
    pattern = where + r".*" + re.escape(item_id) + r".*" + ITEM_CASES[name]
    hits = [ln for ln in err.splitlines() if re.search(pattern, ln)]
    assert hits, f"no message matching {pattern!r} in:\n{_tail(err)}"
    assert len(hits) == 1, f"{len(hits)} lines repeat the report:\n" + "\n".join(hits)
    # the rest of the project: exactly what the oracle makes of the remaining items
    expected = expected_without(small_archive, item_id, tmp_path)
    assert oracle.compare_tree(project, expected) == []


# --------------------------------------------------------------------------- assets
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ASSET_CASES))
def test_bad_asset_fails_only_its_observation(name, small_archive, tmp_path):
    spec = json.loads((DATA / "assets" / name).read_text())
    catalog, _item_id, _ = apply_case(small_archive, spec, tmp_path / "items.ndjson")
    project = tmp_path / "project"
    proc = run_case(small_archive, project, catalog=catalog)
    err = proc.stderr
    assert proc.returncode != 0, "a failed observation must make the exit status non-zero"
    assert "Traceback" not in err, _tail(err)
    prj, plot, key = AFFECTED
    assert re.search(rf"FAILED prj {prj} plot {plot} {key}: .*{ASSET_CASES[name]}", err), _tail(err)
    record = json.loads((project / "_state" / f"prj_{prj}" / "failed" / f"plot_{plot}.json").read_text())
    (entry,) = record["failed"]
    assert entry["key"] == key and entry["attempts"] == 1 and re.search(ASSET_CASES[name], entry["error"])
    assert len(entry["targets"]) == 4
    # the rest: every other output of the project, as the oracle makes them
    expected = oracle.expected_outputs(small_archive.catalog_ndjson, BASE_PLOTS, asset_href="href")
    lost = {f"prj_{prj}/{k}/plot_{plot}/plot_{plot}_{key}.png" for k in ("tc", "b743", "b432")}
    lost |= {f"prj_{prj}/{plot}_spectral_files_set_{key}.csv", f"prj_{prj}/series/plot_{plot}_series.csv"}
    lost |= {
        k for k in expected if k.endswith(f"_prj_{prj}_region_spectrals.csv")
    }  # the project is not whole
    assert lost <= set(expected)
    rest = {k: v for k, v in expected.items() if k not in lost}
    assert oracle.compare_tree(project, rest) == []


# --------------------------------------------------------------------------- ids and paths
def _outside(root: Path, project: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*") if project not in p.parents and p != project
    }


@pytest.mark.parametrize(
    "task, params",
    [
        ("TimeSyncPlot", ["--project-id", "1001", "--plot-id", "../../../escaped"]),
        ("TimeSyncPlot", ["--project-id", "../../escaped", "--plot-id", "001"]),
        (
            "TimeSyncObservation",
            ["--project-id", "1001", "--plot-id", "001", "--date", "../../../../../escaped"],
        ),
        ("TimeSyncIngest", ["--project-id", "/../../../escaped"]),
        ("TimeSyncIngest", ["--project-id", "../escaped"]),
        ("TimeSyncReport", ["--project-id", "/../../../escaped"]),
    ],
)
def test_ids_never_place_a_file_outside_the_project(task, params, small_archive, tmp_path):
    root = tmp_path / "root"
    project = root / "a" / "b" / "project"
    project.parent.mkdir(parents=True)
    before = _outside(root, project)
    args = timesync_args(small_archive, project)
    args[0] = task
    args[args.index("--plot-file") + 1] = str(BASE_PLOTS)
    proc = run_luigi([*args, *params], cwd=root)
    escaped = _outside(root, project) - before
    assert not escaped, f"{task} {params} wrote outside the project directory: {sorted(escaped)}"
    assert proc.returncode != 0, f"{task} {params} succeeded:\n{_tail(proc.stderr)}"
    assert "Traceback" not in proc.stderr, _tail(proc.stderr)


# --------------------------------------------------------------------------- S3
S3_CASES = {
    "output_wrong_endpoint.json": fatal(r"127\.0\.0\.1:9"),
    "output_missing_credentials.json": fatal(r"(?i)credentials"),
    "output_wrong_secret.json": fatal(r"(?i)(SignatureDoesNotMatch|signature|access denied|forbidden|403)"),
    "output_missing_bucket.json": fatal(
        r"(?i)no-such-bucket-for-timesync.*(NoSuchBucket|does not exist|not found)|(NoSuchBucket|does not exist|not found).*no-such-bucket-for-timesync"
    ),
}
S3_BUCKET = "bad-input-out"


@pytest.mark.s3
@pytest.mark.parametrize("name", sorted(S3_CASES))
def test_bad_s3_output_is_fatal_and_clear(name, s3_server, small_archive, tmp_path):
    s3_server.create_bucket(S3_BUCKET)
    spec = json.loads((DATA / "s3" / name).read_text())
    project_dir = spec["project_dir"].format(bucket=S3_BUCKET)
    extra = [a.format(endpoint=s3_server.endpoint_url) for a in spec["args"]] + [
        "--output-region",
        s3_server.region,
    ]
    env = luigi_env(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }
    )
    for k in (
        *AWS_ENDPOINT_VARIABLES,
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        env.pop(k, None)
    if spec["credentials"]:
        env["AWS_ACCESS_KEY_ID"] = s3_server.access_key
        env["AWS_SECRET_ACCESS_KEY"] = (
            s3_server.secret_key if spec["credentials"] is True else "wrong-" + s3_server.secret_key
        )
    args = timesync_args(small_archive, project_dir)
    args[args.index("--plot-file") + 1] = str(BASE_PLOTS)
    proc = run_luigi([*args, *extra], cwd=tmp_path, env=env, timeout=300)
    assert_fatal(proc, None, S3_CASES[name])
    # nothing written under the project prefix, and no secret printed
    fs = s3_server.fs(use_listings_cache=False)
    if project_dir.startswith(f"s3://{S3_BUCKET}/"):
        assert not fs.exists(project_dir[len("s3://") :]) or not fs.find(project_dir[len("s3://") :])
    assert s3_server.secret_key not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_an_unusable_item_of_a_multi_tile_acquisition_fails_the_observation_instead_of_half_a_mosaic(
    small_archive, tmp_path
):
    """A plot's chip spans two ARD tiles; one tile's item of an acquisition has no red asset.
    Writing the other tile's half as the observation would be a target that looks complete
    but is not: that plot-observation fails (reported, recorded, nothing written) and every
    other observation is written as the recipe says."""
    from pipeline.grid import chip_tiles, get_region
    from pipeline.timesync.layout import obs_files, obs_key

    lines = catalog_lines(small_archive)
    items = [json.loads(ln) for ln in lines]
    region = get_region("CU")
    chosen = None
    for plot in small_archive.plots:
        tiles = {(t.hh, t.vv) for t in chip_tiles(region, plot["x"], plot["y"], 255, 255)}
        by_date: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            p = item["properties"]
            if (p["landsat:grid_horizontal"], p["landsat:grid_vertical"]) in tiles:
                by_date.setdefault(p["datetime"][:10], []).append(i)
        multi = [ix for ix in by_date.values() if len(ix) >= 2]
        if multi:
            chosen = (plot, multi[0][1])
            break
    assert chosen, "the small archive has plots whose chips span tiles"
    plot, index = chosen
    item = items[index]
    del item["assets"]["red"]
    lines[index] = json.dumps(item)
    catalog = tmp_path / "items.ndjson"
    catalog.write_text("\n".join(lines) + "\n")
    plot_file = tmp_path / "plots.csv"
    plot_file.write_text(
        f"project_id,plot_id,x,y\n{plot['project_id']},{plot['plot_id']},{plot['x']},{plot['y']}\n"
    )
    project = tmp_path / "project"
    proc = run_case(small_archive, project, plot_file=plot_file, catalog=catalog)

    from datetime import datetime

    dt = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    key = obs_key(dt.year, dt.timetuple().tm_yday)
    prj, pid = plot["project_id"], plot["plot_id"]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, _tail(proc.stderr)
    assert re.search(
        rf"FAILED prj {prj} plot {pid} {key}: .*mosaic would be partial.*{re.escape(item['id'])}.*assets\.red",
        proc.stderr,
    ), _tail(proc.stderr)
    record = json.loads((project / "_state" / f"prj_{prj}" / "failed" / f"plot_{pid}.json").read_text())
    assert [f["key"] for f in record["failed"]] == [key]
    for rel in obs_files(prj, pid, key):
        assert not (project / rel).exists(), rel
    # every other observation: exactly the recipe's output from the intact catalogue
    expected = oracle.expected_outputs(small_archive.catalog_ndjson, plot_file, asset_href="href")
    failed_files = set(obs_files(prj, pid, key))
    kept = {
        k: v
        for k, v in expected.items()
        if k not in failed_files and "/series/" not in k and "_region_spectrals" not in k
    }
    assert len(kept) > 4
    assert oracle.compare_tree(project, kept) == []  # and no series, no ingest file: the plot is not whole
