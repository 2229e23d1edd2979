"""Faulty servers: the fault-injecting proxy (tests/servers/fault_proxy.py) between the
pipeline and the S3 server (archive reads and output writes) and the STAC API.

- 10 % of every kind of request fails (503 SlowDown, 500, connection reset, 1 s delay):
  the run still completes, and its outputs equal the oracle's.
- One asset fails every time (503 on its key), and one output PUT fails every time:
  only their observations fail; a failure record (targets, error, attempts) is written
  per plot and summarised on the terminal; the exit status is non-zero; retries are
  bounded and backed off (GDAL: GDAL_HTTP_MAX_RETRY / GDAL_HTTP_RETRY_DELAY; s3fs/botocore
  for writes); the rerun, with the faults gone, writes exactly the failed targets and
  what depends on them.
- No credential appears in the terminal output, the outputs, the state or the failure
  records.

The archive is the small test archive in its own bucket (``faults-ard``, hrefs rewritten
in a copy of the catalogue) so no other test module's upload can interfere.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests import oracle
from tests.helpers import credentials_only, run_luigi, timesync_args
from tests.servers.fault_proxy import FaultProxy, FaultRule

pytestmark = [pytest.mark.s3, pytest.mark.slow]

ARCHIVE_BUCKET = "faults-ard"
OUT_BUCKET = "faults-out"
ORIGINAL_BUCKET = "usgs-landsat-ard"

# Item 25 of the small archive's catalogue (seed 1): its red band is read by exactly one
# non-fill observation (plot 1001/001 on 1997_029); every other plot of that date is fill
# there and reads only the QA band.
FAILING_ITEM = "LT05_CU_003004_19970129_20210603_02_SR"
FAILING_ASSET = f"{FAILING_ITEM[:-3]}_SR_B3.TIF"  # red (B3 on TM)
FAILING_OBS = ("1001", "001", "1997_029")
# An output whose PUT always fails, and one whose first two PUTs fail.
FAILING_PUT = ("0042", "008", "2002_135")
FLAKY_PUT_KEY = "prj_0042/series/plot_007_series.csv"
# Four plots of both projects (tests/data/bad_inputs/base_plots.csv): 1001/001 and 0042/008
# on one tile each, 1001/003 and 0042/007 across tiles; ~40 % of the archive's work.
PLOTS = Path(__file__).resolve().parent / "data" / "bad_inputs" / "base_plots.csv"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def archive_on_s3(s3_server, small_archive, tmp_path_factory):
    """The small archive in its own bucket, and a catalogue copy pointing there."""
    s3_server.create_bucket(ARCHIVE_BUCKET)
    s3_server.create_bucket(OUT_BUCKET)
    local_files = sorted(p for p in Path(small_archive.bucket_dir).rglob("*") if p.is_file())
    present = s3_server.fs().find(ARCHIVE_BUCKET)
    if len(present) < len(local_files):
        s3_server.upload_dir(small_archive.bucket_dir, ARCHIVE_BUCKET)
    catalog = tmp_path_factory.mktemp("faults-catalog") / "items.ndjson"
    lines = []
    for line in Path(small_archive.catalog_ndjson).read_text().splitlines():
        item = json.loads(line)
        for asset in item["assets"].values():
            s3 = (asset.get("alternate") or {}).get("s3")
            if s3:
                s3["href"] = s3["href"].replace(f"s3://{ORIGINAL_BUCKET}/", f"s3://{ARCHIVE_BUCKET}/")
        lines.append(json.dumps(item))
    catalog.write_text("\n".join(lines) + "\n")
    assert any(FAILING_ASSET in line for line in lines)
    return catalog


@pytest.fixture(scope="module")
def expected(small_archive):
    return oracle.expected_outputs(small_archive.catalog_ndjson, PLOTS, asset_href="href")


class RecordingProxy:
    """A FaultProxy that also records every request: (time, method, path, fault or None)."""

    def __init__(self, upstream_url: str, rules: list[FaultRule], seed: int = 0) -> None:
        up = urlparse(upstream_url)
        self.proxy = FaultProxy(up.hostname, up.port, rules=rules, seed=seed)
        self.proxy._server.handle_error = lambda request, client_address: (
            None
        )  # clients drop delayed/reset requests
        self.log: list[tuple[float, str, str, str | None]] = []
        self._lock = threading.Lock()
        choose = self.proxy._choose

        def recording_choose(method: str, path: str):
            rule = choose(method, path)
            with self._lock:
                self.log.append((time.monotonic(), method, path, rule.kind if rule else None))
            return rule

        self.proxy._choose = recording_choose

    @property
    def url(self) -> str:
        return self.proxy.url

    def requests(self, pred=lambda method, path: True) -> list[tuple[float, str, str, str | None]]:
        with self._lock:
            return [r for r in self.log if pred(r[1], r[2])]

    def faults(self, pred=lambda method, path: True) -> dict[str, int]:
        out: dict[str, int] = {}
        for _t, _m, _p, kind in self.requests(pred):
            if kind:
                out[kind] = out.get(kind, 0) + 1
        return out

    def stop(self) -> None:
        self.proxy.stop()


def ten_percent(delay: float = 1.0) -> list[FaultRule]:
    """About 10 % of all requests: 2.5 % each of 503 SlowDown, 500, reset, delay."""
    return [
        FaultRule("503", 0.025),
        FaultRule("500", 0.025),
        FaultRule("reset", 0.025),
        FaultRule("delay", 0.025, delay=delay),
    ]


def s3_run_args(archive, catalog: str, project_dir: str, endpoint: str, region: str) -> list[str]:
    args = timesync_args(archive, project_dir, catalog=catalog)
    args[args.index("--plot-file") + 1] = str(PLOTS)
    i = args.index("--asset-href")
    del args[i : i + 2]  # the default, s3: alternate.s3.href through the archive endpoint
    return [
        *args,
        "--archive-endpoint-url", endpoint, "--archive-region", region,
        "--output-endpoint-url", endpoint, "--output-region", region,
    ]  # fmt: skip


def storage_options(server) -> dict:
    return {
        "key": server.access_key, "secret": server.secret_key,
        "client_kwargs": {"endpoint_url": server.endpoint_url, "region_name": server.region},
        "skip_instance_cache": True, "use_listings_cache": False,
    }  # fmt: skip


def all_objects(server, prefix: str) -> dict[str, bytes]:
    fs = server.fs(use_listings_cache=False)
    return {key[len(prefix) + 1 :]: bytes(fs.cat_file(key)) for key in fs.find(prefix)}


def obs_files(prj: str, plot: str, key: str) -> list[str]:
    return [
        *(f"prj_{prj}/{kind}/plot_{plot}/plot_{plot}_{key}.png" for kind in ("tc", "b743", "b432")),
        f"prj_{prj}/{plot}_spectral_files_set_{key}.csv",
    ]  # fmt: skip


def assert_no_secret(server, texts: dict[str, str | bytes]) -> None:
    secret = server.secret_key
    for where, text in texts.items():
        data = text.encode() if isinstance(text, str) else text
        assert secret.encode() not in data, f"the AWS secret key appears in {where}"


# --------------------------------------------------------------------------- tests
@pytest.mark.stac
def test_ten_percent_faults_everywhere_still_give_the_recipe(
    s3_server, stac_server, small_archive, archive_on_s3, expected, tmp_path
):
    stac_server.load_items(archive_on_s3)

    # Each kind of fault at least once on each kind of request, each on a different
    # request (one fault per request, so no request exceeds its retry budget by design),
    # then about 10 % of all requests at random.
    def once(kind: str, method: str, *parts: str, delay: float = 1.0) -> FaultRule:
        return FaultRule(
            kind, match=lambda m, p: m == method and all(x in p for x in parts), limit=1, delay=delay
        )

    s3_rules = [
        once("503", "GET", f"/{ARCHIVE_BUCKET}/", "LE07_CU_004004_20150901_20210411_02_QA_PIXEL.TIF"),
        once("reset", "GET", f"/{ARCHIVE_BUCKET}/", "LC08_CU_003004_20170628_20210606_02_QA_PIXEL.TIF"),
        once("500", "GET", f"/{ARCHIVE_BUCKET}/", "LT05_CU_003004_19880712_20210523_02_QA_PIXEL.TIF"),
        once("delay", "GET", f"/{ARCHIVE_BUCKET}/", "LC09_CU_004004_20220522_20220612_02_QA_PIXEL.TIF"),
        once("503", "PUT", f"/{OUT_BUCKET}/", "/_state/search/"),
        once("reset", "PUT", f"/{OUT_BUCKET}/", "/series/plot_001_series.csv"),
        once("500", "PUT", f"/{OUT_BUCKET}/", "/tc/plot_003/"),
        once("delay", "PUT", f"/{OUT_BUCKET}/", "_region_spectrals.csv"),
        once("503", "GET", f"/{OUT_BUCKET}", "list-type"),
        *ten_percent(),
    ]
    stac_rules = [
        FaultRule("503", match=lambda m, p: m == "POST" and "/search" in p, limit=2),
        *ten_percent(),
    ]
    s3 = RecordingProxy(s3_server.endpoint_url, s3_rules, seed=10)
    stac = RecordingProxy(stac_server.url, stac_rules, seed=11)
    prefix = f"{OUT_BUCKET}/ten-percent-{uuid.uuid4().hex[:8]}"
    try:
        t0 = time.monotonic()
        proc = run_luigi(
            s3_run_args(small_archive, stac.url, f"s3://{prefix}", s3.url, s3_server.region),
            cwd=tmp_path, env=credentials_only(s3_server),
        )  # fmt: skip
        seconds = time.monotonic() - t0
    finally:
        s3.stop()
        stac.stop()
    archive_faults = s3.faults(lambda m, p: p.startswith(f"/{ARCHIVE_BUCKET}/"))
    output_faults = s3.faults(lambda m, p: p.startswith(f"/{OUT_BUCKET}"))
    stac_faults = stac.faults()
    print(
        f"10 % faults: run {seconds:.0f} s, exit {proc.returncode}; S3 requests {len(s3.log)}, archive faults {archive_faults}, "
        f"output faults {output_faults}; STAC requests {len(stac.log)}, faults {stac_faults}"
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "Traceback" not in proc.stderr
    assert oracle.compare_tree(f"s3://{prefix}", expected, storage_options=storage_options(s3_server)) == []
    # the faults really happened, on every path
    assert set(archive_faults) == {"503", "500", "reset", "delay"}
    assert set(output_faults) == {"503", "500", "reset", "delay"}
    assert s3.faults(lambda m, p: "list-type" in p)  # listings (completeness) too
    assert stac_faults.get("503", 0) >= 2
    assert len(s3.faults()) and sum(s3.faults().values()) >= 0.05 * len(s3.log)
    objects = all_objects(s3_server, prefix)
    assert_no_secret(
        s3_server,
        {
            "stderr": proc.stderr,
            "stdout": proc.stdout,
            **{f"s3://{prefix}/{k}": v for k, v in objects.items()},
        },
    )


@pytest.fixture(scope="module")
def persistent_faults(s3_server, small_archive, archive_on_s3, tmp_path_factory):
    """A run in which one asset's GETs and one output's PUTs always fail (503 SlowDown)
    and another output's PUT fails twice, then a rerun with the faults gone."""
    prj, plot, key = FAILING_PUT
    failing_put = f"/{OUT_BUCKET}/"
    rules = [
        FaultRule("503", match=lambda m, p: FAILING_ASSET in p),
        FaultRule(
            "503",
            match=lambda m, p: (
                m == "PUT"
                and p.startswith(failing_put)
                and p.endswith(f"/prj_{prj}/{plot}_spectral_files_set_{key}.csv")
            ),
        ),
        FaultRule("503", match=lambda m, p: m == "PUT" and p.endswith("/" + FLAKY_PUT_KEY), limit=2),
    ]
    proxy = RecordingProxy(s3_server.endpoint_url, rules)
    prefix = f"{OUT_BUCKET}/persistent-{uuid.uuid4().hex[:8]}"
    cwd = tmp_path_factory.mktemp("persistent")
    env = credentials_only(s3_server)
    try:
        t0 = time.monotonic()
        first = run_luigi(
            s3_run_args(small_archive, str(archive_on_s3), f"s3://{prefix}", proxy.url, s3_server.region),
            cwd=cwd,
            env=env,
        )
        first_seconds = time.monotonic() - t0
    finally:
        proxy.stop()
    after_first = all_objects(s3_server, prefix)
    s3_server.reset_counts()
    rerun = run_luigi(
        s3_run_args(
            small_archive, str(archive_on_s3), f"s3://{prefix}", s3_server.endpoint_url, s3_server.region
        ),
        cwd=cwd,
        env=env,
    )
    rerun_requests = [r for r in s3_server.requests() if r.bucket == OUT_BUCKET]
    return {
        "prefix": prefix, "first": first, "first_seconds": first_seconds, "proxy": proxy,
        "after_first": after_first, "rerun": rerun, "rerun_requests": rerun_requests,
    }  # fmt: skip


