from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Celery tasks and schedules that push updates."""

    name = "tasks"
    verbose_name = "Push tasks"

    def ready(self) -> None:
        from ws import topics

        # Dashboards, state-like: a new subscriber gets the latest figures at once. Before
        # any dashboard is registered (tasks.clock's, tasks.system's, the demo's): they
        # name their topics.
        topics.register(
            "dashboard",
            subscribe=topics.has_perm("ws.view_dashboard"),
            state_like=True,
            describe="a dashboard",
        )
        from tasks import clock, signals, system  # noqa: F401 - clock, system: dashboards

        signals.connect()
