from django.contrib import admin

from dashboard.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "customer", "region", "status", "amount", "updated_at"]
    list_filter = ["status", "region"]
    date_hierarchy = "created_at"
    search_fields = ["customer"]
    list_per_page = 50
