"""Offline demo support: a synthetic Landsat Collection 2 ARD archive (see :mod:`.archive`)."""

from pipeline.demo.archive import ArchiveSpec, BuiltArchive, build_archive, demo_spec, small_spec

__all__ = ["ArchiveSpec", "BuiltArchive", "build_archive", "demo_spec", "small_spec"]
