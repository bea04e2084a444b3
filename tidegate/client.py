"""A small Python client of the webserver's REST API: ``TidegateClient(url, token)``.

It uses the standard library's urllib (no dependency to install where only the client runs,
e.g. a trigger script on another machine). Errors the API answers with become
:class:`TidegateAPIError` carrying the HTTP status and the stable ``code``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.config import run_config_dict
from tidegate.errors import TidegateError
from tidegate.names import RunStatus


class TidegateAPIError(TidegateError):
    """The webserver refused a request: ``status`` (HTTP), ``code`` (stable) and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RunResult:
    """How a run ended (what :meth:`TidegateClient.wait` returns): its status and the error of
    each step that failed."""

    run_id: str
    status: str
    step_errors: dict[str, str] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == RunStatus.SUCCESS


class TidegateClient:
    """``TidegateClient("http://host:3000", token)``: launch runs and backfills, read and cancel
    runs, wait for a run to end."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"TidegateClient({self.base!r})"

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """One API call; the decoded JSON answer, or TidegateAPIError."""
        url = self.base + path
        if params:
            query = [(k, v) for k, value in params.items() for v in _values(value)]
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
                code, message = str(payload["code"]), str(payload["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", raw.decode(errors="replace")[:200] or exc.reason
            raise TidegateAPIError(exc.code, code, message) from None

    # -- runs ---------------------------------------------------------------------------------

    def launch(
        self,
        job: str | None = None,
        *,
        asset_selection: str | None = None,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_key: str | None = None,
        priority: int | None = None,
        run_config: Any = None,
    ) -> str:
        """Launch ``job`` (or materialize ``asset_selection``) with ``run_config`` (a RunConfig
        or its dict form; None: the job's default config); the new run's id. A run key that
        has a run already raises TidegateAPIError with status 409; config that does not fit
        the job, status 400 with code ``invalid_run_config``."""
        body: dict[str, Any] = {"job": job, "asset_selection": asset_selection, "tags": dict(tags or {})}
        body.update({"partition": partition, "run_key": run_key, "priority": priority})
        if run_config is not None:
            body["run_config"] = run_config_dict("run_config", run_config)
        run = self.request("POST", "/runs", body={k: v for k, v in body.items() if v is not None})
        return str(run["run_id"])

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run with its steps (status, attempt, duration, worker, error)."""
        run: dict[str, Any] = self.request("GET", f"/runs/{_quote(run_id)}")
        return run

    def list_runs(self, **filters: Any) -> dict[str, Any]:
        """One page of runs (filters: status, job, tag=["k=v"], created_after, cursor, limit)."""
        page: dict[str, Any] = self.request("GET", "/runs", params=filters)
        return page

    def wait(self, run_id: str, timeout: float = 600.0, *, poll: float = 0.5) -> RunResult:
        """Poll until the run ends; its final status and the failed steps' errors.
        TimeoutError if it has not ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run["status"] in RunStatus.TERMINAL:
                errors = {s["step_key"]: s["error"] for s in run["steps"] if s.get("error") and s["status"] == "FAILED"}
                return RunResult(run_id, run["status"], errors, run)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run '{run_id}': still {run['status']} after {timeout}s")
            time.sleep(poll)

    def cancel(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.request("POST", f"/runs/{_quote(run_id)}/cancel")
        return run

    def reexecute(self, run_id: str, *, from_failure: bool = False) -> str:
        run = self.request("POST", f"/runs/{_quote(run_id)}/reexecute", body={"from_failure": from_failure})
        return str(run["run_id"])

    def events(self, run_id: str, *, after: int = 0, limit: int = 200) -> dict[str, Any]:
        page: dict[str, Any] = self.request(
            "GET", f"/runs/{_quote(run_id)}/events", params={"after": after, "limit": limit}
        )
        return page

    # -- backfills ----------------------------------------------------------------------------

    def backfill(
        self,
        job: str,
        *,
        from_key: str | None = None,
        to_key: str | None = None,
        partitions: Sequence[str] | None = None,
        all: bool = False,
        missing: bool = False,
        max_concurrent: int | None = None,
        run_config: Any = None,
    ) -> dict[str, Any]:
        """Create a backfill of ``job`` (exactly one of a range, ``partitions``, ``all`` or
        ``missing``), each run with ``run_config`` (None: the job's default); the backfill with
        its progress."""
        body: dict[str, Any] = {"job": job, "all": all, "missing": missing}
        body.update({"from_key": from_key, "to_key": to_key, "max_concurrent": max_concurrent})
        if run_config is not None:
            body["run_config"] = run_config_dict("run_config", run_config)
        if partitions is not None:
            body["partitions"] = list(partitions)
        created: dict[str, Any] = self.request(
            "POST", "/backfills", body={k: v for k, v in body.items() if v is not None}
        )
        return created

    def get_backfill(self, backfill_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/backfills/{_quote(backfill_id)}")
        return found


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
