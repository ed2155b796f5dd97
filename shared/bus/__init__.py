"""Message bus: interface, in-process implementation, RabbitMQ implementation."""

from shared.bus.base import Bus, Envelope, MessageHandler

__all__ = ["Bus", "Envelope", "MessageHandler", "create_bus"]


def create_bus(amqp_url: str) -> Bus:
    if amqp_url.startswith("memory://"):
        from shared.bus.memory import MemoryBus

        return MemoryBus()
    from shared.bus.rabbit import RabbitBus  # type: ignore[import-not-found]

    return RabbitBus(amqp_url)
