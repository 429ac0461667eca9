"""Thin consumers: authenticate, authorize, subscribe, relay what the layer delivers."""

from ws.consumers.base import NotFoundConsumer, PushConsumer
from ws.consumers.multiplex import MultiplexConsumer
from ws.consumers.seed import SeedRoomConsumer

__all__ = ["MultiplexConsumer", "NotFoundConsumer", "PushConsumer", "SeedRoomConsumer"]
