"""The project's own S3 server (SeaweedFS + counting proxy) against real clients:
boto3, s3fs, GDAL /vsis3/ through rasterio, and a subprocess using only env()."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.servers.s3 import S3Server

pytestmark = pytest.mark.s3

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    s3_server.reset_counts()
    return name


def _zero(**kinds: int) -> dict[str, int]:
    out = dict.fromkeys(("GET", "HEAD", "PUT", "POST", "DELETE", "LIST"), 0)
    out.update(kinds)
    return out


def test_server_binds_loopback_and_started_quickly(s3_server: S3Server) -> None:
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    assert s3_server.host_port == s3_server.endpoint_url.removeprefix("http://")
    print(f"\nS3 server startup: {s3_server.startup_seconds:.2f} s")
    assert s3_server.startup_seconds < 30
    listening = _listening_addresses(s3_server.weed.pid)
    assert len(listening) >= 9, listening  # master, volume, filer, s3, admin (+ gRPC)
    assert {host for host, _ in listening} == {"127.0.0.1"}, listening
    assert int(s3_server.direct_endpoint_url.rsplit(":", 1)[1]) in {port for _, port in listening}


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(host, port) of the TCP sockets process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] != "0A" or f[9] not in inodes:  # 0A = LISTEN
                    continue
                addr, port = f[1].split(":")
                if width == 8:
                    host = ".".join(str(b) for b in reversed(bytes.fromhex(addr)))
                else:
                    host = "v6:" + addr  # any IPv6 listener fails the loopback check
                out.add((host, int(port, 16)))
    return out


def test_boto3_put_get_list_with_exact_counts(s3_server: S3Server, bucket: str) -> None:
    c = s3_server.client()
    c.put_object(Bucket=bucket, Key="a/one.txt", Body=b"hello world")
    c.put_object(Bucket=bucket, Key="a/two.txt", Body=b"second")
    c.put_object(Bucket=bucket, Key="b/three.txt", Body=b"third")
    assert c.head_object(Bucket=bucket, Key="a/one.txt")["ContentLength"] == 11
    assert c.get_object(Bucket=bucket, Key="a/one.txt")["Body"].read() == b"hello world"
    part = c.get_object(Bucket=bucket, Key="a/one.txt", Range="bytes=6-10")
    assert part["Body"].read() == b"world"
    assert part["ContentRange"] == "bytes 6-10/11"
    v2 = c.list_objects_v2(Bucket=bucket, Prefix="a/")
    assert [o["Key"] for o in v2["Contents"]] == ["a/one.txt", "a/two.txt"]
    v1 = c.list_objects(Bucket=bucket, Delimiter="/")
    assert sorted(p["Prefix"] for p in v1["CommonPrefixes"]) == ["a/", "b/"]
    assert bucket in [b["Name"] for b in c.list_buckets()["Buckets"]]
    c.delete_object(Bucket=bucket, Key="b/three.txt")
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket, Key="b/three.txt")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"

    counts = s3_server.request_counts()
    print("\ncounts:", counts)
    assert counts == _zero(PUT=3, HEAD=1, GET=3, LIST=3, DELETE=1)
    assert s3_server.request_counts(bucket) == _zero(PUT=3, HEAD=1, GET=3, LIST=2, DELETE=1)
    # 11 + 5 bytes of object data came back through GET
    assert s3_server.response_bytes(bucket)["GET"] > 16  # + the NoSuchKey error document
    s3_server.reset_counts()
    assert s3_server.request_counts() == _zero()
    assert s3_server.requests() == []


def test_upload_dir_and_create_bucket_helpers(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "LC08" / "B4").mkdir(parents=True)
    (src / "LC08" / "B4" / "x.tif").write_bytes(b"tif")
    (src / "LC08" / "meta.json").write_text("{}")
    (src / "top.txt").write_text("t")
    keys = s3_server.upload_dir(src, bucket, prefix="/archive/")
    assert keys == ["archive/LC08/B4/x.tif", "archive/LC08/meta.json", "archive/top.txt"]
    assert s3_server.request_counts() == _zero(PUT=3)
    listed = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == keys
    assert s3_server.upload_dir(src / "LC08", bucket) == ["B4/x.tif", "meta.json"]
    assert s3_server.create_bucket(bucket) == bucket  # exists: fine
    with pytest.raises(ClientError):
        s3_server.create_bucket(bucket, exist_ok=False)


def test_missing_bucket_is_an_error_like_aws(s3_server: S3Server) -> None:
    c = s3_server.client()
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=f"missing-{uuid.uuid4().hex[:8]}", Key="k", Body=b"x")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"


def test_wrong_or_missing_credentials_are_refused(s3_server: S3Server, bucket: str) -> None:
    s3_server.client().put_object(Bucket=bucket, Key="secret.txt", Body=b"s")
    import boto3

    def client(**kw):
        return boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name=s3_server.region, **kw)

    wrong_secret = client(aws_access_key_id=s3_server.access_key, aws_secret_access_key="not-the-secret")
    wrong_key = client(aws_access_key_id="AKIAWRONGWRONGWRONG", aws_secret_access_key=s3_server.secret_key)
    unsigned = client(config=Config(signature_version=UNSIGNED))
    for c, codes in [
        (wrong_secret, {"SignatureDoesNotMatch"}),
        (wrong_key, {"InvalidAccessKeyId"}),
        (unsigned, {"AccessDenied"}),
    ]:
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=bucket, Key="secret.txt")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert e.value.response["Error"]["Code"] in codes | {"403"}
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=bucket, Key="intruder.txt", Body=b"x" * 5000)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError):
            c.list_objects_v2(Bucket=bucket)
    # the gateway itself (not only the proxy) refuses anonymous requests
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(f"{s3_server.direct_endpoint_url}/{bucket}/secret.txt", timeout=5)
    assert he.value.code == 403
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["secret.txt"]
    statuses = s3_server.proxy.status_counts()
    assert statuses[("GET", 403)] == 3 and statuses[("PUT", 403)] == 3 and statuses[("LIST", 403)] == 3


def test_s3fs_ls_open_put(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(
        key=s3_server.access_key,
        secret=s3_server.secret_key,
        client_kwargs={"endpoint_url": s3_server.endpoint_url},
        skip_instance_cache=True,
    )
    local = tmp_path / "local.bin"
    payload = os.urandom(300_000)
    local.write_bytes(payload)
    fs.put(str(local), f"{bucket}/dir/local.bin")
    with fs.open(f"{bucket}/dir/note.txt", "wb") as f:
        f.write(b"written via s3fs")
    fs.pipe(f"{bucket}/dir/sub/piped.txt", b"piped")
    assert sorted(fs.ls(f"{bucket}/dir")) == [
        f"{bucket}/dir/local.bin",
        f"{bucket}/dir/note.txt",
        f"{bucket}/dir/sub",
    ]
    assert fs.find(f"{bucket}/dir") == [
        f"{bucket}/dir/local.bin",
        f"{bucket}/dir/note.txt",
        f"{bucket}/dir/sub/piped.txt",
    ]
    assert fs.info(f"{bucket}/dir/local.bin")["size"] == len(payload)
    with fs.open(f"{bucket}/dir/local.bin", "rb", block_size=2**16) as f:
        f.seek(100_000)
        assert f.read(1000) == payload[100_000:101_000]
    assert fs.cat_file(f"{bucket}/dir/local.bin", start=10, end=20) == payload[10:20]
    assert fs.cat(f"{bucket}/dir/note.txt") == b"written via s3fs"
    fs.get(f"{bucket}/dir/local.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == payload
    # the helper gives the same thing
    assert s3_server.fs().cat(f"{bucket}/dir/sub/piped.txt") == b"piped"
    print("\ns3fs counts:", s3_server.request_counts())


def test_single_put_and_rename_patterns(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    c = s3_server.client()
    # single-PUT upload of a finished file: exactly one PUT, no multipart
    local = tmp_path / "chip.bin"
    local.write_bytes(os.urandom(3 * 2**20))
    s3_server.reset_counts()
    c.put_object(Bucket=bucket, Key="out/chip.bin", Body=local.read_bytes())
    assert s3_server.request_counts() == _zero(PUT=1)

    # "atomic-ish rename": write under a temporary key, server-side copy, delete temp
    s3_server.reset_counts()
    c.put_object(Bucket=bucket, Key="out/.tmp-result.json", Body=b'{"ok": true}')
    c.copy_object(
        Bucket=bucket, Key="out/result.json", CopySource={"Bucket": bucket, "Key": "out/.tmp-result.json"}
    )
    c.delete_object(Bucket=bucket, Key="out/.tmp-result.json")
    assert s3_server.request_counts() == _zero(PUT=2, DELETE=1)  # CopyObject is a PUT
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert keys == ["out/chip.bin", "out/result.json"]
    assert c.get_object(Bucket=bucket, Key="out/result.json")["Body"].read() == b'{"ok": true}'

    # s3fs mv (copy + delete) and a conditional create (If-None-Match: *) both work
    fs = s3_server.fs()
    fs.mv(f"{bucket}/out/result.json", f"{bucket}/out/final.json")
    assert not fs.exists(f"{bucket}/out/result.json")
    assert fs.cat(f"{bucket}/out/final.json") == b'{"ok": true}'
    c.put_object(Bucket=bucket, Key="out/once.txt", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=bucket, Key="out/once.txt", Body=b"2", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert c.get_object(Bucket=bucket, Key="out/once.txt")["Body"].read() == b"1"


def test_multipart_and_large_streaming_keep_etag_and_ranges(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(20 * 2**20 + 123)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    c = s3_server.client()
    s3_server.reset_counts()
    c.upload_file(
        str(local),
        bucket,
        "big.bin",
        Config=TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20),
    )
    counts = s3_server.request_counts()
    assert counts["POST"] == 2 and counts["PUT"] == 3, counts  # create + complete; 3 parts
    got = c.get_object(Bucket=bucket, Key="big.bin")
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(data).digest()
    r = c.get_object(Bucket=bucket, Key="big.bin", Range="bytes=15000000-15000099")
    assert r["Body"].read() == data[15_000_000:15_000_100]
    # the proxy passes ETag etc. unchanged: same as straight from the gateway
    import boto3

    direct = boto3.client(
        "s3",
        endpoint_url=s3_server.direct_endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    )
    assert (
        direct.head_object(Bucket=bucket, Key="big.bin")["ETag"]
        == c.head_object(Bucket=bucket, Key="big.bin")["ETag"]
    )
    assert s3_server.response_bytes(bucket)["GET"] == len(data) + 100


def test_counts_are_exact_under_concurrency(s3_server: S3Server, bucket: str) -> None:
    c = s3_server.client(max_pool_connections=16)
    c.put_object(Bucket=bucket, Key="k", Body=b"v" * 1000)
    s3_server.reset_counts()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(n):
                assert c.get_object(Bucket=bucket, Key="k", Range=f"bytes={i}-{i}")["Body"].read() == b"v"
                c.head_object(Bucket=bucket, Key="k")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert s3_server.request_counts() == _zero(GET=200, HEAD=200)


def _write_cog(path: Path) -> np.ndarray:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(42)
    data = rng.integers(0, 10_000, size=(1, 1024, 1024), dtype=np.uint16)
    profile = {
        "driver": "GTiff",
        "width": 1024,
        "height": 1024,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": Affine(30, 0, 500_000, 0, -30, 4_000_000),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "interleave": "band",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


def test_gdal_vsis3_cog_window_is_a_few_range_requests(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    import rasterio
    import rasterio.session
    from rasterio.windows import Window

    tif = tmp_path / "scene.tif"
    data = _write_cog(tif)
    size = tif.stat().st_size
    s3_server.client().upload_file(str(tif), bucket, "landsat/scene.tif")
    s3_server.reset_counts()

    session = rasterio.session.AWSSession(
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        endpoint_url=s3_server.host_port,
        requester_pays=True,
    )
    with (
        rasterio.Env(
            session=session,
            AWS_HTTPS="NO",
            AWS_VIRTUAL_HOSTING="FALSE",
            GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        ),
        rasterio.open(f"/vsis3/{bucket}/landsat/scene.tif") as src,
    ):
        assert (src.width, src.height, src.block_shapes[0]) == (1024, 1024, (256, 256))
        window = src.read(1, window=Window(256, 512, 256, 256))
        small = src.read(1, window=Window(700, 100, 10, 5))
    np.testing.assert_array_equal(window, data[0, 512:768, 256:512])
    np.testing.assert_array_equal(small, data[0, 100:105, 700:710])

    counts = s3_server.request_counts(bucket)
    served = s3_server.response_bytes(bucket)
    reqs = [r for r in s3_server.requests() if r.bucket == bucket]
    print(f"\nGDAL window read of a {size} B COG: counts={counts} bytes={served}")
    for r in reqs:
        print(f"  {r.method} {r.target} range={r.headers.get('range')} -> {r.status}, {r.response_bytes} B")
    assert counts["LIST"] == 0 and counts["PUT"] == 0 and counts["POST"] == 0
    assert counts["HEAD"] <= 1
    assert 1 <= counts["GET"] <= 6
    assert all(r.headers.get("range") for r in reqs if r.method == "GET"), "every GET is a range request"
    assert sum(served.values()) < size / 3, "no full-object read"
    # every request carried x-amz-request-payer: requester
    assert s3_server.requester_pays_counts(bucket) == counts
    assert all(h.get("x-amz-request-payer") == "requester" for h in s3_server.headers_seen)


def test_requester_pays_header_is_counted(s3_server: S3Server, bucket: str) -> None:
    c = s3_server.client()
    c.put_object(Bucket=bucket, Key="k", Body=b"v")
    s3_server.reset_counts()
    c.get_object(Bucket=bucket, Key="k", RequestPayer="requester")
    c.head_object(Bucket=bucket, Key="k", RequestPayer="requester")
    c.get_object(Bucket=bucket, Key="k")
    c.list_objects_v2(Bucket=bucket, RequestPayer="requester")
    assert s3_server.request_counts(bucket) == _zero(GET=2, HEAD=1, LIST=1)
    assert s3_server.requester_pays_counts(bucket) == _zero(GET=1, HEAD=1, LIST=1)
    assert s3_server.header_counts("x-amz-request-payer", bucket=bucket) == _zero(GET=1, HEAD=1, LIST=1)
    fs = s3_server.fs(requester_pays=True)
    s3_server.reset_counts()
    assert fs.cat(f"{bucket}/k") == b"v"
    counts = s3_server.request_counts(bucket)
    assert sum(counts.values()) >= 1 and s3_server.requester_pays_counts(bucket) == counts


def test_subprocess_with_env_only(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    """A child process (Luigi worker, CLI) reaches the server with env() alone:
    boto3, s3fs and GDAL/rasterio, without endpoint or key arguments."""
    tif = tmp_path / "scene.tif"
    data = _write_cog(tif)
    s3_server.client().upload_file(str(tif), bucket, "scene.tif")
    code = textwrap.dedent(
        f"""
        import json, boto3, s3fs, rasterio
        from rasterio.windows import Window
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="{bucket}")["Contents"]]
        fs = s3fs.S3FileSystem()
        fs.pipe("{bucket}/from-child.txt", b"child")
        with rasterio.open("/vsis3/{bucket}/scene.tif") as src:
            px = src.read(1, window=Window(3, 2, 1, 1)).item()
        print(json.dumps({{"keys": keys, "px": px}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_server.env())
    env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    env["HOME"] = str(tmp_path)  # no ~/.aws
    s3_server.reset_counts()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"keys": ["scene.tif"], "px": int(data[0, 2, 3])}
    assert s3_server.client().get_object(Bucket=bucket, Key="from-child.txt")["Body"].read() == b"child"
    print("\nchild counts:", s3_server.request_counts(bucket))


def test_start_stop_script(tmp_path: Path) -> None:
    """scripts/s3_server.py start/stop for manual use (a second, independent server)."""
    script = REPO / "scripts" / "s3_server.py"
    d = tmp_path / "manual"
    start = subprocess.run(
        [sys.executable, str(script), "start", "--dir", str(d)], capture_output=True, text=True, timeout=90
    )
    assert start.returncode == 0, start.stderr
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in start.stdout.splitlines()
        if line.startswith("export ")
    )
    env = {k: v.strip("'\"") for k, v in env.items()}
    try:
        import boto3

        c = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
            config=Config(retries={"max_attempts": 1}, connect_timeout=2),
        )
        c.create_bucket(Bucket="manual-bucket")
        c.put_object(Bucket="manual-bucket", Key="k", Body=b"v")
        again = subprocess.run(
            [sys.executable, str(script), "start", "--dir", str(d)],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert again.returncode == 0 and "already running" in again.stderr
    finally:
        stop = subprocess.run(
            [sys.executable, str(script), "stop", "--dir", str(d), "--grace", "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stop.returncode == 0, stop.stderr
    with pytest.raises(BotoCoreError):  # the server is gone: no connection
        c.list_buckets()
    # data persists across a restart of the same dir
    start = subprocess.run(
        [sys.executable, str(script), "start", "--dir", str(d)], capture_output=True, text=True, timeout=90
    )
    assert start.returncode == 0, start.stderr
    try:
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in start.stdout.splitlines()
            if line.startswith("export ")
        )
        env = {k: v.strip("'\"") for k, v in env.items()}
        c = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        assert c.get_object(Bucket="manual-bucket", Key="k")["Body"].read() == b"v"
    finally:
        stop = subprocess.run(
            [sys.executable, str(script), "stop", "--dir", str(d), "--grace", "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stop.returncode == 0, stop.stderr


def test_missing_weed_binary_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers.s3 import WeedNotFoundError, start_s3_server

    monkeypatch.setenv("WEED_BINARY", str(tmp_path / "no-such-weed"))
    with pytest.raises(WeedNotFoundError, match="WEED_BINARY"):
        start_s3_server(tmp_path / "w")


def test_port_taken_between_choice_and_bind_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import tests.servers.s3 as s3mod

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    real = s3mod._free_ports
    calls = []

    def first_one_taken(n, exclude=frozenset()):
        ports = real(n, exclude)
        if not calls:
            ports[0] = busy.getsockname()[1]  # the master port
        calls.append(ports)
        return ports

    monkeypatch.setattr(s3mod, "_free_ports", first_one_taken)
    try:
        server = s3mod.start_s3_server(tmp_path / "w")
    finally:
        busy.close()
    try:
        assert len(calls) == 2
        assert "==== attempt 2" in server.weed.log_path.read_text()
        server.create_bucket("after-retry")
    finally:
        server.stop()
