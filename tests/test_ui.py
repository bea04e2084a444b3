"""The web UI in process (FastAPI's test client, SQLite): login and the session cookie, CSRF
and roles on every change, error pages, and the server-side pieces that keep big instances
fast (the partition grid's run-length rows, the lineage neighbourhood's layout). The browser
tests are in tests/test_ui_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support import ROOT
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.key import AssetKey
from tidegate.definitions.loading import CodeLocation
from tidegate.storage.api import Storage
from tidegate.webserver import create_app
from tidegate.webserver.ui import mount_ui
from tidegate.webserver.ui.lineage import MAX_NODES, layout
from tidegate.webserver.ui.queries import partition_grid, range_rows
from tidegate.webserver.ui.session import COOKIE

PROJECT = ROOT / "tests" / "projects" / "ui_project.py"
PAGES = [
    "/ui/",
    "/ui/runs",
    "/ui/jobs",
    "/ui/jobs/etl_job",
    "/ui/assets",
    "/ui/assets/daily_events",
    "/ui/automation",
    "/ui/sensors/quiet_sensor",
    "/ui/schedules/daily_etl",
    "/ui/backfills",
    "/ui/queue",
]


class UI:
    def __init__(self, tmp_path: Path) -> None:
        self.storage = Storage.open(f"sqlite:///{tmp_path / 'ui.db'}", upgrade=True)
        defs = CodeLocation.parse(str(PROJECT)).load()
        self.tokens = {role: self.storage.create_token(f"ui-{role}", role).token for role in ("viewer", "admin")}
        self.client = TestClient(mount_ui(create_app(defs, self.storage)))

    def csrf(self, path: str = "/ui/login") -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.client.get(path).text)
        assert found, f"no CSRF field on {path}"
        return found.group(1)

    def log_in(self, role: str) -> None:
        response = self.client.post(
            "/ui/login", data={"token": self.tokens[role], "csrf": self.csrf(), "next": "/ui/runs"}
        )
        assert response.status_code == 200 and str(response.url).endswith("/ui/runs")


@pytest.fixture
def ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UI]:
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("TIDEGATE_UI_TEST_DIR", str(tmp_path))
    client = UI(tmp_path)
    yield client
    client.storage.dispose()


def test_pages_need_a_login_and_the_cookie_keeps_the_token_from_scripts(ui: UI) -> None:
    response = ui.client.get("/ui/runs", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login?next=%2Fui%2Fruns"
    bad = ui.client.post("/ui/login", data={"token": "tg_" + "x" * 40, "csrf": ui.csrf()})
    assert bad.status_code == 401 and "unknown, revoked or expired" in bad.text
    ui.log_in("admin")
    cookie = next(h for h in ui.client.cookies.jar if h.name == COOKIE)
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") in ("strict", "Strict")
    for path in PAGES:
        response = ui.client.get(path)
        assert response.status_code == 200, f"{path}: {response.text[:300]}"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "<script>" not in response.text, f"{path}: an inline script"
        assert ui.tokens["admin"] not in response.text


def test_a_tampered_cookie_or_a_revoked_token_logs_out(ui: UI) -> None:
    ui.log_in("admin")
    value = ui.client.cookies[COOKIE]
    ui.client.cookies.clear()
    ui.client.cookies.set(COOKIE, value[:-2] + ("00" if not value.endswith("00") else "11"))
    assert ui.client.get("/ui/runs", follow_redirects=False).status_code == 303
    ui.client.cookies.clear()
    ui.client.cookies.set(COOKIE, value)
    assert ui.client.get("/ui/runs", follow_redirects=False).status_code == 200
    ui.storage.revoke_token("ui-admin")
    assert ui.client.get("/ui/runs", follow_redirects=False).status_code == 303


def test_every_change_needs_the_csrf_token_and_the_role(ui: UI) -> None:
    ui.log_in("admin")
    forged = ui.client.post("/ui/sensors/quiet_sensor/status", data={"status": "RUNNING"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert ui.storage.get_instigator("quiet_sensor") is None
    ui.client.cookies.clear()
    ui.log_in("viewer")
    page = ui.client.get("/ui/jobs/etl_job").text
    assert 'id="launch"' not in page
    csrf = ui.csrf("/ui/runs")
    for path, data in (
        ("/ui/jobs/etl_job/launch", {}),
        ("/ui/sensors/quiet_sensor/status", {"status": "RUNNING"}),
        ("/ui/sensors/quiet_sensor/cursor", {"cursor": "x"}),
        ("/ui/pools/db", {"slots": "1"}),
    ):
        response = ui.client.post(path, data={"csrf": csrf, **data})
        assert response.status_code == 403, path
        assert "role viewer" in response.text
    assert ui.storage.list_runs() == [] and ui.storage.get_instigator("quiet_sensor") is None


def test_the_launch_form_is_checked_and_a_refused_launch_names_the_value(ui: UI) -> None:
    ui.log_in("admin")
    csrf = ui.csrf("/ui/jobs/etl_job")
    check = ui.client.post("/ui/jobs/etl_job/check", data={"csrf": csrf, "tags": "team finance"}).json()
    assert check == {"ok": False, "message": "tags, line 1: 'team finance' is not KEY=VALUE"}
    assert ui.client.post("/ui/jobs/etl_job/check", data={"csrf": csrf, "tags": "team=a"}).json()["ok"] is True
    refused = ui.client.post("/ui/jobs/etl_job/launch", data={"csrf": csrf, "partition": "2020-13-01"})
    assert "2020-13-01" in refused.text and ui.storage.list_runs() == []
    launched = ui.client.post("/ui/jobs/etl_job/launch", data={"csrf": csrf, "tags": "team=a"})
    (run,) = ui.storage.list_runs()
    assert str(launched.url).split("?")[0].endswith(f"/ui/runs/{run.run_id}") and run.tags["team"] == "a"
    assert "Cancel run" in launched.text
    live = ui.client.get(f"/ui/runs/{run.run_id}/live", headers={"X-Tidegate-Fragment": "1"})
    assert 'data-run-terminal="no"' in live.text and "<html" not in live.text
    missing = ui.client.get("/ui/runs/nope")
    assert missing.status_code == 404 and "run &#39;nope&#39;: not found" in missing.text


def test_the_run_config_editor_is_prefilled_checked_and_the_run_shows_it_redacted(ui: UI) -> None:
    ui.log_in("admin")
    jobs = ui.client.get("/ui/jobs").text
    assert re.search(r"greet_job</a></th>\s*<td>assets</td>", jobs) and re.search(
        r"scale_job</a></th>\s*<td>ops</td>", jobs
    )
    form = ui.client.get("/ui/jobs/greet_job").text
    assert re.search(
        r'<textarea id="run_config"[^>]*>ops:\n  greeting:\n    config:\n      person_name: everyone', form
    )
    csrf = ui.csrf("/ui/jobs/greet_job")
    for text, named in (
        ("ops:\n  greeting:\n    config:\n      times: 2\n", "config field 'person_name'"),
        ('{"ops": {"nobody": {}}}', "'nobody'"),
        ("ops: [unclosed", "not valid YAML or JSON at line 1"),
    ):
        check = ui.client.post("/ui/jobs/greet_job/check", data={"csrf": csrf, "run_config": text}).json()
        assert check["ok"] is False and named in check["message"], check
    refused = ui.client.post("/ui/jobs/greet_job/launch", data={"csrf": csrf, "run_config": '{"ops": {"nobody": {}}}'})
    assert "nobody" in refused.text and ui.storage.list_runs() == []
    secret = "ops:\n  greeting:\n    config:\n      person_name: {env: UI_SECRET_NAME}\n"
    assert ui.client.post("/ui/jobs/greet_job/check", data={"csrf": csrf, "run_config": secret}).json()["ok"] is True
    launched = ui.client.post("/ui/jobs/greet_job/launch", data={"csrf": csrf, "run_config": secret})
    assert "&lt;redacted&gt; (EnvVar UI_SECRET_NAME)" in launched.text
    op_form = ui.client.get("/ui/jobs/scale_job").text
    assert "person_name: ops" in op_form
    ui.client.post("/ui/jobs/scale_job/launch", data={"csrf": csrf, "run_config": ""})
    assert {r.job_name: r.run_config for r in ui.storage.list_runs()}["scale_job"] == {
        "ops": {"scaled": {"config": {"person_name": "ops", "times": 2}}}
    }


def test_the_catalog_and_asset_page_show_the_condition_and_why_or_why_not(ui: UI) -> None:
    from tidegate.scheduler.beat import Beat
    from tidegate.scheduler.clock import FakeClock

    defs = CodeLocation.parse(str(ROOT / "tests" / "projects" / "explain_project.py")).load()
    Beat(defs, ui.storage, lambda refs: None, clock=FakeClock(datetime(2024, 3, 4, tzinfo=UTC)), holder="ui").tick()
    ui.client = TestClient(mount_ui(create_app(defs, ui.storage)))
    ui.log_in("viewer")
    catalog = ui.client.get("/ui/assets").text
    assert re.search(r"fresh_report</a></th>.*?<td>keep fresh</td>", catalog, re.S)
    page = ui.client.get("/ui/assets/fresh_report")
    assert page.status_code == 200 and "Automation: why / why not" in page.text
    (tick,) = [r.tick_id for r in ui.storage.automation_evaluations("fresh_report")]
    assert f"tick {tick} of sensor default_automation_condition_sensor" in page.text
    explained = re.search(r'<pre id="automation-explain"[^>]*>(.*?)</pre>', page.text, re.S)
    assert explained and explained.group(1).startswith("✗ keep fresh: false")
    assert "✓ missing: true — never materialized  [1/1]" in explained.group(1)
    history = ui.client.get("/ui/assets/fresh_report/automation")
    assert history.status_code == 200 and f'/ui/assets/fresh_report?tick={tick}">{tick}</a>' in history.text
    earlier = ui.client.get(f"/ui/assets/fresh_report?tick={tick - 1}").text
    assert f"No automation evaluation stored at or before tick {tick - 1}" in earlier


def test_login_redirects_only_inside_the_ui(ui: UI) -> None:
    response = ui.client.post(
        "/ui/login",
        data={"token": ui.tokens["viewer"], "csrf": ui.csrf(), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/ui/"


def test_the_partition_grid_is_run_length_rows_with_in_progress_first() -> None:
    keys = [f"k{i:06d}" for i in range(100_000)]
    statuses = dict.fromkeys(keys[:60_000], "MATERIALIZED")
    statuses.update(dict.fromkeys(keys[60_000:60_010], "FAILED"))
    grid = partition_grid(keys, statuses, in_progress={keys[5]})
    assert grid.runs == [["M", 5], ["R", 1], ["M", 59_994], ["F", 10], ["-", 39_990]]
    assert grid.totals == {"M": 59_999, "R": 1, "F": 10, "-": 39_990}
    assert range_rows(keys, grid, 2) == [("k000000", "k000004", "M", 5), ("k000005", "k000005", "R", 1)]


def test_lineage_of_a_big_graph_draws_a_bounded_neighbourhood_left_to_right() -> None:
    import tidegate as tg

    # 1,000 assets: a0 feeds all others, each also depends on the one before it.
    assets = [tg.AssetSpec("a0").to_assets_definition(), tg.AssetSpec("a1", deps=["a0"]).to_assets_definition()]
    assets += [tg.AssetSpec(f"a{i}", deps=["a0", f"a{i - 1}"]).to_assets_definition() for i in range(2, 1000)]
    graph = AssetGraph.build(assets)
    small = layout(graph, AssetKey.from_coercible("a500"), depth=2)
    assert {n.key for n in small.nodes} == {"a0", "a498", "a499", "a500", "a501", "a502"} and not small.truncated
    drawn = layout(graph, AssetKey.from_coercible("a0"), depth=3)  # 999 descendants at depth 1
    assert len(drawn.nodes) == MAX_NODES and drawn.truncated and drawn.depth == 1
    where = {n.key: n.x for n in drawn.nodes}
    keys = {AssetKey.from_coercible(k) for k in where}
    for key in keys:
        for up in graph.upstream[key] & keys:
            assert where[str(up)] < where[str(key)], f"{up} is not left of {key}"


def test_a_cached_grid_is_recomputed_when_a_partition_changes(ui: UI) -> None:
    from tidegate.webserver.ui.queries import PartitionGridCache

    cache = PartitionGridCache()
    keys = [f"2020-01-{day:02d}" for day in range(1, 11)]
    first = cache.grid(ui.storage, "daily_events", keys)
    assert first.runs == [["-", 10]] and cache.grid(ui.storage, "daily_events", keys) is first
    ui.storage.report_materialization("daily_events", partition_key="2020-01-02")
    assert cache.grid(ui.storage, "daily_events", keys).runs == [["-", 1], ["M", 1], ["-", 8]]
