"""The demo dashboards: pure functions of the database, registered with tasks.registry.

Both return JSON-able data: amounts as strings with two decimals ("1234.50"),
times in ISO 8601 UTC with a "Z". The registry adds ``computed_at`` and ``next_due``.
Each takes an optional ``now`` so a test can ask "as of when" without touching the clock.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, TypedDict

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMinute
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from dashboard.models import Order
from tasks.registry import dashboard

__all__ = ["orders", "sales"]

CENT = Decimal("0.01")
SERIES_MINUTES = 60
RATE_WINDOW_MINUTES = 5
LATEST_COUNT = 10
OPEN_STATUSES = (Order.Status.PENDING, Order.Status.PAID)
# Revenue is what was not cancelled.
COUNTS_AS_REVENUE = ~Q(status=Order.Status.CANCELLED)


class OrderKpis(TypedDict):
    orders_today: int
    revenue_today: str
    average_order: str
    open_orders: int


class RegionRow(TypedDict):
    region: str
    label: str
    orders: int
    revenue: str


class LatestOrder(TypedDict):
    id: int
    customer: str
    amount: str
    status: str
    region: str
    created_at: str


class OrdersPayload(TypedDict):
    kpis: OrderKpis
    by_region: list[RegionRow]
    latest: list[LatestOrder]


class MinuteBucket(TypedDict):
    t: str
    orders: int
    revenue: str


class SalesPayload(TypedDict):
    orders_per_minute: float
    revenue_last_hour: str
    series: list[MinuteBucket]


def money(value: Decimal | None) -> str:
    """``Decimal("1234.5")`` as ``"1234.50"``; no rows (``None``) as ``"0.00"``."""
    return str((value or Decimal(0)).quantize(CENT))


def utc_iso(moment: dt.datetime) -> str:
    """An aware datetime in ISO 8601 UTC with a "Z", milliseconds only when it has them.

    The same form as DjangoJSONEncoder's, which every other push uses.
    """
    text = moment.astimezone(dt.UTC).isoformat(
        timespec="milliseconds" if moment.microsecond else "seconds"
    )
    return text.removesuffix("+00:00") + "Z"


class MinuteUTC(TruncMinute):
    """A datetime truncated to its minute in UTC (whatever TIME_ZONE or the database's zone).

    On SQLite, Django truncates with a Python function called once per row: about
    3 s for an hour at 50 orders a second. Django stores SQLite datetimes as UTC
    text, so the built-in ``strftime`` does the same in a tenth of the time.
    """

    def __init__(self, expression: str) -> None:
        super().__init__(expression, tzinfo=dt.UTC)

    def as_sqlite(self, compiler: SQLCompiler, connection: Any, **extra: Any) -> tuple[str, list]:
        sql, params = compiler.compile(self.lhs)
        return f"strftime('%%Y-%%m-%%d %%H:%%M:00', {sql})", list(params)


def local_midnight(now: dt.datetime) -> dt.datetime:
    """The start of ``now``'s day in settings.TIME_ZONE (read at call time)."""
    local = timezone.localtime(now, timezone.get_default_timezone())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


@dashboard("orders", watches=[Order], public=True)
def orders(now: dt.datetime | None = None) -> OrdersPayload:
    """Today's KPIs, today's orders and revenue per region, and the newest orders."""
    now = now or timezone.now()
    # One pass over today's orders, grouped by region; the totals are the regions' sums.
    per_region = {
        row["region"]: row
        for row in Order.objects.filter(created_at__gte=local_midnight(now))
        .values("region")
        .annotate(
            orders=Count("id"),
            kept=Count("id", filter=COUNTS_AS_REVENUE),
            revenue=Sum("amount", filter=COUNTS_AS_REVENUE),
        )
        .order_by()
    }
    orders_today = sum(row["orders"] for row in per_region.values())
    kept = sum(row["kept"] for row in per_region.values())
    revenue = sum((row["revenue"] or Decimal(0) for row in per_region.values()), Decimal(0))
    # Open whatever day they were placed: an order paid yesterday and not shipped is open.
    open_orders = Order.objects.filter(status__in=OPEN_STATUSES).count()

    by_region: list[RegionRow] = []
    for region in Order.Region:
        row = per_region.get(region.value, {})
        by_region.append(
            {
                "region": region.value,
                "label": str(region.label),
                "orders": row.get("orders", 0),
                "revenue": money(row.get("revenue")),
            }
        )

    latest: list[LatestOrder] = [
        {
            "id": row["id"],
            "customer": row["customer"],
            "amount": money(row["amount"]),
            "status": row["status"],
            "region": row["region"],
            "created_at": utc_iso(row["created_at"]),
        }
        for row in Order.objects.order_by("-created_at", "-id").values(
            "id", "customer", "amount", "status", "region", "created_at"
        )[:LATEST_COUNT]
    ]
    return {
        "kpis": {
            "orders_today": orders_today,
            "revenue_today": money(revenue),
            "average_order": money(revenue / kept if kept else None),
            "open_orders": open_orders,
        },
        "by_region": by_region,
        "latest": latest,
    }


@dashboard("sales", every_s=5, public=True)
def sales(now: dt.datetime | None = None) -> SalesPayload:
    """The order rate of the last five minutes and the last hour, minute by minute.

    ``series`` holds 60 one-minute buckets, oldest first, the last one being the
    current (unfinished) minute; ``revenue_last_hour`` is their sum.
    """
    now = now or timezone.now()
    current_minute = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
    first_minute = current_minute - dt.timedelta(minutes=SERIES_MINUTES - 1)
    end = current_minute + dt.timedelta(minutes=1)

    # Grouped in the database: 60 rows back, however busy the hour was.
    rows = (
        Order.objects.filter(created_at__gte=first_minute, created_at__lt=end)
        .annotate(minute=MinuteUTC("created_at"))
        .values("minute")
        .annotate(orders=Count("id"), revenue=Sum("amount", filter=COUNTS_AS_REVENUE))
        .order_by("minute")
    )
    per_minute = {row["minute"].astimezone(dt.UTC): row for row in rows}
    series: list[MinuteBucket] = []
    total = Decimal(0)
    for index in range(SERIES_MINUTES):
        minute = first_minute + dt.timedelta(minutes=index)
        row = per_minute.get(minute, {})
        # Rounded before adding up, so the total is exactly the sum of the buckets shown.
        revenue = (row.get("revenue") or Decimal(0)).quantize(CENT)
        total += revenue
        series.append(
            {"t": utc_iso(minute), "orders": row.get("orders", 0), "revenue": money(revenue)}
        )

    recent = Order.objects.filter(
        created_at__gt=now - dt.timedelta(minutes=RATE_WINDOW_MINUTES), created_at__lte=now
    ).count()
    return {
        "orders_per_minute": round(recent / RATE_WINDOW_MINUTES, 2),
        "revenue_last_hour": money(total),
        "series": series,
    }
