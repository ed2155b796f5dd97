"""Message bus: interface, in-process implementation, RabbitMQ implementation."""

from typing import Any

from shared.bus.base import Bus, BusUnavailable, Envelope, MessageHandler

__all__ = ["Bus", "BusUnavailable", "Envelope", "MessageHandler", "create_bus"]


def create_bus(amqp_url: str, **options: Any) -> Bus:
    """``memory://`` gives the in-process bus; ``amqp://``/``amqps://`` the RabbitMQ bus.

    ``options`` go to the implementation (e.g. ``delivery_limit``, ``prefix`` for RabbitMQ).
    """
    if amqp_url.startswith("memory://"):
        from shared.bus.memory import MemoryBus

        return MemoryBus(**options)
    from shared.bus.rabbit import RabbitBus

    return RabbitBus(amqp_url, **options)
