"""The bus: the only thing that differs between embedded and distributed mode."""

from __future__ import annotations

from abc import ABC, abstractmethod

from avatarflow import messages as m


class Bus(ABC):
    """Topics of messages. Each consumer group of a topic receives every message once;
    within a session, urgent control overtakes queued data, and an interrupt drops the data
    still queued for that session."""

    @abstractmethod
    async def publish(self, topic: str, msg: m.Message) -> None:
        """Appends a message; may wait when the topic is full (back-pressure)."""

    @abstractmethod
    async def receive(self, topic: str, group: str) -> m.Message:
        """Takes the next message for ``group``, urgent control first."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Releases connections and wakes waiting consumers."""