def test_a_failing_asset_fails_only_its_observation(persistent_faults, expected):
    first, objects = persistent_faults["first"], persistent_faults["after_first"]
    print(f"first run: exit {first.returncode} in {persistent_faults['first_seconds']:.0f} s")
    assert first.returncode != 0, "a run with failed observations must exit non-zero"
    assert "Traceback" not in first.stderr
    failed_plots = {(FAILING_OBS[0], FAILING_OBS[1]), (FAILING_PUT[0], FAILING_PUT[1])}
    failed_projects = {p for p, _ in failed_plots}
    # Everything else is written: the oracle's files minus the failed observations' (the
    # PUT-failed one keeps its PNGs), minus the failed plots' series and their projects'
    # ingest files (written once every plot of the project is whole).
    missing = set(obs_files(*FAILING_OBS)) | {obs_files(*FAILING_PUT)[-1]}
    missing |= {f"prj_{p}/series/plot_{q}_series.csv" for p, q in failed_plots}
    missing |= {
        k for k in expected if any(k.endswith(f"_prj_{p}_region_spectrals.csv") for p in failed_projects)
    }
    outputs = {k for k in objects if not k.startswith("_state/") and not k.startswith("report/")}
    assert set(expected) - outputs == missing
    assert outputs - set(expected) == set()


