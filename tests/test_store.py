"""Stores: atomic writes, one-listing completeness, and many objects at once (S3 here only for
write_many/list_tree/delete_many; the rest is tested against the real server in
test_s3_pipeline.py)."""

import os

import pytest

from pipeline.errors import StorageError
from targets.s3config import S3Options
from targets.store import Store, shared_store


def test_write_is_atomic_and_listing_ignores_temporaries(tmp_path):
    store = Store(str(tmp_path / "out"))
    store.write_text("prj_1/a_spectral_files_set_2000_001.csv", "x\n")
    store.write_bytes("prj_1/tc/plot_a/plot_a_2000_001.png", b"png")
    # a temporary left behind by a killed writer is never taken for a target
    (tmp_path / "out" / "prj_1" / ".a_spectral_files_set_2000_002.csv.tmp-1-abc").write_text("half")
    assert store.list_names("prj_1", "a_spectral_files_set_") == {"a_spectral_files_set_2000_001.csv"}
    assert store.list_names("prj_1/tc/plot_a") == {"plot_a_2000_001.png"}
    assert store.list_names("prj_missing") == set()
    assert store.read_text("prj_1/a_spectral_files_set_2000_001.csv") == "x\n"


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    store = Store(str(tmp_path))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Exception, match="disk full"):
        store.write_text("f.csv", "data")
    assert os.listdir(tmp_path) == []


def test_a_file_written_at_a_path_replaces_its_target_whole_or_not_at_all(tmp_path, monkeypatch):
    store = Store(str(tmp_path))
    store.write_bytes("chips/a.tif", b"old")
    with store.replaced_locally("chips/a.tif") as path:
        assert os.path.dirname(path) == str(tmp_path / "chips") and path != str(tmp_path / "chips/a.tif")
        with open(path, "wb") as f:
            f.write(b"new, written at a path")
        assert store.read_bytes("chips/a.tif") == b"old"  # until the block ends
        assert store.list_names("chips") == {"a.tif"}  # the temporary is no target
    assert store.read_bytes("chips/a.tif") == b"new, written at a path"
    with pytest.raises(RuntimeError, match="GDAL failed"), store.replaced_locally("chips/b/c.tif") as path:
        with open(path, "wb") as f:
            f.write(b"half a chip")
        raise RuntimeError("GDAL failed")  # the writer's own error, as it is
    assert os.listdir(tmp_path / "chips" / "b") == []  # nothing left: no target, no temporary

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with (
        pytest.raises(StorageError, match=r"cannot write .*chips/a\.tif: disk full"),
        store.replaced_locally("chips/a.tif") as path,
        open(path, "wb") as f,
    ):
        f.write(b"newer")
    assert store.read_bytes("chips/a.tif") == b"new, written at a path"
    assert sorted(os.listdir(tmp_path / "chips")) == ["a.tif", "b"]
    with pytest.raises(ValueError, match="local store"):
        Store("s3://bucket/prefix").replaced_locally("chips/a.tif")


def test_prefix_listing_separates_plots(tmp_path):
    store = Store(str(tmp_path))
    for name in ["1_spectral_files_set_2000_001.csv", "10_spectral_files_set_2000_001.csv"]:
        store.write_text(f"prj_p/{name}", "")
    assert store.list_names("prj_p", "1_spectral_files_set_") == {"1_spectral_files_set_2000_001.csv"}


# ---- many objects at once (the Store API the Causemos workflow writes through) ----------


def _tree_objects(n: int) -> dict[str, bytes]:
    """Keys with nesting, spaces and non-ASCII, as region ids and qualifier values make them."""
    return {f"run/{i % 3}/Région {i}/f {i}.csv": f"{i}\n".encode() * (i + 1) for i in range(n)}


def test_write_many_list_tree_delete_many_locally(tmp_path):
    store = Store(str(tmp_path / "out"))
    objects = _tree_objects(40)
    store.write_many(objects)
    for rel, data in objects.items():
        assert store.read_bytes(rel) == data
    # a killed writer's temporary is reported apart, never as a key
    (tmp_path / "out" / "run" / "0" / ".x.csv.tmp-1-abc").write_text("half")
    listing = store.list_tree("run/")
    assert listing.keys == set(objects)
    assert listing.temporaries == ["run/0/.x.csv.tmp-1-abc"]
    assert store.list_tree("").keys == set(objects)
    assert store.list_tree("missing/").keys == set()
    with pytest.raises(ValueError, match="ends with '/'"):
        store.list_tree("run")

    gone = sorted(k for k in objects if k.startswith("run/1/"))
    assert store.delete_many([*gone, "run/1/absent.csv"], prune_below="run/") == len(gone) + 1
    assert store.list_tree("run/").keys == set(objects) - set(gone)
    assert not (tmp_path / "out" / "run" / "1").exists()  # emptied directories pruned
    assert (tmp_path / "out" / "run").is_dir()  # ... not at or above prune_below
    assert store.delete_many([]) == 0


def test_write_many_failure_names_the_object_and_leaves_no_temporary(tmp_path):
    store = Store(str(tmp_path))
    (tmp_path / "blocker").write_text("a file where a directory should be")
    with pytest.raises(StorageError, match=r"blocker/x\.csv"):
        store.write_many({"ok.csv": b"1", "blocker/x.csv": b"2"})
    assert store.read_bytes("ok.csv") == b"1"
    assert store.list_tree("").temporaries == []


def test_shared_store_is_one_per_root_and_options(tmp_path):
    a = shared_store(Store(str(tmp_path / "a")))
    assert shared_store(Store(str(tmp_path / "a"))) is a
    assert shared_store(Store(str(tmp_path / "b"))) is not a
    assert shared_store(Store(str(tmp_path / "a"), S3Options(region="eu-west-1"))) is not a


def test_write_many_list_tree_delete_many_on_s3(s3_server, monkeypatch):
    for name, value in s3_server.env().items():  # credentials, as a deployment gives them
        monkeypatch.setenv(name, value)
    bucket = s3_server.create_bucket("store-many")
    store = Store(f"s3://{bucket}/root", S3Options(endpoint_url=s3_server.endpoint_url))
    objects = _tree_objects(1200)  # more than one listing page and one DeleteObjects request
    s3_server.reset_counts()
    store.write_many(objects)
    counts = s3_server.request_counts(bucket)
    assert counts.get("PUT") == len(objects), counts  # one PUT per object, nothing else
    client = s3_server.client()
    for rel in list(objects)[:5] + list(objects)[-5:]:
        assert client.get_object(Bucket=bucket, Key=f"root/{rel}")["Body"].read() == objects[rel]
    client.put_object(Bucket=bucket, Key="rootless.csv", Body=b"beside the root, not under it")
    assert store.list_tree("run/").keys == set(objects)
    assert store.list_tree("").keys == set(objects)
    assert store.list_tree("run/2/").keys == {k for k in objects if k.startswith("run/2/")}

    gone = [k for k in objects if not k.startswith("run/0/")]
    assert store.delete_many(gone) == len(gone)
    assert store.list_tree("").keys == {k for k in objects if k.startswith("run/0/")}

    missing = Store("s3://no-such-bucket-here/x", store.s3)
    with pytest.raises(StorageError, match=r"no-such-bucket-here/x/a\.csv"):
        missing.write_many({"a.csv": b"1"})
