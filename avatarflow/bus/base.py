"""The bus: the only thing that differs between embedded and distributed mode.

A stage runner takes a ``Delivery`` from its input topic, runs the stage, and ``commit``s the
outputs to its output topic together with the session's state. The in-memory bus just passes
the outputs on; the Redis bus publishes them, acknowledges the input and saves the state in one
atomic step, so another replica can continue the session after a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from avatarflow.contracts import messages as m


@dataclass(slots=True)
class Delivery:
    """One message handed to a consumer, with what the bus needs to acknowledge it."""

    msg: m.Message
    topic: str
    group: str
    entry_id: str = ""  # position in the stream; empty on the in-memory bus
    stream: str = ""  # the stream it came from (data or control); empty in memory
    turn: int = 0  # barge-in generation the message belongs to
    restore: bytes | None = None  # state to restore first: the session was taken over
    published_at: float = 0.0  # wall clock when the producer published it; 0 = unknown
    size: int = 0  # bytes on the wire; 0 in memory


@dataclass(slots=True)
class Commit:
    """What processing one delivery produced, to be committed with it."""

    delivery: Delivery
    outputs: Sequence[m.Message]
    state: bytes | None = None
    ended: bool = False
    encoded: list[bytes] | None = None  # ``outputs`` encoded by ``Bus.prepare``


class Bus(ABC):
    """Topics of messages. Each consumer group of a topic receives every message once;
    within a session, urgent control overtakes queued data, and an interrupt drops the data
    still queued for that session."""

    # Whether the runner should hand the session state to ``commit`` (the Redis bus keeps it
    # so another replica can take over; in one process there is nobody to take over).
    keeps_state = False

    @abstractmethod
    async def publish(self, topic: str, msg: m.Message, *, turn: int = 0) -> None:
        """Appends a message from outside the pipeline (the session's source)."""

    @abstractmethod
    async def receive(self, topic: str, group: str) -> Delivery:
        """Takes the next message for ``group``, urgent control first."""

    @abstractmethod
    async def commit(self, delivery: Delivery, topic: str | None,
                     outputs: Sequence[m.Message], state: bytes | None = None,
                     *, ended: bool = False) -> bool:
        """Publishes what processing ``delivery`` produced and acknowledges it; ``ended``
        says the session is over for this consumer. False if the session is no longer this
        consumer's (another replica took it over): the caller forgets it."""

    async def receive_batch(self, topic: str, group: str, limit: int) -> list[Delivery]:
        """At least one message, plus up to ``limit - 1`` more that are already waiting."""
        return [await self.receive(topic, group)]

    def prepare(self, outputs: Sequence[m.Message]) -> list[bytes] | None:
        """Encodes outputs for the wire; called from the worker thread, so the event loop
        does not spend time on it. None when the bus passes objects."""
        return None

    async def commit_many(self, topic: str | None, commits: Sequence[Commit]) -> list[bool]:
        """``commit`` for each, in order (the Redis bus does it in one round trip)."""
        return [await self.commit(c.delivery, topic, c.outputs, c.state, ended=c.ended)
                for c in commits]

    def newer_waiting(self, delivery: Delivery) -> bool:
        """Whether a later data message of the delivery's session is already waiting here
        for the same group (so skipping this one loses the session no continuity)."""
        return False

    def backlog(self, topic: str, group: str) -> int:
        """Messages of ``topic`` that ``group`` has received here and not yet taken."""
        return 0

    def session_count(self, topic: str, group: str) -> int:
        """Sessions of ``topic`` this consumer owns (0 where the bus does not track owners)."""
        return 0

    def lost_sessions(self) -> list[str]:
        """Sessions another replica took from this consumer since the last call, found out
        without a commit failing (the Redis bus, once a lapsed lease is renewed)."""
        return []

    # -- a session's source (the session front) --------------------------------------------

    def attach(self, sid: str, topic: str) -> None:  # noqa: B027 - memory: nothing to track
        """Starts reading ``topic`` of a session this process opened (its final frames)."""

    def detach(self, sid: str, topic: str) -> None:  # noqa: B027 - memory: nothing to track
        """Stops reading ``topic`` of a session this process opened."""

    async def end_session(self, sid: str) -> None:  # noqa: B027 - memory: nothing is left
        """Deletes what is left of a session at its source once it is over."""

    # -- lifecycle --------------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:  # noqa: B027 - memory: always ready
        """Returns once the bus can carry messages; raises Unavailable after ``timeout``."""

    async def release(self) -> None:  # noqa: B027 - memory: nobody to hand sessions to
        """Stops taking work and hands this consumer's sessions to the others at once."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Releases connections and wakes waiting consumers."""
