"""The dispatcher service: sends queued analyses to their external services."""

from dispatcher.service import QUEUE, Dispatcher, create_dispatcher, running_dispatcher

__all__ = ["QUEUE", "Dispatcher", "create_dispatcher", "running_dispatcher"]
