"""Headless Chromium (Debian's package) driven by Python playwright, for web UI tests.

    from tests.servers.browser import chromium_page
    with chromium_page() as page:
        page.goto(url)
        page.screenshot(path=...)

``ensure_chromium()`` installs Debian's ``chromium`` with apt-get when /usr/bin/chromium is
missing (CI runs as root on a fresh Debian 12 machine), and ``ensure_playwright()`` pip
installs the pinned ``playwright`` when it cannot be imported. Both are idempotent and
raise (so the test fails) when they cannot. Playwright's own browser download
(``playwright install``) is never used: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
PLAYWRIGHT_REQUIREMENT = "playwright==1.65.2"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """A machine-wide lock, so parallel test processes do not run apt or pip at once."""
    path = Path(tempfile.gettempdir()) / f"eo-extract-{name}.lock"
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str], **kwargs: Any) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def ensure_chromium() -> str:
    """/usr/bin/chromium, installed from Debian first if missing."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    with _lock("apt"):
        if os.access(CHROMIUM, os.X_OK):
            return CHROMIUM
        if not shutil.which("apt-get"):
            raise RuntimeError(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium")
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run([*prefix, "apt-get", "update", "-q"], env=env, timeout=600)
        _run(
            [*prefix, "apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "chromium"],
            env=env,
            timeout=1800,
        )
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def ensure_playwright() -> None:
    """Import playwright, pip installing the pinned version into this interpreter first if needed."""
    try:
        import playwright.sync_api

        return
    except ImportError:
        pass
    with _lock("pip"):
        try:
            import playwright.sync_api

            return
        except ImportError:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    PLAYWRIGHT_REQUIREMENT,
                ],
                timeout=600,
            )
    import importlib

    importlib.invalidate_caches()
    import playwright.sync_api  # noqa: F401


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1500, 1000)) -> Iterator[Any]:
    """A page of a fresh headless Chromium (own temporary profile); closed on exit."""
    executable = ensure_chromium()
    ensure_playwright()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()
