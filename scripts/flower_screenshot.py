"""Take docs/flower-tasks.png: Flower's tasks page showing tidegate's step tasks.

    make flower-screenshot        # or: .venv/bin/python scripts/flower_screenshot.py [--out PATH]

Starts, in a temporary directory, a real ``tidegate worker``, ``tidegate beat`` and
``tidegate flower`` on the example ETL project (SQLite, Redis database 12 by default, flushed
before and after), launches runs of ``etl_job`` and ``finance_job`` through Flower's API
(``tidegate.launch_job``) and one launch of an unknown job (a failed task), waits for the runs
to end, then has headless Chromium (Debian's ``chromium`` package) capture the tasks page.

Flower runs with basic auth; Chromium gets it in the URL (``http://user:pass@host/``), which
Chromium accepts for the page itself, and repeats for the page's same-origin data requests.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tidegate.names import LAUNCH_JOB_TASK, RunStatus
from tidegate.storage.api import Storage

ROOT = Path(__file__).resolve().parent.parent
TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
PROJECT = ROOT / "examples" / "etl" / "definitions.py"
USER, PASSWORD = "screenshot", "flower-screenshot"
T = TypeVar("T")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "flower-tasks.png"))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="flushed before and after")
    parser.add_argument("--size", default="1600,1000", help="window size WIDTH,HEIGHT")
    args = parser.parse_args()

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("error: chromium not found: apt-get install -y chromium (Debian's package)", file=sys.stderr)
        return 2
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    with tempfile.TemporaryDirectory(prefix="tidegate-flower-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "FLOWER_"))}
        env.update(
            TIDEGATE_HOME=str(work / "home"),
            TIDEGATE_DATABASE_URL=f"sqlite:///{work / 'tidegate.db'}",
            TIDEGATE_BROKER_URL=args.redis_url,
            TIDEGATE_DEFINITIONS=str(PROJECT),
            TIDEGATE_FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}",
            PYTHONUNBUFFERED="1",
        )
        subprocess.run([TIDEGATE, "db", "upgrade"], env=env, cwd=work, check=True, capture_output=True)
        processes: list[subprocess.Popen[bytes]] = []

        def start(name: str, *argv: str) -> Path:
            log = work / f"{name}.log"
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [TIDEGATE, *argv],
                        env=env,
                        cwd=work,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            return log

        try:
            worker_log = start("worker", "worker", "-c", "2", "-n", "etl@%h", "--", "--without-mingle")
            start("beat", "beat")
            flower_log = start("flower", "flower", "--port", "0")
            port = int(wait_for(lambda: _find(r"Visit me at http://127\.0\.0\.1:(\d+)", flower_log), "flower"))
            wait_for(lambda: " ready." in worker_log.read_text(errors="replace"), "the worker")
            time.sleep(2)  # let Flower see the worker come online
            launches = [
                _launch(port, "etl_job", tags={"owner": "ana"}),
                _launch(port, "finance_job", run_key="finance-2024-01-22"),
                _launch(port, "etl_job"),
                _launch(port, "no_such_job"),
            ]
            wait_for(lambda: _all_done(port, launches, env["TIDEGATE_DATABASE_URL"]), "the runs")
            url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/tasks"
            out = Path(args.out).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",  # as root in a container
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    f"--user-data-dir={work / 'chromium'}",
                    f"--window-size={args.size}",
                    "--virtual-time-budget=8000",  # let the page's data requests finish
                    f"--screenshot={out}",
                    url,
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            print(f"wrote {out} ({out.stat().st_size} bytes)")
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            redis.Redis.from_url(args.redis_url).flushdb()
    return 0


def _find(pattern: str, log: Path) -> str | None:
    found = re.search(pattern, log.read_text(errors="replace"))
    return found.group(1) if found else None


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"error: {what} not ready after {timeout:.0f}s")


def _request(port: int, method: str, path: str, body: object = None) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"error: {method} {path}: HTTP {response.status}: {text}")
    result: dict[str, object] = json.loads(text)
    return result


def _launch(port: int, job: str, **kwargs: object) -> str:
    response = _request(port, "POST", f"/api/task/async-apply/{LAUNCH_JOB_TASK}", {"args": [job], "kwargs": kwargs})
    return str(response["task-id"])


def _all_done(port: int, launches: list[str], database_url: str) -> bool:
    """Every launch answered, every run it made ended, and Flower saw each task end."""
    tasks = _request(port, "GET", "/api/tasks")
    states = {task_id: task.get("state") for task_id, task in tasks.items() if isinstance(task, dict)}
    if any(states.get(t) not in ("SUCCESS", "FAILURE") for t in launches):
        return False
    storage = Storage.open(database_url)
    try:
        runs = storage.list_runs()
    finally:
        storage.dispose()
    if len(runs) < len(launches) - 1 or any(r.status not in RunStatus.TERMINAL for r in runs):
        return False
    return all(state in ("SUCCESS", "FAILURE") for state in states.values())


if __name__ == "__main__":
    raise SystemExit(main())
