"""Signing asset hrefs before they are read: Planetary Computer's Azure Blob storage wants
a SAS token appended to every blob URL.

Tokens come per storage account and container from the token service
(``{sas_url}/{account}/{container}`` -> ``{"msft:expiry", "token"}``). The Planetary
Computer SDK (``planetary-computer``) fetches them, caches them per process and refreshes
one that has less than a minute left; it also sends ``PC_SDK_SUBSCRIPTION_KEY`` when that is
set. We use it as it is, and add one thing it lacks: blob URLs of an Azure Storage emulator
(Azurite) or a private endpoint, which are path-style (``http://host:port/{account}/{container}/...``)
instead of ``https://{account}.blob.core.windows.net/{container}/...``.

Hrefs are signed where they are read (on the Dask worker, just before opening), so a
token is never older than the SDK's cache allows, whatever the length of the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

BLOB_DOMAIN = ".blob.core.windows.net"
# What a href already carrying a SAS token has in its query string.
_SAS_KEYS = {"sig", "se", "sp"}
# Environment variable naming the token service (the SDK's own setting).
SAS_URL_ENV = "PC_SDK_SAS_URL"


@dataclass(frozen=True)
class Signing:
    """How hrefs are signed. Picklable: travels to Dask workers.

    ``mode``: ``"none"`` (local files, public URLs) or ``"planetary-computer"``.
    ``sas_url``: the token service root; empty = the SDK's default (``PC_SDK_SAS_URL`` or
    Planetary Computer's own). ``path_style_hosts``: ``host:port`` of blob endpoints whose
    URLs carry the account as the first path segment (Azurite)."""

    mode: str = "none"
    sas_url: str = ""
    path_style_hosts: tuple[str, ...] = ()

    def sign(self, href: str) -> str:
        if self.mode == "none" or not href.startswith(("http://", "https://")):
            return href
        parsed = urlparse(href)
        if _SAS_KEYS & set(parse_qs(parsed.query)):
            return href  # signed already
        if parsed.netloc.endswith(BLOB_DOMAIN):
            account = parsed.netloc.split(".", 1)[0]
            container = parsed.path.lstrip("/").split("/", 1)[0]
        elif parsed.netloc in self.path_style_hosts:
            parts = parsed.path.lstrip("/").split("/", 2)
            if len(parts) < 3:
                return href  # not a blob in a container
            account, container = parts[0], parts[1]
        else:
            return href  # not blob storage: read as it is
        return f"{href}?{_token(self.sas_url, account, container)}"


def _token(sas_url: str, account: str, container: str) -> str:
    from planetary_computer import sas
    from planetary_computer.settings import Settings

    settings = Settings.get()
    wanted = sas_url or os.environ.get(SAS_URL_ENV) or settings.sas_url
    if settings.sas_url != wanted:
        settings.sas_url = wanted  # the SDK reads it per request; its cache keys include it
    return str(sas.get_token(account, container).token)