def test_failure_records_name_targets_error_and_attempts(persistent_faults, s3_server):
    prefix, objects, first = (
        persistent_faults["prefix"],
        persistent_faults["after_first"],
        persistent_faults["first"],
    )
    records = {k: json.loads(v) for k, v in objects.items() if k.startswith("_state/") and "/failed/" in k}
    assert set(records) == {
        f"_state/prj_{FAILING_OBS[0]}/failed/plot_{FAILING_OBS[1]}.json",
        f"_state/prj_{FAILING_PUT[0]}/failed/plot_{FAILING_PUT[1]}.json",
    }
    for (prj, plot, key), error_names in ((FAILING_OBS, FAILING_ASSET), (FAILING_PUT, plot_csv(FAILING_PUT))):
        doc = records[f"_state/prj_{prj}/failed/plot_{plot}.json"]
        assert doc["project_id"] == prj and doc["plot_id"] == plot
        (entry,) = doc["failed"]
        assert entry["key"] == key
        assert entry["targets"] == [f"s3://{prefix}/{rel}" for rel in obs_files(prj, plot, key)]
        assert entry["attempts"] == 1
        assert error_names in entry["error"], entry["error"]
    # summarised on the terminal, one line per failed observation
    for prj, plot, key in (FAILING_OBS, FAILING_PUT):
        assert f"FAILED prj {prj} plot {plot} {key}: " in first.stderr
    assert "2 failed" in first.stderr
    assert_no_secret(s3_server, {"stderr": first.stderr, **{k: json.dumps(v) for k, v in records.items()}})


