"""Local stores: atomic writes and one-listing completeness (S3 is tested against the
real server in test_s3_pipeline.py)."""

import os

import pytest

from targets.store import Store


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


def test_prefix_listing_separates_plots(tmp_path):
    store = Store(str(tmp_path))
    for name in ["1_spectral_files_set_2000_001.csv", "10_spectral_files_set_2000_001.csv"]:
        store.write_text(f"prj_p/{name}", "")
    assert store.list_names("prj_p", "1_spectral_files_set_") == {"1_spectral_files_set_2000_001.csv"}
