"""The web UI in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium,
headless) against a real ``tidegate webserver``, beat and worker on SQLite and Redis.

Log in, launch from the form and watch the run page reach SUCCESS without a reload, cancel a
running run, re-execute from failure, stop/start a sensor and set its cursor; a viewer sees
no change controls and a forged POST is refused; every page renders without a console error
and passes axe-core. Screenshots go to the test's directory, and to docs/ with
TIDEGATE_UI_SCREENSHOTS=1 (``make ui-screenshots``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    ROOT,
    TIDEGATE,
    free_port,
    require_service,
    spawn_process,
    start_worker,
    stop_process,
    tidegate_env,
    wait_http_ok,
)

pytestmark = pytest.mark.slow

PROJECT = ROOT / "tests" / "projects" / "ui_project.py"
CHROMIUM = "/usr/bin/chromium"
# Flags for Chromium on a closed network, as root, without a GPU (docs/ui.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PORTS = range(3141, 3160)
WAIT = 60_000  # ms: an upper bound for a state to show, never a timing assertion


@dataclass
class UIServer:
    url: str
    admin_token: str
    viewer_token: str
    control: Path
    shots: Path
    storage: Any


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[UIServer]:
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it as root)")
    from tidegate.storage.api import Storage

    tmp = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{tmp / 'tidegate.db'}"
    storage = Storage.open(url, upgrade=True)
    admin = storage.create_token("ui-admin", "admin").token
    viewer = storage.create_token("ui-viewer", "viewer").token
    for day in range(1, 29):  # some materialized partitions for the grid
        storage.report_materialization("daily_events", partition_key=f"2024-02-{day:02d}")
    control = tmp / "control"
    control.mkdir()
    env = tidegate_env(
        database_url=url,
        broker_url=redis_url,
        definitions=PROJECT,
        io_dir=tmp / "io",
        TIDEGATE_UI_TEST_DIR=str(control),
        TIDEGATE_FLOWER_URL="http://127.0.0.1:5555",
        PYTHONPATH=str(ROOT),
    )
    worker = start_worker(env, name="ui", log_dir=tmp, concurrency=2)
    processes: list[subprocess.Popen[bytes]] = []
    port = free_port(PORTS.start, PORTS.stop - 1)
    base = f"http://127.0.0.1:{port}"
    try:
        for name, argv in (
            ("beat", [TIDEGATE, "beat", "-f", str(PROJECT)]),
            ("webserver", [TIDEGATE, "webserver", "-f", str(PROJECT), "--port", str(port)]),
        ):
            processes.append(spawn_process(argv, env, tmp / f"{name}.log"))
        wait_http_ok(f"{base}/healthz", processes[-1], tmp / "webserver.log", timeout=30)
        yield UIServer(base, admin, viewer, control, tmp, storage)
    finally:
        (control / "release").touch()  # a slow step still running ends at once
        for process in processes:
            stop_process(process)
        worker.stop()
        storage.dispose()


@pytest.fixture(scope="module")
def browser(ui_server: UIServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser page logged in with one token, recording console errors."""

    def __init__(self, browser: Any, server: UIServer, token: str) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{server.url}/ui/")
        assert "/ui/login" in self.page.url
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{server.url}/ui/")

    def goto(self, path: str) -> Any:
        self.page.goto(f"{self.server.url}/ui{path}")
        return self.page

    def shot(self, name: str) -> None:
        path = self.server.shots / name
        self.page.screenshot(path=str(path), full_page=False)
        if os.environ.get("TIDEGATE_UI_SCREENSHOTS") == "1":
            shutil.copy(path, ROOT / "docs" / name)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def admin(browser: Any, ui_server: UIServer) -> Iterator[Page]:
    page = Page(browser, ui_server, ui_server.admin_token)
    yield page
    page.close()
    assert not page.errors, f"console errors: {page.errors}"


def launch(admin: Page, job: str) -> str:
    page = admin.goto(f"/jobs/{job}")
    page.click("#launch")
    page.wait_for_url(re.compile(r".*/ui/runs/[0-9a-f]+.*"))
    return page.url.split("/runs/")[1].split("?")[0]


def test_launch_from_form_and_follow_to_success(admin: Page) -> None:
    run_id = launch(admin, "etl_job")
    page = admin.page
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    page.wait_for_selector("#run-status :text('SUCCESS')")
    assert page.evaluate("window.__sameDocument === true"), "the run page reloaded"
    assert admin.server.storage.get_run(run_id).status == "SUCCESS"
    assert page.locator("#steps tbody tr").count() >= 9
    assert page.locator(".gantt .bar").count() == 9
    admin.shot("ui-run.png")
    page = admin.goto("/assets/daily_events")
    page.wait_for_selector("#partition-grid")
    assert "28 materialized" in (page.get_attribute("#partition-grid", "aria-label") or "")
    page.focus("#partition-grid")
    page.keyboard.press("ArrowRight")
    assert "Partition 2 of" in page.inner_text("#grid-cell")
    admin.shot("ui-asset.png")