def plot_csv(obs: tuple[str, str, str]) -> str:
    return obs_files(*obs)[-1]


def test_gdal_retries_a_503_asset_a_bounded_number_of_times_with_backoff(persistent_faults):
    proxy = persistent_faults["proxy"]
    attempts = proxy.requests(lambda m, p: m == "GET" and p.split("?")[0].endswith("/" + FAILING_ASSET))
    listings = proxy.requests(lambda m, p: "?" in p and FAILING_ASSET in p)
    times = [t for t, *_ in attempts]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    print(
        f"GETs of the failing asset: {len(attempts)}, gaps {gaps} s (total {sum(gaps):.0f} s); then {len(listings)} LIST(s)"
    )
    # GDAL_HTTP_MAX_RETRY=5: 1 try + 5 retries per open; the observation is tried once per run
    assert len(attempts) == 6, attempts
    # GDAL_HTTP_RETRY_DELAY=1, growing about x2 each time (GDAL adds jitter): 1, 2, 4, 8, 16 s and more
    assert gaps[0] >= 0.8
    assert all(b >= 1.5 * a for a, b in itertools.pairwise(gaps)), gaps
    assert sum(gaps) < 120, "retries must be bounded in time too"


def test_s3_writes_are_retried_and_bounded(persistent_faults):
    proxy = persistent_faults["proxy"]
    flaky = proxy.requests(lambda m, p: m == "PUT" and p.endswith("/" + FLAKY_PUT_KEY))
    assert [kind for *_, kind in flaky] == ["503", "503", None]  # two SlowDowns, then written
    assert FLAKY_PUT_KEY in persistent_faults["after_first"]
    csv = plot_csv(FAILING_PUT)
    always = proxy.requests(lambda m, p: m == "PUT" and p.endswith("/" + csv))
    times = [t for t, *_ in always]
    print(f"PUTs of an always-failing output: {len(always)} over {times[-1] - times[0]:.1f} s")
    # One retry layer of ~5 attempts is bounded; s3fs retrying botocore's retries is not
    # (5 x 5 = 25 PUTs over ~40 s for one object).
    assert 2 <= len(always) <= 10, (
        f"{len(always)} attempts to PUT {csv} in {times[-1] - times[0]:.0f} s: nested retries"
    )


