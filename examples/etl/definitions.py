"""An ETL example: ingest CSV files, clean them, join, aggregate and write a report.

    tidegate job launch etl_job -f examples/etl/definitions.py --wait
    tidegate dev -f examples/etl/definitions.py      # schedule + file sensor, live

Dropping ``orders_*.csv`` files into ``.tidegate/inbox`` while ``tidegate dev`` runs makes
one run per file (the ``orders_inbox`` sensor); ``daily_etl`` runs the job at 06:00 Berlin.

The data directory and the report directory are resources, so tests and deployments point
them elsewhere without touching the assets.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import tidegate as tg

HERE = Path(__file__).parent
INBOX = Path(".tidegate") / "inbox"


class CsvSource(tg.ConfigurableResource):
    """Where the landed CSV files are."""

    directory: str

    def read(self, pattern: str) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for path in sorted(Path(self.directory).glob(pattern)):
            with path.open(newline="") as handle:
                rows.extend({**row, "_file": path.name} for row in csv.DictReader(handle))
        return rows


class ReportDestination(tg.ConfigurableResource):
    directory: str

    def write(self, name: str, text: str) -> Path:
        path = Path(self.directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


# -- ingest ---------------------------------------------------------------------------------


@tg.asset(group_name="ingest", retry_policy=tg.RetryPolicy(max_retries=2, delay=1, backoff=tg.Backoff.EXPONENTIAL))
def raw_orders(context: tg.AssetExecutionContext, source: CsvSource) -> list[dict[str, str]]:
    """Every order row of every landed orders_*.csv file."""
    rows = source.read("orders_*.csv")
    landed = context.tags.get("tidegate/file")  # set when the orders_inbox sensor asked for this run
    if landed:
        rows += CsvSource(directory=str(Path(landed).parent)).read(Path(landed).name)
    context.log.info("read %d order rows", len(rows))
    context.add_output_metadata({"rows": len(rows)})
    return rows


@tg.asset(group_name="ingest")
def raw_customers(source: CsvSource) -> list[dict[str, str]]:
    return source.read("customers.csv")


# -- clean ----------------------------------------------------------------------------------


@tg.asset(group_name="clean", tags={"team": "finance"})
def cleaned_orders(context: tg.AssetExecutionContext, raw_orders: list[dict[str, str]]) -> list[dict]:
    """Orders with a numeric, positive amount, de-duplicated by order id."""
    seen: set[str] = set()
    cleaned, rejected = [], 0
    for row in raw_orders:
        try:
            amount = float(row["amount"])
        except ValueError:
            rejected += 1
            continue
        if amount <= 0 or row["order_id"] in seen:
            rejected += 1
            continue
        seen.add(row["order_id"])
        cleaned.append(
            {
                "order_id": row["order_id"],
                "customer_id": row["customer_id"],
                "day": datetime.fromisoformat(row["ordered_at"]).date().isoformat(),
                "amount": amount,
            }
        )
    context.add_output_metadata({"rows": len(cleaned), "rejected": rejected})
    return cleaned


@tg.asset(group_name="clean")
def cleaned_customers(raw_customers: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["customer_id"]: {"name": row["name"], "region": row["region"]} for row in raw_customers}


@tg.asset(group_name="clean", tags={"team": "finance"})
def enriched_orders(cleaned_orders: list[dict], cleaned_customers: dict[str, dict[str, str]]) -> list[dict]:
    """Orders joined to their customer; orders of unknown customers are kept as 'unknown'."""
    unknown = {"name": "unknown", "region": "unknown"}
    return [{**o, **cleaned_customers.get(o["customer_id"], unknown)} for o in cleaned_orders]


# -- aggregate ------------------------------------------------------------------------------


def _sum_by(rows: list[dict], field: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row[field]] += row["amount"]
    return {k: round(v, 2) for k, v in sorted(totals.items())}


@tg.asset(group_name="aggregate", tags={"team": "finance"})
def daily_revenue(enriched_orders: list[dict]) -> dict[str, float]:
    return _sum_by(enriched_orders, "day")


@tg.asset(group_name="aggregate", tags={"team": "finance"})
def revenue_by_region(enriched_orders: list[dict]) -> dict[str, float]:
    return _sum_by(enriched_orders, "region")


@tg.asset(group_name="aggregate")
def top_customers(enriched_orders: list[dict]) -> list[tuple[str, float]]:
    totals = _sum_by(enriched_orders, "name")
    return sorted(totals.items(), key=lambda item: -item[1])[:3]


# -- report ---------------------------------------------------------------------------------


@tg.asset(group_name="report")
def sales_report(
    context: tg.AssetExecutionContext,
    daily_revenue: dict[str, float],
    revenue_by_region: dict[str, float],
    top_customers: list[tuple[str, float]],
    reports: ReportDestination,
) -> tg.MaterializeResult:
    """A Markdown report; the file is the output, so only metadata is recorded."""
    lines = ["# Sales report", "", "## Revenue by day", ""]
    lines += [f"- {day}: {total:.2f} EUR" for day, total in daily_revenue.items()]
    lines += ["", "## Revenue by region", ""]
    lines += [f"- {region}: {total:.2f} EUR" for region, total in revenue_by_region.items()]
    lines += ["", "## Top customers", ""]
    lines += [f"{i}. {name}: {total:.2f} EUR" for i, (name, total) in enumerate(top_customers, 1)]
    path = reports.write(f"sales_report_{context.run_id[:8]}.md", "\n".join(lines) + "\n")
    context.log.info("report written to %s", path)
    return tg.MaterializeResult(metadata={"path": str(path), "total": round(sum(daily_revenue.values()), 2)})


etl_job = tg.define_asset_job("etl_job", selection="*", description="The whole pipeline.")
finance_job = tg.define_asset_job("finance_job", selection="tag:team=finance")

daily_etl = tg.ScheduleDefinition(
    name="daily_etl",
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/Berlin",
    target=etl_job,
    default_status=tg.DefaultScheduleStatus.RUNNING,
)
orders_inbox = tg.file_sensor(
    "orders_inbox",
    directory=INBOX,
    pattern="orders_*.csv",
    target=etl_job,
    minimum_interval_seconds=5,
    default_status=tg.DefaultSensorStatus.RUNNING,
)

defs = tg.Definitions(
    assets=[
        raw_orders,
        raw_customers,
        cleaned_orders,
        cleaned_customers,
        enriched_orders,
        daily_revenue,
        revenue_by_region,
        top_customers,
        sales_report,
    ],
    jobs=[etl_job, finance_job],
    schedules=[daily_etl],
    sensors=[orders_inbox],
    resources={
        "source": CsvSource(directory=str(HERE / "data")),
        "reports": ReportDestination(directory=str(Path(".tidegate") / "reports")),
    },
)
