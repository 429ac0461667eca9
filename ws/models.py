"""The transport's permissions. No table: the model only carries them."""

from django.db import models


class TopicAccess(models.Model):
    """Permissions that topic rules ask for (grant them in the admin, per user or group)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can subscribe to dashboards that are not public"),
            ("publish_broadcast", "Can publish to the broadcast topic from a socket"),
        ]

    def __str__(self) -> str:
        return "topic access"
