#!/usr/bin/env python3
"""A real STAC API for the tests: pgstac (PostgreSQL 15 + PostGIS) behind stac-fastapi-pgstac.

Usage (any Python >= 3.11; only the standard library is needed to run this file):

    python scripts/stac_server.py setup
        Installs what is needed, idempotently: Debian's PostgreSQL 15 and PostGIS 3
        (apt, only if missing) and a SEPARATE virtualenv (.cache/stac-venv) with the
        pinned STAC server packages. It never touches the project's own venv, because
        stac-fastapi-pgstac pins its own pydantic/fastapi/starlette.

    python scripts/stac_server.py start --dir D [--items ITEMS.ndjson] [--collection C.json]
                                        [--port P] [--timeout S]
        Starts PostgreSQL (data under D, loopback only, run as the `postgres` user when
        we are root) and the API (uvicorn on 127.0.0.1:P, a free port if P is not given),
        creates the pgstac schema, loads the collection (default: a LandsatLook-like
        `landsat-c2ard-sr`) and the items, and prints the API URL as the last stdout line.
        Started again on the same D, it stops what runs there first and reuses the cluster
        (keeping its items unless --items is given).

    python scripts/stac_server.py load --dir D --items ITEMS.ndjson [--collection C.json] [--append]
        (Re)loads into a running server: upserts the collection, deletes the collection's
        items (unless --append) and loads ITEMS.

    python scripts/stac_server.py stop --dir D
        Stops the API and PostgreSQL started in D. Idempotent.

    python scripts/stac_server.py url --dir D
        Prints the URL of the server running in D.

Environment overrides: EO_STAC_VENV (venv location), EO_PG_BINDIR (PostgreSQL binaries;
default Debian's /usr/lib/postgresql/15/bin -- NOT whatever initdb/pg_ctl is first on
PATH, which may be a build without PostGIS).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAC_VENV = Path(os.environ.get("EO_STAC_VENV", REPO / ".cache" / "stac-venv"))
PG_VERSION = "15"
PG_BINDIR = Path(os.environ.get("EO_PG_BINDIR", f"/usr/lib/postgresql/{PG_VERSION}/bin"))
PG_SHAREDIR = Path(f"/usr/share/postgresql/{PG_VERSION}")
APT_PACKAGES = ["postgresql", f"postgresql-{PG_VERSION}", f"postgresql-{PG_VERSION}-postgis-3"]
PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root
DB_NAME = "pgstac"
COLLECTION_ID = "landsat-c2ard-sr"

# The STAC server's Python packages, fully pinned (the resolved set of
# `stac-fastapi-pgstac[server]==7.2.0` + `pypgstac[psycopg]==0.10.0` on CPython 3.11,
# checked working together). Installed into STAC_VENV only.
STAC_PINS = """
stac-fastapi-pgstac[server]==7.2.0
stac-fastapi-api==7.0.0
stac-fastapi-extensions==7.0.0
stac-fastapi-types==7.0.0
pypgstac[psycopg]==0.10.0
stac-pydantic==3.7.1
geojson-pydantic==2.2.0
fastapi==0.165.0
starlette==1.10.0
pydantic==2.14.3
pydantic_core==2.50.4
pydantic-settings==2.16.3
uvicorn[standard]==0.38.0
uvloop==0.23.0
httptools==0.9.0
watchfiles==1.3.0
websockets==17.4
asyncpg==0.32.0
buildpg==0.4
cql2==0.6.0
hydraters==0.1.4
psycopg==3.3.9
psycopg-binary==3.3.9
psycopg-pool==3.3.3
orjson==3.13.0
plpygis==0.6.1
brotli==1.2.1
brotli-asgi==1.7.0
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
cachetools==6.0.0
click==8.5.1
fire==0.7.1
h11==0.16.0
idna==3.20
iso8601==2.1.0
json-merge-patch==0.3.0
jsonpatch==1.47
jsonpointer==3.12
opentelemetry-api==1.45.2
python-dateutil==4.0.0
python-dotenv==1.2.4
PyYAML==6.0.3
smart_open==9.0.2
tenacity==9.2.1
termcolor==3.3.0
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
version_parser==1.0.1
wrapt==2.5.2
"""

# Settings for a throw-away test cluster: durability off, small footprint.
PG_CONF = """
# --- eo-extract test STAC server ---
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
shared_buffers = 64MB
work_mem = 8MB
max_wal_size = 256MB
log_min_messages = warning
log_min_error_statement = error
"""

START_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[stac_server {time.monotonic() - START_T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd, *, check=True, capture=True, env=None, input=None, timeout=None) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(
        cmd,
        check=False,
        text=True,
        env=env,
        input=input,
        timeout=timeout,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )
    if check and proc.returncode != 0:
        out = (proc.stdout or "")[-4000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out}")
    return proc


# --------------------------------------------------------------------------- setup


def _is_root() -> bool:
    return os.geteuid() == 0


def _apt_missing() -> list[str]:
    missing = []
    for pkg in APT_PACKAGES:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if p.returncode != 0 or "install ok installed" not in p.stdout:
            missing.append(pkg)
    return missing


def _pg_ok() -> bool:
    return (
        (PG_BINDIR / "initdb").exists()
        and (PG_BINDIR / "pg_ctl").exists()
        and (PG_SHAREDIR / "extension" / "postgis.control").exists()
        and (PG_SHAREDIR / "extension" / "btree_gist.control").exists()
    )


def setup_apt() -> None:
    if os.environ.get("EO_PG_BINDIR"):
        if not _pg_ok():
            raise SystemExit(f"EO_PG_BINDIR={PG_BINDIR}: initdb/pg_ctl or PostGIS missing")
        return
    missing = _apt_missing()
    if not missing and _pg_ok():
        return
    missing = missing or APT_PACKAGES
    prefix: list[str] = []
    if not _is_root():
        if (
            shutil.which("sudo")
            and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
        ):
            prefix = ["sudo", "-n"]
        else:
            raise SystemExit(
                f"missing Debian packages {missing}; as root run: apt-get install {' '.join(APT_PACKAGES)}"
            )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"apt-get install {' '.join(missing)}")
    # wait for a concurrent apt/dpkg instead of failing on its lock
    install = [
        *prefix,
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=600",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        *missing,
    ]
    p = run(install, check=False, env=env, timeout=1800)
    if p.returncode != 0:
        # Fresh machine: package lists may be missing or stale.
        run([*prefix, "apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q"], env=env, timeout=900)
        run(install, env=env, timeout=1800)
    if not _pg_ok():
        raise SystemExit(
            f"after apt-get install, PostgreSQL/PostGIS still not found under {PG_BINDIR}, {PG_SHAREDIR}"
        )


def _pins_hash() -> str:
    return hashlib.sha256((sys.version.split()[0][:4] + STAC_PINS).encode()).hexdigest()[:16]


def venv_python() -> Path:
    return STAC_VENV / "bin" / "python"


def setup_venv() -> None:
    marker = STAC_VENV / ".eo-pins"
    if venv_python().exists() and marker.exists() and marker.read_text().strip() == _pins_hash():
        return
    base = getattr(sys, "_base_executable", None) or sys.executable
    if STAC_VENV.exists():
        shutil.rmtree(STAC_VENV)
    STAC_VENV.parent.mkdir(parents=True, exist_ok=True)
    log(f"creating {STAC_VENV} (python {sys.version.split()[0]})")
    run([base, "-m", "venv", STAC_VENV])
    reqs = STAC_VENV / "requirements.txt"
    reqs.write_text(STAC_PINS.strip() + "\n")
    log("pip install STAC server packages")
    run(
        [venv_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", reqs], timeout=1800
    )
    run([venv_python(), "-c", "import stac_fastapi.pgstac.app, pypgstac.load, uvicorn, psycopg"])
    marker.write_text(_pins_hash() + "\n")


def setup() -> None:
    t = time.monotonic()
    setup_apt()
    setup_venv()
    log(f"setup ok ({time.monotonic() - t:.1f}s)")


# --------------------------------------------------------------------------- postgres


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg_user(cmd: list) -> list:
    if _is_root():
        return ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return list(cmd)


def _chown_pg(path: Path) -> None:
    if _is_root():
        shutil.chown(path, user=PG_OS_USER, group=PG_OS_USER)


def _pg_can_use(path: Path) -> bool:
    """Can the postgres OS user reach and write `path`? (pytest's /tmp/pytest-of-root is 0700.)"""
    if not _is_root():
        return True
    return (
        subprocess.run(
            _as_pg_user(["test", "-w", str(path), "-a", "-x", str(path)]), capture_output=True
        ).returncode
        == 0
    )


def pg_root(workdir: Path, create: bool) -> Path:
    """The cluster's directory: workdir/pg, or a /tmp dir that workdir/pg links to when the
    postgres user cannot reach workdir."""
    link = workdir / "pg"
    if link.exists():
        return link.resolve()
    if not create:
        raise SystemExit(f"no PostgreSQL cluster in {workdir}")
    link.mkdir()
    _chown_pg(link)
    if _pg_can_use(link):
        return link
    link.rmdir()
    real = Path(tempfile.mkdtemp(prefix="eo-stac-pg-"))
    _chown_pg(real)
    link.symlink_to(real, target_is_directory=True)
    (workdir / "pg.external").write_text(str(real) + "\n")
    return real


def pg_init(root: Path) -> None:
    data = root / "data"
    if (data / "PG_VERSION").exists():
        return
    log("initdb")
    run(
        _as_pg_user(
            [
                PG_BINDIR / "initdb",
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
    )
    conf = data / "postgresql.conf"
    with open(conf, "a") as f:
        f.write(PG_CONF)


def pg_start(root: Path, port: int, timeout: float) -> None:
    sock = root / "sock"
    if not sock.exists():
        sock.mkdir()
        _chown_pg(sock)
    # unix socket paths are limited to ~107 bytes; TCP on loopback is what we use anyway
    sockdir = str(sock) if len(str(sock)) < 80 else ""
    opts = f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{sockdir}'"
    log(f"pg_ctl start (port {port})")
    p = run(
        _as_pg_user(
            [
                PG_BINDIR / "pg_ctl",
                "-D",
                root / "data",
                "-l",
                root / "postgres.log",
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                opts,
                "start",
            ]
        ),
        check=False,
    )
    if p.returncode != 0:
        tail = ""
        with contextlib.suppress(OSError):
            tail = (root / "postgres.log").read_text()[-3000:]
        raise SystemExit(f"PostgreSQL did not start:\n{p.stdout}\n{tail}")


def pg_stop(root: Path) -> None:
    data = root / "data"
    if not (data / "postmaster.pid").exists():
        return
    run(_as_pg_user([PG_BINDIR / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "stop"]), check=False)


def psql(port: int, sql: str, db: str = "postgres") -> str:
    p = run(
        [
            PG_BINDIR / "psql",
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ]
    )
    return p.stdout.strip()


def dsn(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{DB_NAME}"


def pg_prepare_db(port: int) -> None:
    if psql(port, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'") != "1":
        psql(port, f"CREATE DATABASE {DB_NAME}")
    log("pypgstac migrate")
    run([STAC_VENV / "bin" / "pypgstac", "migrate", "--dsn", dsn(port)], timeout=600)
    # numberMatched/context like LandsatLook's stac-server returns (exact counts; tiny data)
    psql(
        port,
        "INSERT INTO pgstac.pgstac_settings (name, value) VALUES ('context', 'on') "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        db=DB_NAME,
    )


# --------------------------------------------------------------------------- collection


def default_collection() -> dict:
    """A collection shaped like LandsatLook's `landsat-c2ard-sr` (Landsat Collection 2 ARD SR)."""
    band = lambda name, common, cw: {  # noqa: E731
        "type": "image/vnd.stac.geotiff; cloud-optimized=true",
        "roles": ["data", "reflectance"] if common not in ("blue", "green", "red") else ["data"],
        "eo:bands": [{"name": name, "common_name": common, "gsd": 30, "center_wavelength": cw}],
    }
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
        ],
        "id": COLLECTION_ID,
        "title": "Landsat Collection 2 ARD Surface Reflectance",
        "description": "Landsat Collection 2 U.S. Analysis Ready Data (ARD) Surface Reflectance "
        "Product (test copy served by pgstac)",
        "keywords": ["landsat", "ard", "surface reflectance", "usgs"],
        "license": "PDDL-1.0",
        "providers": [
            {
                "name": "USGS",
                "roles": ["producer", "processor", "licensor"],
                "url": "https://landsat.usgs.gov/",
            }
        ],
        "extent": {
            "spatial": {"bbox": [[-180.0, 15.0, -60.0, 75.0]]},
            "temporal": {"interval": [["1982-08-22T00:00:00Z", None]]},
        },
        "summaries": {
            "platform": ["LANDSAT_4", "LANDSAT_5", "LANDSAT_7", "LANDSAT_8", "LANDSAT_9"],
            "instruments": ["TM", "ETM", "OLI", "TIRS"],
            "landsat:grid_region": ["CU", "AK", "HI"],
        },
        "item_assets": {
            "blue": band("B2", "blue", 0.48),
            "green": band("B3", "green", 0.56),
            "red": band("B4", "red", 0.65),
            "nir08": band("B5", "nir08", 0.86),
            "swir16": band("B6", "swir16", 1.6),
            "swir22": band("B7", "swir22", 2.2),
            "qa_pixel": {
                "type": "image/vnd.stac.geotiff; cloud-optimized=true",
                "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
            },
        },
        "links": [
            {"rel": "license", "href": "https://www.usgs.gov/core-science-systems/hdds/data-policy"},
        ],
    }


# --------------------------------------------------------------------------- loading


def _load_in_venv(dsn_: str, collection_file: str, items_file: str | None, append: bool) -> None:
    """Runs inside STAC_VENV (needs pypgstac)."""
    from datetime import datetime, timedelta

    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    collection = json.loads(Path(collection_file).read_text())
    items: list[dict] = []
    if items_file:
        with open(items_file, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    item = json.loads(line)  # not pypgstac's reader: it mangles "\\\\"
                    item.setdefault("collection", collection["id"])
                    items.append(item)

    # pypgstac tracks a partition's datetime range by comparing the datetime *strings*
    # ("...:05Z" > "...:05.5Z", "-05:00" offsets, 7-digit fractions that PostgreSQL rounds up
    # past a neighbour), so a load can die on the partition's CHECK constraint. Widen the
    # constraint first from the real (parsed) range, with a day of slack either side.
    stamps = []
    for item in items:
        props = item.get("properties") or {}
        for key in ("datetime", "start_datetime", "end_datetime"):
            if props.get(key):
                with contextlib.suppress(ValueError):  # let pgstac report it
                    stamps.append(datetime.fromisoformat(props[key].replace("z", "Z")))

    with PgstacDB(dsn=dsn_) as db:
        loader = Loader(db=db)
        loader.load_collections(iter([collection]), insert_mode=Methods.upsert)
        conn = db.connect()
        if not append:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM pgstac.items WHERE collection = %s", (collection["id"],))
            conn.commit()
        if stamps:
            lo, hi = (
                (min(stamps) - timedelta(days=1)).isoformat(),
                (max(stamps) + timedelta(days=1)).isoformat(),
            )
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT pgstac.check_partition(%s, tstzrange(%s, %s, '[]'), tstzrange(%s, %s, '[]'))",
                        (collection["id"], lo, hi, lo, hi),
                    )
                conn.commit()
            except Exception as e:  # e.g. a collection partitioned by year/month: leave it to pypgstac
                conn.rollback()
                print(f"note: could not pre-widen partition constraint: {e}", file=sys.stderr)
        if items:
            loader.load_items(iter(items), insert_mode=Methods.upsert)


def load(workdir: Path, items_file: Path | None, collection_file: Path | None, append: bool = False) -> None:
    state = read_state(workdir)
    if collection_file is None:
        collection_file = workdir / "collection.json"
        collection_file.write_text(json.dumps(default_collection(), indent=1))
    t = time.monotonic()
    run(
        [
            venv_python(),
            Path(__file__).resolve(),
            "_load",
            "--dsn",
            dsn(state["pg_port"]),
            "--collection",
            Path(collection_file).resolve(),
            *(["--items", Path(items_file).resolve()] if items_file else []),
            *(["--append"] if append else []),
        ],
        timeout=600,
    )
    log(f"loaded {items_file or 'no items'} ({time.monotonic() - t:.1f}s)")


# --------------------------------------------------------------------------- API


def state_file(workdir: Path) -> Path:
    return workdir / "state.json"


def read_state(workdir: Path) -> dict:
    try:
        return json.loads(state_file(workdir).read_text())
    except FileNotFoundError:
        raise SystemExit(f"no STAC server state in {workdir} (not started?)") from None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api_start(workdir: Path, port: int, pg_port: int, timeout: float) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "VIRTUAL_ENV"))}
    env.update(
        PGUSER="postgres",
        PGPASSWORD="trust-auth-unused",
        PGHOST="127.0.0.1",
        PGPORT=str(pg_port),
        PGDATABASE=DB_NAME,
        STAC_FASTAPI_TITLE="eo-extract test STAC API (pgstac)",
        STAC_FASTAPI_LANDING_ID="eo-extract-test-pgstac",
        STAC_FASTAPI_DESCRIPTION="pgstac + stac-fastapi-pgstac started by the eo-extract tests",
        STAC_FASTAPI_VERSION="7.2.0",
        DB_MIN_CONN_SIZE="1",
        DB_MAX_CONN_SIZE="5",
        ENABLE_TRANSACTIONS_EXTENSIONS="false",
        PYTHONUNBUFFERED="1",
    )
    url = f"http://127.0.0.1:{port}"
    log_f = open(workdir / "api.log", "ab")  # noqa: SIM115  (handed to the detached server process)
    cmd = [
        STAC_VENV / "bin" / "uvicorn",
        "stac_fastapi.pgstac.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    log(f"uvicorn on {url}")
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=workdir,
        env=env,
        stdout=log_f,
        stderr=log_f,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(
                f"uvicorn exited ({proc.returncode}):\n"
                + (workdir / "api.log").read_text(errors="replace")[-4000:]
            )
        try:
            status, _ = http_get(url + "/_mgmt/ping", timeout=2)
            if status == 200:
                status, _body = http_get(url + "/", timeout=10)
                if status == 200:
                    break
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(
                f"STAC API did not answer on {url} within {timeout}s:\n"
                + (workdir / "api.log").read_text(errors="replace")[-4000:]
            )
        time.sleep(0.2)
    return proc.pid, url


def _kill(pid: int | None, timeout: float = 15) -> None:
    if not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)  # uvicorn runs in its own session/process group
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- commands


