"""A PostgreSQL URL's own ``options`` reach the server beside tidegate's session settings
(before, tidegate's connect argument replaced them: a ``search_path`` in the URL was lost)."""

from __future__ import annotations

from sqlalchemy import text

from tidegate.storage.engine import make_engine


def test_a_urls_options_are_kept_and_win_over_tidegates(pg_url: str) -> None:
    url = f"{pg_url}?options=-csearch_path%3Dtenant_a%20-clock_timeout%3D5s"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW search_path")).scalar() == "tenant_a"
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "5s"  # the URL's, set after tidegate's
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "1min"
    finally:
        engine.dispose()


def test_without_options_tidegates_session_settings_apply(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "20s"
            assert conn.execute(text("SHOW search_path")).scalar() == '"$user", public'
    finally:
        engine.dispose()