def test_rerun_without_faults_writes_exactly_the_failed_targets(persistent_faults, expected, s3_server):
    rerun, prefix = persistent_faults["rerun"], persistent_faults["prefix"]
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    sub = prefix[len(OUT_BUCKET) + 1 :] + "/"
    puts = sorted(
        r.key[len(sub) :]
        for r in persistent_faults["rerun_requests"]
        if r.method == "PUT" and r.key.startswith(sub)
    )
    deletes = sorted(
        r.key[len(sub) :]
        for r in persistent_faults["rerun_requests"]
        if r.method == "DELETE" and r.key.startswith(sub)
    )
    failed_plots = {(FAILING_OBS[0], FAILING_OBS[1]), (FAILING_PUT[0], FAILING_PUT[1])}
    # the records' targets, less what the first run did write: the failing-PUT observation's
    # three PNGs went through, only its CSV failed, and a rerun keeps what is written
    want = set(obs_files(*FAILING_OBS)) | {plot_csv(FAILING_PUT)}
    want |= {f"prj_{p}/series/plot_{q}_series.csv" for p, q in failed_plots}
    want |= {k for k in expected if k.endswith("_region_spectrals.csv")}  # both projects' ingest files
    outputs = [k for k in puts if not k.startswith(("_state/", "report/"))]
    state = [k for k in puts if k.startswith("_state/")]
    print(f"rerun PUTs: {len(outputs)} outputs, state {state}; DELETEs {deletes}")
    assert sorted(outputs) == sorted(want)  # each once, nothing else
    allowed_state = {f"_state/prj_{p}/fill/plot_{q}.json" for p, q in failed_plots}
    assert all(k in allowed_state or ("/ingest_" in k and k.endswith(".json")) for k in state), state
    assert {f"_state/prj_{p}/failed/plot_{q}.json" for p, q in failed_plots} <= set(deletes)
    assert oracle.compare_tree(f"s3://{prefix}", expected, storage_options=storage_options(s3_server)) == []
    objects = all_objects(s3_server, prefix)
    assert not [k for k in objects if "/failed/" in k], "failure records are removed once their plot is whole"


@pytest.mark.stac
def test_a_stac_api_that_always_fails_ends_the_run_clearly_and_in_bounded_time(
    stac_server, small_archive, tmp_path
):
    """Every search POST answers 503: pystac-client retries a bounded number of times with
    backoff, then the run exits non-zero naming the API, without a traceback, and writes
    no output (one plot on one tile: one search)."""
    stac_server.load_items(small_archive.catalog_ndjson)
    stac = RecordingProxy(
        stac_server.url, [FaultRule("503", match=lambda m, p: m == "POST" and "/search" in p)]
    )
    project = tmp_path / "project"
    try:
        args = timesync_args(small_archive, project, catalog=stac.url)
        args[args.index("--plot-file") + 1] = str(
            Path(__file__).parent / "data" / "bad_inputs" / "one_plot.csv"
        )
        t0 = time.monotonic()
        proc = run_luigi(args, cwd=tmp_path)
        seconds = time.monotonic() - t0
    finally:
        stac.stop()
    posts = stac.requests(lambda m, p: m == "POST")
    times = [t for t, *_ in posts]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    print(f"always-503 STAC: {len(posts)} POSTs, gaps {gaps} s, run {seconds:.0f} s, exit {proc.returncode}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"search of {stac.url} failed" in proc.stderr
    assert 2 <= len(posts) <= 6 + 1, posts  # urllib3 Retry(total=5): 1 + 5
    assert all(b >= a for a, b in itertools.pairwise(gaps)), gaps  # backed off
    assert not [
        p
        for p in project.rglob("*")
        if p.is_file() and not p.relative_to(project).as_posix().startswith("_state/")
    ]