def start(
    workdir: Path, items_file: Path | None, collection_file: Path | None, port: int | None, timeout: float
) -> str:
    t0 = time.monotonic()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    setup()
    if state_file(workdir).exists():
        stop(workdir, remove_cluster=False)
    root = pg_root(workdir, create=True)
    pg_init(root)
    pg_port = free_port()
    pg_start(root, pg_port, timeout)
    try:
        pg_prepare_db(pg_port)
        state = {"pg_port": pg_port, "pg_root": str(root), "api_pid": None, "url": None}
        state_file(workdir).write_text(json.dumps(state))
        # a restarted cluster keeps its items unless new ones are given
        load(workdir, items_file, collection_file, append=items_file is None)
        api_port = port or free_port()
        pid, url = api_start(workdir, api_port, pg_port, timeout)
    except BaseException:
        pg_stop(root)
        raise
    state.update(api_pid=pid, url=url, api_port=api_port)
    state_file(workdir).write_text(json.dumps(state))
    log(f"STAC API ready at {url} (start took {time.monotonic() - t0:.1f}s)")
    return url


def stop(workdir: Path, remove_cluster: bool = False) -> None:
    workdir = workdir.resolve()
    try:
        state = json.loads(state_file(workdir).read_text())
    except FileNotFoundError:
        state = {}
    _kill(state.get("api_pid"))
    link = workdir / "pg"
    if link.exists():
        pg_stop(link.resolve())
    state_file(workdir).unlink(missing_ok=True)
    if remove_cluster:
        ext = workdir / "pg.external"
        if ext.exists():
            shutil.rmtree(ext.read_text().strip(), ignore_errors=True)
            ext.unlink()
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            shutil.rmtree(link, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install PostgreSQL/PostGIS (apt) and the STAC venv, if missing")
    p = sub.add_parser("start", help="start PostgreSQL + STAC API in DIR, load items, print the URL")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--items", type=Path, help="newline-delimited JSON items")
    p.add_argument("--collection", type=Path, help=f"collection JSON (default: built-in {COLLECTION_ID})")
    p.add_argument("--port", type=int, help="API port on 127.0.0.1 (default: a free one)")
    p.add_argument("--timeout", type=float, default=120)
    p = sub.add_parser("load", help="(re)load the collection and its items into the server in DIR")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--items", type=Path)
    p.add_argument("--collection", type=Path)
    p.add_argument("--append", action="store_true", help="keep the collection's existing items")
    p = sub.add_parser("stop", help="stop the server in DIR")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--clean", action="store_true", help="also delete the PostgreSQL cluster")
    p = sub.add_parser("url", help="print the URL of the server in DIR")
    p.add_argument("--dir", type=Path, required=True)
    p = sub.add_parser("_load")  # internal: runs inside the STAC venv
    p.add_argument("--dsn", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--items")
    p.add_argument("--append", action="store_true")
    a = ap.parse_args(argv)

    if a.cmd == "setup":
        setup()
    elif a.cmd == "start":
        print(start(a.dir, a.items, a.collection, a.port, a.timeout), flush=True)
    elif a.cmd == "load":
        load(a.dir.resolve(), a.items, a.collection, a.append)
    elif a.cmd == "stop":
        stop(a.dir, remove_cluster=a.clean)
    elif a.cmd == "url":
        print(read_state(a.dir.resolve())["url"])
    elif a.cmd == "_load":
        _load_in_venv(a.dsn, a.collection, a.items, a.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
