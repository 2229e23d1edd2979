"""Fast S3 PUTs of many small objects (targets.s3_put, used by the Causemos writer) against the real S3 server, which checks
every SigV4 signature: keys as the reference names them (spaces, non-ASCII, ``+``, ``%``, an empty
segment) land under the same names as botocore's requests put them, and a refused write says where."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from pipeline.causemos.outputs import ObjectWriter
from pipeline.errors import StorageError
from targets.s3_put import fast_putter
from targets.s3config import S3Options
from targets.store import Store

KEYS = [
    "m/r/month/f/regional/admin3/timeseries/default/Ethiopia__Afar__Afar Zone 3__Gewane.csv",
    "m/r/month/f/timeseries/qualifiers/camp//s_count.csv",
    "m/r/month/f/regional/country/timeseries/qualifiers/event/Explosions/Remote violence/Côte d'Ivoire 中.csv",
    "m/r/month/f/regional/country/aggs/0/qualifiers/a+b%20c&d=e?f#g.csv",
    "m/r/month/f/tiles/1546300800000-8-156-120.tile",
]


def _botocore_path(store: Store, key: str) -> str:
    bucket, _, root = store.root.partition("/")
    params = {"Bucket": bucket, "Key": f"{root}/{key}" if root else key}
    return urlsplit(store.lister.client.generate_presigned_url("put_object", Params=params)).path


def test_objects_land_under_botocores_names(s3_server, monkeypatch):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.create_bucket("causemos-s3put")
    store = Store(f"s3://{bucket}/run prefix", S3Options(endpoint_url=s3_server.endpoint_url))
    putter = fast_putter(store)
    assert putter is not None
    for key in KEYS:  # the request target is the one botocore presigns
        assert putter.signer.path(f"run prefix/{key}") == _botocore_path(store, key)
    s3_server.reset_counts()
    writer = ObjectWriter(store)
    writer.put_all((key, key.encode("utf-8")) for key in KEYS)
    stats = writer.close()
    assert stats.written == len(KEYS)
    assert s3_server.request_counts(bucket)["PUT"] == len(KEYS)  # one PUT per object
    client = s3_server.client()
    for key in KEYS:  # read back through boto3 under the name botocore gives the key
        body = client.get_object(Bucket=bucket, Key=f"run prefix/{key}")["Body"].read()
        assert body == key.encode("utf-8")


def test_a_refused_write_names_the_key(s3_server, monkeypatch):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.create_bucket("causemos-s3put-refused")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = Store(f"s3://{bucket}", S3Options(endpoint_url=s3_server.endpoint_url))
    putter = fast_putter(store)
    assert putter is not None
    with pytest.raises(StorageError, match=r"cannot write s3://causemos-s3put-refused/a b\.csv: HTTP 403"):
        putter.write_many({"a b.csv": b"x"})
