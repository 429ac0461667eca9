from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Celery tasks and schedules that push updates."""

    name = "tasks"
    verbose_name = "Push tasks"

    def ready(self) -> None:
        from ws import topics

        # Dashboards, state-like: a new subscriber gets the latest figures at once. Before
        # any dashboard is registered (tasks.system's, the demo's): they name their topics.
        topics.register(
            "dashboard",
            subscribe=topics.has_perm("ws.view_dashboard"),
            state_like=True,
            describe="a dashboard",
        )
        from tasks import signals, system  # noqa: F401 - system registers its dashboard
        from tasks.tasks import CLOCK_TOPIC

        signals.connect()
        # The server clock is no secret: every page may show it.
        topics.declare(CLOCK_TOPIC, subscribe=topics.anyone)
