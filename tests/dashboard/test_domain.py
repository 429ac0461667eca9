"""The demo domain: the dashboards' numbers on known orders, the traffic generator, the admin."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dashboard.dashboards import orders, sales
from dashboard.models import Order

# 12:30:15 UTC: the current minute is 12:30, the hour's first bucket 11:31.
NOW = dt.datetime(2026, 11, 26, 12, 30, 15, tzinfo=dt.UTC)

pytestmark = pytest.mark.django_db


def order(
    amount: str,
    at: dt.datetime,
    status: str = Order.Status.PAID,
    region: str = Order.Region.EU,
    customer: str = "Ada Abe",
) -> Order:
    return Order.objects.create(
        amount=Decimal(amount), created_at=at, status=status, region=region, customer=customer
    )


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def test_orders_counts_today_since_local_midnight_and_revenue_without_cancelled():
    order("999.00", ago(hours=13), Order.Status.PAID)  # yesterday, still open
    order("100.00", ago(hours=3), Order.Status.PAID, customer="Ben Costa")
    order("50.50", ago(hours=2), Order.Status.PENDING)
    order("20.00", ago(hours=1), Order.Status.CANCELLED, Order.Region.NA)
    newest = order("30.25", ago(minutes=1), Order.Status.SHIPPED, Order.Region.APAC, "Mei Kim")

    data = orders(now=NOW)

    assert data["kpis"] == {
        "orders_today": 4,
        "revenue_today": "180.75",
        "average_order": "60.25",  # 180.75 over the 3 orders not cancelled
        "open_orders": 3,  # pending or paid, whatever the day
    }
    assert data["by_region"] == [
        {"region": "EU", "label": "Europe", "orders": 2, "revenue": "150.50"},
        {"region": "NA", "label": "North America", "orders": 1, "revenue": "0.00"},
        {"region": "LATAM", "label": "Latin America", "orders": 0, "revenue": "0.00"},
        {"region": "APAC", "label": "Asia-Pacific", "orders": 1, "revenue": "30.25"},
        {"region": "MEA", "label": "Middle East & Africa", "orders": 0, "revenue": "0.00"},
    ]
    assert len(data["latest"]) == 5
    assert data["latest"][0] == {
        "id": newest.pk,
        "customer": "Mei Kim",
        "amount": "30.25",
        "status": "shipped",
        "region": "APAC",
        "created_at": "2026-11-26T12:29:15Z",
    }
    assert [row["amount"] for row in data["latest"]] == [
        "30.25",
        "20.00",
        "50.50",
        "100.00",
        "999.00",
    ]
    assert json.loads(json.dumps(data)) == data


def test_today_is_the_day_in_settings_time_zone(settings):
    settings.TIME_ZONE = "America/New_York"  # 12:30 UTC is 07:30 there, midnight 05:00 UTC
    order("10.00", NOW.replace(hour=4, minute=59))  # the day before, in New York
    order("20.00", NOW.replace(hour=5, minute=1))

    assert orders(now=NOW)["kpis"]["orders_today"] == 1
    assert orders(now=NOW)["kpis"]["revenue_today"] == "20.00"


def test_orders_on_an_empty_shop_is_zeros():
    data = orders(now=NOW)

    assert data["kpis"] == {
        "orders_today": 0,
        "revenue_today": "0.00",
        "average_order": "0.00",
        "open_orders": 0,
    }
    assert [row["orders"] for row in data["by_region"]] == [0, 0, 0, 0, 0]
    assert data["latest"] == []


def test_orders_lists_the_ten_newest_with_a_handful_of_queries(django_assert_max_num_queries):
    Order.objects.bulk_create(
        Order(amount=Decimal(n), created_at=ago(seconds=n), region="EU", customer=f"c{n}")
        for n in range(1, 26)
    )

    with django_assert_max_num_queries(3):
        data = orders(now=NOW)

    assert [row["customer"] for row in data["latest"]] == [f"c{n}" for n in range(1, 11)]
    assert data["latest"][0]["created_at"] == "2026-11-26T12:30:14Z"
    assert data["kpis"]["orders_today"] == 25


def test_sales_buckets_the_last_hour_by_minute(django_assert_max_num_queries):
    order("10.00", NOW.replace(second=5))  # the current minute
    order("2.50", NOW.replace(second=10), Order.Status.PENDING)
    order("99.00", NOW.replace(second=12), Order.Status.CANCELLED)  # counted, no revenue
    order("5.00", NOW.replace(minute=29, second=59))
    order("1.25", NOW.replace(minute=26, second=0))  # within five minutes
    order("7.00", NOW.replace(minute=25, second=0))  # not within five minutes
    order("40.00", NOW.replace(hour=11, minute=31, second=0))  # the first bucket
    order("1000.00", NOW.replace(hour=11, minute=30, second=59))  # over an hour ago

    with django_assert_max_num_queries(3):
        data = sales(now=NOW)

    series = data["series"]
    assert len(series) == 60
    assert series[0] == {"t": "2026-11-26T11:31:00Z", "orders": 1, "revenue": "40.00"}
    assert series[-1] == {"t": "2026-11-26T12:30:00Z", "orders": 3, "revenue": "12.50"}
    assert series[-2] == {"t": "2026-11-26T12:29:00Z", "orders": 1, "revenue": "5.00"}
    assert series[-5] == {"t": "2026-11-26T12:26:00Z", "orders": 1, "revenue": "1.25"}
    assert series[-6] == {"t": "2026-11-26T12:25:00Z", "orders": 1, "revenue": "7.00"}
    assert sum(bucket["orders"] for bucket in series) == 7
    assert [bucket["t"] for bucket in series[:2]] == [
        "2026-11-26T11:31:00Z",
        "2026-11-26T11:32:00Z",
    ]
    assert series[1] == {"t": "2026-11-26T11:32:00Z", "orders": 0, "revenue": "0.00"}
    assert data["revenue_last_hour"] == "65.75"
    assert data["orders_per_minute"] == 1.0  # 5 orders in the last five minutes
    assert json.loads(json.dumps(data)) == data


def test_sales_on_an_empty_shop_is_sixty_empty_minutes():
    data = sales(now=NOW)

    assert data["orders_per_minute"] == 0.0
    assert data["revenue_last_hour"] == "0.00"
    assert len(data["series"]) == 60
    assert {(bucket["orders"], bucket["revenue"]) for bucket in data["series"]} == {(0, "0.00")}


def test_the_dashboards_use_the_clock_when_not_told_the_time():
    order("12.00", timezone.now())

    assert orders()["kpis"]["orders_today"] == 1
    series = sales()["series"]
    assert series[-1]["orders"] + series[-2]["orders"] == 1  # the minute may have turned


def test_simulate_writes_orders_at_the_rate_and_updates_some():
    out = io.StringIO()
    before = timezone.now()

    call_command("simulate", "--rate", "200", "--duration", "1", "--seed", "1", stdout=out)

    written = Order.objects.count()
    assert 100 <= written <= 220
    assert not Order.objects.filter(created_at__lt=before).exists()
    statuses = set(Order.objects.values_list("status", flat=True))
    assert {"pending", "paid", "shipped"} <= statuses
    assert len(set(Order.objects.values_list("region", flat=True))) == 5
    output = out.getvalue()
    assert "\r" not in output  # not a terminal: plain progress lines
    summary = output.strip().splitlines()[-1]
    assert summary.startswith(f"wrote {written} orders and ")
    assert "updates in" in summary
    assert "orders/s" in summary


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_simulate_draws_a_progress_bar_on_a_terminal():
    out = Terminal()

    call_command("simulate", "--rate", "100", "--duration", "0.3", stdout=out)

    output = out.getvalue()
    assert "\r[" in output
    assert "100%" in output
    assert output.rstrip().splitlines()[-1].startswith("wrote 30 orders")


def test_backfill_spreads_history_over_the_past_minutes():
    out = io.StringIO()
    before = timezone.now()

    call_command(
        "simulate",
        "--rate",
        "1",
        "--duration",
        "0",
        "--backfill-minutes",
        "10",
        "--seed",
        "3",
        stdout=out,
    )

    written = Order.objects.count()
    assert 400 <= written <= 800  # about 60 a minute, in a wave
    assert f"backfilled {written} orders over 10 minutes" in out.getvalue()
    oldest = Order.objects.order_by("created_at").first()
    assert oldest is not None
    assert oldest.created_at >= before - dt.timedelta(minutes=10)
    assert not Order.objects.filter(created_at__gt=timezone.now()).exists()
    series = sales()["series"]
    # Whole minutes are full, and nothing is older than ten minutes (give or take
    # the minute turning while the test runs).
    assert all(bucket["orders"] > 0 for bucket in series[-9:-1])
    assert all(bucket["orders"] == 0 for bucket in series[:-12])


def test_the_same_seed_writes_the_same_orders():
    def run() -> list[tuple]:
        call_command(
            "simulate",
            "--rate",
            "1",
            "--duration",
            "0",
            "--backfill-minutes",
            "2",
            "--seed",
            "7",
            stdout=io.StringIO(),
        )
        rows = list(Order.objects.order_by("id").values_list("amount", "region", "customer"))
        Order.objects.all().delete()
        return rows

    assert run() == run()


def test_simulate_refuses_a_rate_of_zero():
    with pytest.raises(CommandError, match="--rate must be above 0"):
        call_command("simulate", "--rate", "0", stdout=io.StringIO())


def test_the_admin_lists_filters_and_searches_orders(admin_client):
    order("10.00", NOW, customer="Grace Park")
    order("20.00", NOW, Order.Status.PENDING, Order.Region.MEA, customer="Omar Weber")

    page = admin_client.get("/admin/dashboard/order/", {"status__exact": "pending", "q": "omar"})

    assert page.status_code == 200
    assert "Omar Weber" in page.content.decode()
    assert "Grace Park" not in page.content.decode()
    by_day = admin_client.get("/admin/dashboard/order/", {"created_at__year": "2026"})
    assert by_day.status_code == 200
