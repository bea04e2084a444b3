"""The REST API under load: ``python bench/api.py`` (see bench/README.md).

1. Fills PostgreSQL database ``tidegate_bench_api`` with BENCH_API_RUNS runs (default 100,000;
   two steps each) and BENCH_API_EVENTS events (default 1,000,000, spread evenly over the runs)
   in a few INSERT ... SELECT statements, then ANALYZE.
2. Starts ``tidegate webserver`` (one process) on the example ETL project and measures, one
   request after another over one keep-alive connection, the p50/p99 latency of: launch
   (POST /runs), get run (a random run with its steps), list runs (first page of 50; a page of
   50 filtered by job and tag), run events (a random run's events).
3. Times the CLI's submit path in the same run: ``prepare_job_run`` + ``submit`` in this process
   (what ``tidegate job launch`` does after loading the code), and a few whole ``tidegate job
   launch --no-wait`` processes; prints launch / submit ratios (aim: at most 2x).
4. Requests per second of get run with 1 and with 2 webserver worker processes
   (``--workers 2``), BENCH_API_CLIENTS client threads (default 4) for BENCH_API_SECONDS
   (default 5) each; prints the 2-worker / 1-worker ratio.
5. Prints the conditions and the peak RSS of the webserver processes and of the bench.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    analyze,
    child_pids,
    cpu_model,
    free_port,
    load_avg,
    prepare_postgres,
    progress,
    table,
    version,
    vm_hwm_kib,
)
from tidegate.definitions.loading import CodeLocation
from tidegate.names import Role
from tidegate.storage.api import Storage
from tidegate.submit import prepare_job_run

PROJECT = ROOT / "examples" / "etl" / "definitions.py"
JOB = "etl_job"
RUNS = int(os.environ.get("BENCH_API_RUNS", "100000"))
EVENTS = int(os.environ.get("BENCH_API_EVENTS", "1000000"))
REQUESTS = int(os.environ.get("BENCH_API_REQUESTS", "300"))
CLIENTS = int(os.environ.get("BENCH_API_CLIENTS", "4"))
SECONDS = float(os.environ.get("BENCH_API_SECONDS", "5"))
TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def fill(storage: Storage) -> float:
    """RUNS terminal runs of 2 steps and EVENTS events, in SQL; returns the seconds it took."""
    start = time.perf_counter()
    per_run = max(1, EVENTS // RUNS)
    with storage.engine.begin() as conn:
        conn.execute(text("TRUNCATE runs, steps, events, materializations, api_tokens RESTART IDENTITY"))
        conn.execute(
            text(
                """
                INSERT INTO runs (run_id, job_name, status, origin, run_key, priority, tags, asset_selection,
                                  parent_run_id, steps_remaining, created_at, started_at, ended_at)
                SELECT md5(i::text), CASE WHEN i % 4 = 0 THEN 'etl_job' ELSE 'job_' || (i % 7) END,
                       CASE WHEN i % 10 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, 'bench', NULL, 0,
                       json_build_object('team', 't' || (i % 10)), NULL, NULL, 0,
                       now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval,
                       now() - (i || ' seconds')::interval + interval '2 seconds'
                FROM generate_series(1, :runs) AS i
                """
            ),
            {"runs": RUNS},
        )
        conn.execute(
            text(
                """
                INSERT INTO steps (run_id, step_key, asset_key, display_name, status, attempt, queue, downstream,
                                   pending_upstream, worker, started_at, ended_at)
                SELECT md5(i::text), s.key, s.key, s.key, 'SUCCEEDED', 1, 'tidegate', '[]'::json, 0, 'bench@host',
                       now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval + interval '1 second'
                FROM generate_series(1, :runs) AS i, (VALUES ('extract'), ('load')) AS s(key)
                """
            ),
            {"runs": RUNS},
        )
        conn.execute(
            text(
                """
                INSERT INTO events (run_id, step_key, event_type, timestamp, message, data)
                SELECT md5(i::text), CASE WHEN e = 1 THEN NULL ELSE 'extract' END,
                       CASE WHEN e = 1 THEN 'RUN_QUEUED' ELSE 'LOG' END,
                       now() - (i || ' seconds')::interval, 'event ' || e, NULL
                FROM generate_series(1, :runs) AS i, generate_series(1, :per_run) AS e
                """
            ),
            {"runs": RUNS, "per_run": per_run},
        )
    analyze(storage)
    return time.perf_counter() - start


class Server:
    def __init__(self, env: dict[str, str], workers: int, log_dir: Path) -> None:
        self.port = free_port(3101, 3119)
        argv = [TIDEGATE, "webserver", "-f", str(PROJECT), "--port", str(self.port), "--workers", str(workers)]
        argv += ["--log-level", "info"]  # uvicorn logs "Application startup complete." once per worker
        self.log = log_dir / f"webserver-{workers}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 120
        while self.log.read_text(errors="replace").count("Application startup complete.") < workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"webserver did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def peak_rss(self) -> list[tuple[str, int | None]]:
        rows = [(f"webserver main (pid {self.proc.pid})", vm_hwm_kib(self.proc.pid))]
        for child in child_pids(self.proc.pid):
            rows.append((f"  child {child}", vm_hwm_kib(child)))
        return rows

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def get(self, path: str) -> tuple[int, bytes]:
        return self.call("GET", path)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def latencies(call: Callable[[int], tuple[int, bytes]], expected: int) -> list[float]:
    for i in range(10):  # warm up
        call(i)
    found = []
    for i in range(REQUESTS):
        start = time.perf_counter()
        status, body = call(i)
        found.append(time.perf_counter() - start)
        if status != expected:
            raise RuntimeError(f"status {status}: {body[:300]!r}")
    return found


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def throughput(port: int, token: str, run_ids: list[str]) -> float:
    done = [0] * CLIENTS
    stop = time.perf_counter() + SECONDS

    def worker(index: int) -> None:
        client = Client(port, token)
        rng = random.Random(index)
        while time.perf_counter() < stop:
            status, _ = client.get(f"/api/v1/runs/{rng.choice(run_ids)}")
            assert status == 200
            done[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def main() -> None:
    url, pg_version = prepare_postgres("tidegate_bench_api")
    storage = Storage.open(url, upgrade=True)
    progress(f"filling {RUNS:,} runs, {2 * RUNS:,} steps and {EVENTS:,} events")
    fill_seconds = fill(storage)
    token = storage.create_token("bench", Role.ADMIN).token
    logs = Path(tempfile.mkdtemp(prefix="tidegate-bench-api-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_DATABASE_URL=url, TIDEGATE_BROKER_URL="memory://localhost/", TIDEGATE_HOME=str(logs))
    rng = random.Random(7)
    with storage.engine.connect() as conn:
        run_ids = [r[0] for r in conn.execute(text("SELECT run_id FROM runs ORDER BY random() LIMIT 2000"))]
    rows = []
    server = Server(env, 1, logs)
    rss: list[tuple[str, int | None]] = []
    try:
        client = Client(server.port, token)
        measured = {
            "launch (POST /runs)": latencies(lambda i: client.call("POST", "/api/v1/runs", {"job": JOB}), 201),
            "get run": latencies(lambda i: client.get(f"/api/v1/runs/{rng.choice(run_ids)}"), 200),
            "list runs, first page": latencies(lambda i: client.get("/api/v1/runs?limit=50"), 200),
            "list runs, filtered page": latencies(
                lambda i: client.get("/api/v1/runs?limit=50&job=etl_job&tag=team%3Dt4&status=SUCCESS"), 200
            ),
            "run events": latencies(lambda i: client.get(f"/api/v1/runs/{rng.choice(run_ids)}/events"), 200),
        }
        for name, values in measured.items():
            rows.append([name, f"{pct(values, 0.5) * 1000:.1f} ms", f"{pct(values, 0.99) * 1000:.1f} ms"])
        progress("CLI submit path")
        defs = CodeLocation.parse(str(PROJECT)).load()
        submit = []
        for _ in range(REQUESTS):
            start = time.perf_counter()
            prepare_job_run(defs, storage, JOB).submit(storage, origin="cli")
            submit.append(time.perf_counter() - start)
        cli_process = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(
                [TIDEGATE, "job", "launch", JOB, "-f", str(PROJECT)], env=env, check=True, capture_output=True
            )
            cli_process.append(time.perf_counter() - start)
        rss += server.peak_rss()
    finally:
        server.stop()
    progress("requests/s of get run with 1 and 2 webserver workers")
    rates = {}
    for workers in (1, 2):
        server = Server(env, workers, logs)
        try:
            rates[workers] = throughput(server.port, token, run_ids)
            if workers == 2:
                rss += server.peak_rss()
        finally:
            server.stop()

    print("tidegate REST API benchmark")
    print(f"  cpu          {os.cpu_count()} x {cpu_model()}; load average {load_avg()}")
    print(f"  python       {sys.version.split()[0]}; fastapi {version('fastapi')}, uvicorn {version('uvicorn')}")
    print(f"  database     PostgreSQL {pg_version} on 127.0.0.1, database tidegate_bench_api")
    print(f"  data         {RUNS:,} runs, {2 * RUNS:,} steps, {EVENTS:,} events (filled in {fill_seconds:.1f} s)")
    print(f"  latency      {REQUESTS} sequential requests per row over one keep-alive connection, 1 webserver process")
    print()
    print(table(["request", "p50", "p99"], rows, [False, True, True]))
    print()
    launch_p50 = pct(measured["launch (POST /runs)"], 0.5)
    print(f"CLI submit path in-process (prepare_job_run + submit): p50 {statistics.median(submit) * 1000:.1f} ms")
    print(
        f"whole `tidegate job launch` process:                    median {statistics.median(cli_process) * 1000:.0f} ms"
    )
    print(f"ratio launch p50 / in-process submit p50: {launch_p50 / statistics.median(submit):.2f}x (aim <= 2x)")
    print(f"ratio launch p50 / whole CLI process:     {launch_p50 / statistics.median(cli_process):.3f}x")
    print()
    print(f"get run, {CLIENTS} client threads in this process for {SECONDS:g} s each:")
    print(f"  1 webserver worker:  {rates[1]:,.0f} requests/s")
    print(f"  2 webserver workers: {rates[2]:,.0f} requests/s  (ratio {rates[2] / rates[1]:.2f}x)")
    print()
    print("peak RSS (VmHWM)")
    for name, kib in rss:
        print(f"  {name:<40} {kib / 1024 if kib else 0:,.1f} MiB")
    import resource

    print(f"  {'bench process':<40} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.1f} MiB")
    storage.dispose()


if __name__ == "__main__":
    main()
