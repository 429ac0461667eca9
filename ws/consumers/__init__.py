"""Thin consumers: authenticate, authorize, subscribe, relay what the layer delivers.

The seed route's consumer is ``ws.seed.SeedRoomConsumer``.
"""

from ws.consumers.base import NotFoundConsumer, PushConsumer
from ws.consumers.multiplex import MultiplexConsumer

__all__ = ["MultiplexConsumer", "NotFoundConsumer", "PushConsumer"]