def test_the_run_config_editor_shows_the_servers_verdict_before_submit(admin: Page) -> None:
    page = admin.goto("/jobs/greet_job")
    page.wait_for_selector("#launch-check.ok")  # the pre-filled default config fits
    page.fill("#run_config", "ops:\n  greeting:\n    config:\n      times: 2\n")
    page.wait_for_selector("#launch-check.invalid")
    assert "asset 'greeting': config field 'person_name': Field required" in page.inner_text("#launch-check")
    assert page.get_attribute("#run_config", "aria-invalid") == "true"


def test_cancel_a_running_run(admin: Page) -> None:
    run_id = launch(admin, "slow_job")
    page = admin.page
    page.wait_for_selector("#steps :text('RUNNING')")
    page.click("#cancel-run")
    page.wait_for_selector("#run-status :text('CANCELED')")
    assert admin.server.storage.get_run(run_id).status == "CANCELED"


def test_reexecute_from_failure(admin: Page) -> None:
    launch(admin, "flaky_job")
    page = admin.page
    page.wait_for_selector("#run-status :text('FAILURE')")
    assert "the file 'fixed' is not there yet" in page.inner_text("#steps")
    (admin.server.control / "fixed").touch()
    page.click("#reexecute-failure")
    page.wait_for_url(re.compile(r".*notice=re-execution.*"))
    page.wait_for_selector("#run-status :text('SUCCESS')")
    new_run = page.url.split("/runs/")[1].split("?")[0]
    steps = {s.asset_key for s in admin.server.storage.get_steps(new_run)}
    assert steps == {"flaky_source", "flaky_report"}
    assert admin.server.storage.get_run(new_run).parent_run_id is not None


def test_sensor_stop_start_and_cursor(admin: Page) -> None:
    page = admin.goto("/sensors/quiet_sensor")
    assert "STOPPED" in page.inner_text("#instigator-status")
    page.click("#start-instigator")
    page.wait_for_selector("#instigator-status :text('RUNNING')")
    page.click("#stop-instigator")
    page.wait_for_selector("#instigator-status :text('STOPPED')")
    page.fill("#cursor", "2024-02-01")
    page.click("#set-cursor")
    page.wait_for_selector("#cursor-value:text('2024-02-01')")
    assert admin.server.storage.get_instigator("quiet_sensor").cursor == "2024-02-01"
    admin.shot("ui-sensor.png")
    page.click("#reset-cursor")
    page.wait_for_selector("#cursor-value:text('(none)')")


def test_viewer_sees_no_controls_and_a_forged_post_is_refused(browser: Any, ui_server: UIServer) -> None:
    viewer = Page(browser, ui_server, ui_server.viewer_token)
    try:
        page = viewer.goto("/jobs/etl_job")
        assert page.locator("#launch").count() == 0
        csrf = page.get_attribute("form.who input[name=csrf]", "value")
        runs_before = len(ui_server.storage.list_runs(limit=1000))
        response = page.request.post(f"{ui_server.url}/ui/jobs/etl_job/launch", form={"csrf": csrf or ""})
        assert response.status == 403
        response = page.request.post(
            f"{ui_server.url}/ui/sensors/quiet_sensor/status", form={"csrf": csrf or "", "status": "RUNNING"}
        )
        assert response.status == 403
        assert len(ui_server.storage.list_runs(limit=1000)) == runs_before
        page = viewer.goto("/sensors/quiet_sensor")
        assert page.locator("#start-instigator, #stop-instigator, #set-cursor").count() == 0
        assert not viewer.errors
    finally:
        viewer.close()


PAGES = [
    "/",
    "/runs",
    "/jobs",
    "/jobs/etl_job",
    "/jobs/greet_job",
    "/assets",
    "/assets/enriched_orders",
    "/assets/daily_events",
    "/automation",
    "/sensors/quiet_sensor",
    "/schedules/daily_etl",
    "/backfills",
    "/queue",
]


def test_every_page_without_console_errors_and_axe_violations(admin: Page) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    run = admin.server.storage.list_runs(limit=1)
    pages = [*PAGES, *(f"/runs/{r.run_id}" for r in run)]
    problems = {}
    for path in pages:
        page = admin.goto(path)
        page.wait_for_load_state("load")
        results = axe.run(page)
        if results.violations_count:
            problems[path] = results.generate_report()
    assert not problems, "\n".join(f"{p}:\n{r}" for p, r in problems.items())
