"""``python manage.py simulate --rate 50 --duration 60``: a shop's traffic, live.

Orders arrive at about ``rate`` per second, each saved on its own so the model's
signals fire (and the dashboards watching ``Order`` recompute); earlier orders
move on from pending to paid, shipped or cancelled, so there are updates too.
``--backfill-minutes`` first writes that much history in bulk, so charts start full.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone

from dashboard.models import Order

REGION_WEIGHTS = {
    Order.Region.EU: 30,
    Order.Region.NA: 28,
    Order.Region.APAC: 22,
    Order.Region.LATAM: 12,
    Order.Region.MEA: 8,
}
FIRST_NAMES = (  # noqa: SIM905 -- a word list reads better than fifty quoted lines
    "Ada Amara Ben Carlos Chen Daniela Emma Farah Grace Hiro Ines Jonas Kofi Lena Luca Maya "
    "Mei Noah Olga Omar Priya Rafael Sofia Tariq Yara Zoe"
).split()
LAST_NAMES = (  # noqa: SIM905
    "Abe Banerjee Costa Dubois Eriksen Fischer Garcia Haddad Ivanova Jensen Kim Lopez Mensah "
    "Moreau Nakamura Novak Okafor Park Rossi Santos Silva Tanaka Weber Yilmaz"
).split()
# Amounts are log-normal: mostly tens, now and then hundreds (median 45, mean about 62).
AMOUNT_MEDIAN = 45.0
AMOUNT_SIGMA = 0.8
AMOUNT_MAX = 5000.0
# On average, per order created: how often an earlier pending order is paid or
# cancelled, and how often a paid one ships.
PAY_CHANCE = 0.55
CANCEL_CHANCE = 0.08
SHIP_CHANCE = 0.45
# Orders kept in memory for later updates; older ones stay as they are.
TRACKED_ORDERS = 2000
BACKFILL_BATCH = 1000
TTY_REFRESH_S = 0.1


@dataclass
class Shop:
    """The random choices of one run (seeded for repeatable runs)."""

    rng: random.Random
    customers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.customers = [
            f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)}" for _ in range(400)
        ]

    def amount(self) -> Decimal:
        value = min(self.rng.lognormvariate(math.log(AMOUNT_MEDIAN), AMOUNT_SIGMA), AMOUNT_MAX)
        return Decimal(str(max(value, 1.0))).quantize(Decimal("0.01"))

    def region(self) -> str:
        regions, weights = zip(*REGION_WEIGHTS.items(), strict=True)
        return self.rng.choices(regions, weights)[0]

    def customer(self) -> str:
        return self.rng.choice(self.customers)

    def order(self, created_at: dt.datetime | None = None, status: str | None = None) -> Order:
        return Order(
            amount=self.amount(),
            region=self.region(),
            customer=self.customer(),
            status=status or Order.Status.PENDING,
            created_at=created_at or timezone.now(),
        )

    def past_status(self, age: dt.timedelta) -> str:
        """A backfilled order's status: the older it is, the further it has got."""
        minutes = age.total_seconds() / 60
        weights = {
            Order.Status.PENDING: max(40 - 4 * minutes, 3),
            Order.Status.PAID: max(40 - 2 * minutes, 12),
            Order.Status.SHIPPED: min(10 + 3 * minutes, 75),
            Order.Status.CANCELLED: 8,
        }
        statuses, chances = zip(*weights.items(), strict=True)
        return self.rng.choices(statuses, chances)[0]


class Progress:
    """A ``\\r`` progress bar on a terminal, a plain line every tenth of the run elsewhere."""

    def __init__(self, out: OutputWrapper, duration: float) -> None:
        self.out = out
        self.duration = duration
        self.tty = out.isatty()
        self.shown_at = -math.inf
        self.tenths_shown = 0

    def show(self, elapsed: float, created: int, updated: int, *, last: bool = False) -> None:
        done = min(elapsed / self.duration, 1.0) if self.duration else 1.0
        rate = created / elapsed if elapsed > 0 else 0.0
        if self.tty:
            if elapsed - self.shown_at < TTY_REFRESH_S and not last:
                return
            self.shown_at = elapsed
            bar = "#" * round(done * 30)
            self.out.write(
                f"\r[{bar:<30}] {done:4.0%} {created} orders, {updated} updates, "
                f"{rate:.1f}/s, {max(self.duration - elapsed, 0):.0f} s left ",
                ending="",
            )
            self.out.flush()
        elif int(done * 10) > self.tenths_shown:
            self.tenths_shown = int(done * 10)
            self.out.write(f"{done:.0%}: {created} orders, {updated} updates, {rate:.1f}/s")

    def finish(self, elapsed: float, created: int, updated: int) -> None:
        """Draw the bar's final state and end its line (the summary follows)."""
        if self.tty:
            self.show(elapsed, created, updated, last=True)
            self.out.write("")


