from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The demo domain: orders, their admin, the traffic generator and the dashboards."""

    name = "dashboard"
    verbose_name = "Demo shop"

    def ready(self) -> None:
        # Importing the module registers its dashboards with tasks.registry.
        from dashboard import dashboards  # noqa: F401
