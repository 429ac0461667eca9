"""The demo domain: a shop's orders, which the demo dashboards watch."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone


class Order(models.Model):
    """One order: what it is worth, where it comes from and how far it has got."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        SHIPPED = "shipped", "Shipped"
        CANCELLED = "cancelled", "Cancelled"

    class Region(models.TextChoices):
        # The dashboards list regions in this order.
        EU = "EU", "Europe"
        NA = "NA", "North America"
        LATAM = "LATAM", "Latin America"
        APAC = "APAC", "Asia-Pacific"
        MEA = "MEA", "Middle East & Africa"

    amount = models.DecimalField(
        max_digits=10, decimal_places=2, validators=[MinValueValidator(Decimal("0.00"))]
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    region = models.CharField(max_length=5, choices=Region.choices)
    customer = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["created_at", "status"], name="order_created_status")]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.customer}, {self.amount}, {self.status})"
