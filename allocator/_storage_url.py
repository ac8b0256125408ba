"""The study store's address, shared by the search service and the dashboards.

``import allocator`` does not load this module (it needs SQLAlchemy); both the controller
(``allocator.search``) and ``dashboards`` import it, so the default store, the
environment variable and the masking of passwords are defined once.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

__all__ = ["DEFAULT_STORAGE", "ENV_STORAGE", "mask_url", "resolve_url"]

DEFAULT_STORAGE = "sqlite:///npas.db"
ENV_STORAGE = "NPAS_STORAGE"


def resolve_url(url: str | None) -> str:
    """``url``, else ``$NPAS_STORAGE``, else ``sqlite:///npas.db``.

    Example:
        >>> resolve_url("sqlite:///x.db")
        'sqlite:///x.db'
    """
    return url or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (safe to print or log).

    Example:
        >>> mask_url("postgresql+psycopg://ann:secret@db:5432/npas")
        'postgresql+psycopg://ann:***@db:5432/npas'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show only the scheme, never the rest
        text = str(url)
        return text.split("://", 1)[0] + "://..." if "://" in text else "<invalid URL>"
