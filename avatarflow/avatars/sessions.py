"""The stage base of the renderer and the refiner: a session's state is its analysed avatar.

Only the avatar's store key is saved with a session; another replica looks the avatar up in its
own store (backed by the shared registry in a cluster) and warms its engine for it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from avatarflow.avatars.store import Avatar, AvatarStore, avatar_key
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import NotFound
from avatarflow.runtime import state
from avatarflow.runtime.stage import Stage

F = TypeVar("F", bound=m.Message)


class AvatarEngine(Protocol):
    """What an avatar stage's engine offers beside its frames."""

    def warm(self, avatar: Avatar) -> None:
        """Does the avatar's session-constant work now, so its first frame is as fast as the
        rest."""
        ...


class AvatarStage(Stage[Avatar, F]):
    """Sessions keyed to analysed avatars in ``store``; frames past their deadline may go."""

    drops_late = True
    engine: AvatarEngine

    def __init__(self, store: AvatarStore | None = None) -> None:
        super().__init__()
        self.store = store if store is not None else AvatarStore()

    def stored_avatar(self, msg: m.SessionStart, advice: str) -> Avatar:
        """The avatar ``msg`` names, analysed for its format; NotFound with ``advice``."""
        avatar_id = msg.avatar_id or msg.session_id
        try:
            return self.store.get(avatar_key(avatar_id, msg.mode, msg.width, msg.height))
        except NotFound:
            raise NotFound(f"avatar {avatar_id!r} has not been analysed for {msg.mode} "
                           f"{msg.width}x{msg.height}: {advice}") from None

    def state_changed_by(self, msg: m.Message) -> bool:
        return isinstance(msg, m.SessionStart)  # frames leave the avatar as it is

    def dump_session(self, session: Avatar) -> bytes:
        return state.dumps(session.key)

    def load_session(self, data: bytes) -> Avatar:
        key = state.loads(data)
        if not isinstance(key, str):
            raise state.StateError(f"session state is a {type(key).__name__}, not an avatar key")
        avatar = self.store.get(key)
        self.engine.warm(avatar)
        return avatar