class Command(BaseCommand):
    help = (
        "Write realistic orders at about RATE per second for DURATION seconds, each saved "
        "on its own so the dashboards watching orders update; Ctrl-C stops early."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=float, default=50.0, help="orders per second (50)")
        parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (60)")
        parser.add_argument("--seed", type=int, help="random seed, for a repeatable run")
        parser.add_argument(
            "--backfill-minutes",
            type=int,
            default=0,
            metavar="M",
            help="first write M minutes of history at about RATE, in bulk (0)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rate, duration = options["rate"], options["duration"]
        backfill_minutes = options["backfill_minutes"]
        if not rate > 0:
            raise CommandError(f"--rate must be above 0, got {rate:g}")
        if duration < 0:
            raise CommandError(f"--duration must be 0 or more, got {duration:g}")
        if backfill_minutes < 0:
            raise CommandError(f"--backfill-minutes must be 0 or more, got {backfill_minutes}")
        self.backfilled = 0
        shop = Shop(random.Random(options["seed"]))  # noqa: S311 -- test data, not secrets
        if backfill_minutes:
            try:
                self.backfill(shop, rate, backfill_minutes)
            except KeyboardInterrupt:
                # Each batch is its own transaction: those written stay.
                newline = "\n" if self.stdout.isatty() else ""
                self.stdout.write(f"{newline}backfill interrupted after {self.backfilled} orders")
                return
            self.stdout.write(
                f"backfilled {self.backfilled} orders over {backfill_minutes} minutes"
            )
        if duration:
            self.run(shop, rate, duration)

    def backfill(self, shop: Shop, rate: float, minutes: int) -> None:
        """Write ``minutes`` of history before now, in bulk (no signals): about ``rate`` a
        second, in a slow wave so the charts have a shape. Counts into ``backfilled``."""
        now = timezone.now()
        tty = self.stdout.isatty()
        batch: list[Order] = []
        for minute in range(minutes, 0, -1):
            wave = 1 + 0.3 * math.sin(2 * math.pi * minute / 20)
            count = max(round(rate * 60 * wave * shop.rng.uniform(0.85, 1.15)), 0)
            start = now - dt.timedelta(minutes=minute)
            for offset in sorted(shop.rng.uniform(0, 60) for _ in range(count)):
                created_at = start + dt.timedelta(seconds=offset)
                batch.append(shop.order(created_at, shop.past_status(now - created_at)))
            if len(batch) >= BACKFILL_BATCH:
                self.backfilled += len(Order.objects.bulk_create(batch, batch_size=BACKFILL_BATCH))
                batch = []
            if tty:
                done = 1 - (minute - 1) / minutes
                self.stdout.write(f"\rbackfilling: {done:4.0%} {self.backfilled} orders", ending="")
                self.stdout.flush()
        if batch:
            self.backfilled += len(Order.objects.bulk_create(batch, batch_size=BACKFILL_BATCH))
        if tty:
            self.stdout.write("")  # end the progress line

    def run(self, shop: Shop, rate: float, duration: float) -> None:
        """Create orders at their due times (paced by the wall clock) and move earlier
        ones along; print progress and, however it ends, a summary."""
        pending: deque[Order] = deque(maxlen=TRACKED_ORDERS)
        paid: deque[Order] = deque(maxlen=TRACKED_ORDERS)
        progress = Progress(self.stdout, duration)
        created = updated = 0
        interrupted = False
        start = time.monotonic()
        try:
            while (due := created / rate) < duration:
                # Behind schedule (a slow database), no sleep: catch up.
                time.sleep(max(0.0, start + due - time.monotonic()))
                order = shop.order()
                order.save()
                pending.append(order)
                created += 1
                updated += self.move_along(shop, pending, paid)
                progress.show(time.monotonic() - start, created, updated)
            # The last order is due a little before the end: the run lasts its duration.
            time.sleep(max(0.0, start + duration - time.monotonic()))
        except KeyboardInterrupt:
            # Ctrl-C: what was written stays (each save commits on its own).
            interrupted = True
        elapsed = time.monotonic() - start
        progress.finish(elapsed, created, updated)
        self.stdout.write(
            f"wrote {created} orders and {updated} updates in {elapsed:.1f} s "
            f"({created / elapsed if elapsed > 0 else 0:.1f} orders/s)"
            + (", interrupted" if interrupted else "")
        )

    def move_along(self, shop: Shop, pending: deque[Order], paid: deque[Order]) -> int:
        """Pay, cancel or ship some earlier orders (each its own save); how many changed."""
        changes = 0
        draw = shop.rng.random()
        # The newest order stays pending for now: only older ones move.
        if len(pending) > 1 and draw < PAY_CHANCE + CANCEL_CHANCE:
            order = pending.popleft()
            order.status = Order.Status.PAID if draw < PAY_CHANCE else Order.Status.CANCELLED
            order.save(update_fields=["status", "updated_at"])
            if order.status == Order.Status.PAID:
                paid.append(order)
            changes += 1
        if paid and shop.rng.random() < SHIP_CHANCE:
            order = paid.popleft()
            order.status = Order.Status.SHIPPED
            order.save(update_fields=["status", "updated_at"])
            changes += 1
        return changes
