"""The web UI on a big instance: ``python bench/ui.py`` (see bench/README.md).

1. Fills PostgreSQL database ``tidegate_bench_ui`` in a few INSERT ... SELECT statements:
   BENCH_UI_RUNS runs (default 100,000; two steps each) plus one run of 200 steps, the
   1,000 assets of bench/ui_project.py with one materialization each, BENCH_UI_PARTITIONS
   (default 100,000) partition statuses of the partitioned asset (materialized, a failed
   stretch, the rest missing) and BENCH_UI_TICKS (default 50,000) ticks of one sensor; ANALYZE.
2. Starts ``tidegate webserver`` (one process) on bench/ui_project.py and measures, one request
   after another over one keep-alive connection with a logged-in session cookie, the server
   time (request sent -> whole response read) p50/p99 of every page and of each page's data
   request. The pages are rendered on the server, so a page's HTML is its data; the requests
   a page makes after loading are measured separately: the run page's live fragment and the
   launch form's check.
3. Time until usable in headless Chromium (Debian's /usr/bin/chromium, Playwright): from
   navigation start until the page's content is there (the run list's rows; the 200 rows and
   the timeline of the 200-step run; the 100,000-partition grid drawn on its canvas; the
   lineage SVG of an asset in the middle of the 1,000-asset graph), median of BENCH_UI_LOADS
   (default 5) loads. Baseline in the same run: the empty /healthz page.
4. Prints the conditions, ratios against the baseline, and the peak RSS of the webserver and
   of this process.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    analyze,
    cpu_model,
    free_port,
    load_avg,
    prepare_postgres,
    progress,
    table,
    version,
    vm_hwm_kib,
)
from tidegate.storage.api import Storage

PROJECT = ROOT / "bench" / "ui_project.py"
RUNS = int(os.environ.get("BENCH_UI_RUNS", "100000"))
PARTITIONS = int(os.environ.get("BENCH_UI_PARTITIONS", "100000"))
TICKS = int(os.environ.get("BENCH_UI_TICKS", "50000"))
REQUESTS = int(os.environ.get("BENCH_UI_REQUESTS", "100"))
LOADS = int(os.environ.get("BENCH_UI_LOADS", "5"))
TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
BIG_RUN = "b" * 32  # the 200-step run
CHROMIUM = "/usr/bin/chromium"
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


def fill(storage: Storage) -> float:
    start = time.perf_counter()
    statements = [
        "TRUNCATE runs, steps, events, materializations, asset_partitions, ticks, instigators, api_tokens"
        " RESTART IDENTITY",
        """INSERT INTO runs (run_id, job_name, status, origin, run_key, priority, tags, asset_selection,
                             parent_run_id, steps_remaining, created_at, started_at, ended_at)
           SELECT md5(i::text), CASE WHEN i % 4 = 0 THEN 'bench_job' ELSE 'job_' || (i % 7) END,
                  CASE WHEN i % 10 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, 'bench', NULL, 0,
                  json_build_object('team', 't' || (i % 10)), NULL, NULL, 0,
                  now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval,
                  now() - (i || ' seconds')::interval + interval '2 seconds'
           FROM generate_series(1, :runs) AS i""",
        """INSERT INTO steps (run_id, step_key, asset_key, display_name, status, attempt, queue, downstream,
                              pending_upstream, worker, started_at, ended_at)
           SELECT md5(i::text), s.key, s.key, s.key, 'SUCCEEDED', 1, 'tidegate', '[]'::json, 0, 'bench@host',
                  now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval + interval '1 second'
           FROM generate_series(1, :runs) AS i, (VALUES ('extract'), ('load')) AS s(key)""",
        """INSERT INTO runs (run_id, job_name, status, origin, run_key, priority, tags, asset_selection,
                             parent_run_id, steps_remaining, created_at, started_at, ended_at)
           VALUES (:big, 'bench_job', 'SUCCESS', 'bench', NULL, 0, '{}'::json, NULL, NULL, 0,
                   now() - interval '1 hour', now() - interval '1 hour', now() - interval '50 minutes')""",
        """INSERT INTO steps (run_id, step_key, asset_key, display_name, status, attempt, queue, downstream,
                              pending_upstream, worker, started_at, ended_at, error)
           SELECT :big, 'a' || lpad(i::text, 4, '0'), 'a' || lpad(i::text, 4, '0'), 'a' || lpad(i::text, 4, '0'),
                  CASE WHEN i = 150 THEN 'FAILED' ELSE 'SUCCEEDED' END, 1, 'tidegate', '[]'::json, 0,
                  'worker' || (i % 8) || '@host',
                  now() - interval '1 hour' + (i * 3 || ' seconds')::interval,
                  now() - interval '1 hour' + (i * 3 + 2 || ' seconds')::interval,
                  CASE WHEN i = 150 THEN 'Traceback (most recent call last):\n  ...\nValueError: bench' END
           FROM generate_series(1, 200) AS i""",
        """INSERT INTO materializations (asset_key, partition_key, run_id, step_key, metadata, timestamp)
           SELECT 'a' || lpad(i::text, 4, '0'), NULL, md5(i::text), 'a' || lpad(i::text, 4, '0'),
                  json_build_object('rows', i), now() - (i || ' minutes')::interval
           FROM generate_series(1, 999) AS i""",
        """INSERT INTO asset_partitions (asset_key, partition_key, status, run_id, updated_at)
           SELECT 'a0000', 'p' || lpad(i::text, 6, '0'),
                  CASE WHEN i BETWEEN 40000 AND 40500 THEN 'FAILED' ELSE 'MATERIALIZED' END, md5(i::text), now()
           FROM generate_series(0, :materialized - 1) AS i""",
        """INSERT INTO materializations (asset_key, partition_key, run_id, step_key, metadata, timestamp)
           SELECT 'a0000', 'p' || lpad(i::text, 6, '0'), md5(i::text), 'a0000', '{}'::json,
                  now() - (i || ' seconds')::interval
           FROM generate_series(0, 999) AS i""",
        """INSERT INTO ticks (instigator, kind, tick_time, status, run_ids, new_run_keys, skipped_run_keys,
                              skip_reason, error, cursor, started_at, ended_at)
           SELECT 'bench_sensor', 'sensor', now() - (i || ' minutes')::interval,
                  CASE WHEN i % 100 = 0 THEN 'FAILURE' ELSE 'SKIPPED' END, '[]'::json, '[]'::json, '[]'::json,
                  'bench', CASE WHEN i % 100 = 0 THEN 'ValueError: bench' END, NULL,
                  now() - (i || ' minutes')::interval, now() - (i || ' minutes')::interval
           FROM generate_series(1, :ticks) AS i""",
    ]
    params = {"runs": RUNS, "big": BIG_RUN, "materialized": int(PARTITIONS * 0.6), "ticks": TICKS}
    with storage.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), {k: v for k, v in params.items() if f":{k}" in statement})
    analyze(storage)
    return time.perf_counter() - start


class Session:
    """One keep-alive connection, logged in."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""
        status, body = self.request("GET", "/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', body.decode())
        assert csrf, body[:300]
        form = urllib.parse.urlencode({"token": token, "csrf": csrf.group(1), "next": "/ui/"})
        status, _ = self.request("POST", "/ui/login", form)
        assert status == 303, status
        self.csrf = re.search(r'name="csrf" value="([^"]+)"', self.request("GET", "/ui/jobs")[1].decode())
        assert self.csrf

    def request(self, method: str, path: str, form: str | None = None) -> tuple[int, bytes]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=form, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("tidegate_session="):
                self.cookie = value.split(";", 1)[0]
        return response.status, body


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_times(session: Session, port: int) -> list[list[str]]:
    assert session.csrf is not None
    csrf = session.csrf.group(1)
    requests = [
        ("health (baseline)", "GET", "/healthz", None),
        ("overview", "GET", "/ui/", None),
        ("runs: first page", "GET", "/ui/runs", None),
        ("runs: filtered", "GET", "/ui/runs?status=FAILURE&job=bench_job&tag=team%3Dt0", None),
        ("runs: page 100", "GET", "/ui/runs?cursor={cursor}", None),
        ("run: 200 steps", "GET", f"/ui/runs/{BIG_RUN}", None),
        ("run: live fragment (data)", "GET", f"/ui/runs/{BIG_RUN}/live", None),
        ("jobs", "GET", "/ui/jobs", None),
        ("job: launch form", "GET", "/ui/jobs/bench_job", None),
        ("job: form check (data)", "POST", "/ui/jobs/bench_job/check", urllib.parse.urlencode({"csrf": csrf})),
        ("assets: catalog of 1,000", "GET", "/ui/assets", None),
        ("asset: 100,000 partitions", "GET", "/ui/assets/a0000", None),
        ("asset: lineage in the middle", "GET", "/ui/assets/a0500?depth=3", None),
        ("schedules and sensors", "GET", "/ui/automation", None),
        ("sensor: 50,000 ticks", "GET", "/ui/sensors/bench_sensor", None),
        ("backfills", "GET", "/ui/backfills", None),
        ("queue and pools", "GET", "/ui/queue", None),
    ]
    storage_cursor = hashlib.md5(b"5000").hexdigest()  # run 5,000 of the fill: page 100 of 50
    rows = []
    baseline = None
    for label, method, path, form in requests:
        path = path.replace("{cursor}", storage_cursor)
        times = []
        size = 0
        for _ in range(REQUESTS):
            start = time.perf_counter()
            status, body = session.request(method, path, form)
            times.append(time.perf_counter() - start)
            assert status == 200, f"{label}: {status} {body[:300]!r}"
            size = len(body)
        p50, p99 = statistics.median(times), pct(times, 0.99)
        baseline = baseline or p50
        rows.append([label, f"{p50 * 1000:.1f}", f"{p99 * 1000:.1f}", f"{p50 / baseline:.0f}x", f"{size / 1024:.0f}"])
        progress(f"{label}: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    return rows


def usable_times(port: int, token: str) -> list[list[str]]:
    from playwright.sync_api import sync_playwright

    checks = [
        ("health (baseline)", "/healthz", "document.body !== null"),
        ("run list", "/ui/runs", "document.querySelectorAll('#run-list tbody tr').length === 50"),
        (
            "run: 200 steps",
            f"/ui/runs/{BIG_RUN}",
            "document.querySelectorAll('#steps tbody th').length === 200"
            " && document.querySelectorAll('.gantt .bar').length === 200",
        ),
        ("grid: 100,000 partitions", "/ui/assets/a0000", "document.getElementById('partition-grid').dataset.drawn"),
        (
            "lineage: 1,000-asset graph",
            "/ui/assets/a0500?depth=3",
            "document.querySelectorAll('#lineage .node').length > 1",
        ),
    ]
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/ui/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"http://127.0.0.1:{port}/ui/")
        baseline = None
        for label, path, condition in checks:
            times = []
            for _ in range(LOADS):
                page.goto(f"http://127.0.0.1:{port}{path}", wait_until="commit")
                page.wait_for_function(condition, timeout=60_000)
                times.append(page.evaluate("performance.now()") / 1000)
            median = statistics.median(times)
            baseline = baseline or median
            rows.append([label, f"{median * 1000:.0f}", f"{max(times) * 1000:.0f}", f"{median / baseline:.0f}x"])
            progress(f"usable {label}: {median * 1000:.0f} ms")
        browser.close()
    return rows


def main() -> None:
    url, pg_version = prepare_postgres("tidegate_bench_ui")
    storage = Storage.open(url, upgrade=True)
    progress(f"filling {RUNS} runs, {PARTITIONS} partitions, {TICKS} ticks ...")
    filled = fill(storage)
    token = storage.create_token("bench", "launcher").token
    port = free_port(3141, 3159)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_DATABASE_URL=url, TIDEGATE_BROKER_URL="memory://localhost/", PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [TIDEGATE, "webserver", "-f", str(PROJECT), "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the webserver did not start") from None
                time.sleep(0.2)
        session = Session(port, token)
        server_rows = server_times(session, port)
        usable_rows = usable_times(port, token) if os.access(CHROMIUM, os.X_OK) else []
        server_rss = vm_hwm_kib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        storage.dispose()
    print()
    print(f"bench/ui.py  tidegate {version('tidegate')}, PostgreSQL {pg_version}, Python {sys.version.split()[0]}")
    print(f"  CPU {cpu_model()}, {os.cpu_count()} cores, load {load_avg()}")
    print(
        f"  data: {RUNS:,} runs (+1 of 200 steps), 1,000 assets, {PARTITIONS:,} partitions of one "
        f"(60% materialized incl. 501 failed), {TICKS:,} ticks; filled in {filled:.1f} s"
    )
    print(f"  server time: {REQUESTS} sequential requests each, one keep-alive connection, one webserver process")
    print(table(["request", "p50 ms", "p99 ms", "p50 vs health", "KiB"], server_rows, [False, True, True, True, True]))
    if usable_rows:
        print(f"  time until usable in headless Chromium (navigation start -> content there), {LOADS} loads")
        print(table(["page", "median ms", "max ms", "vs health"], usable_rows, [False, True, True, True]))
    else:
        print("  time until usable: skipped, /usr/bin/chromium is missing (apt-get install chromium)")
    print(
        f"  peak RSS: webserver {server_rss / 1024 if server_rss else float('nan'):.0f} MiB, "
        f"bench {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
