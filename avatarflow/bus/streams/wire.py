"""How a message lies in a stream entry: ``k`` its tier code, ``t`` the turn (barge-in
generation) it belongs to, ``p`` the wall clock when it was published, ``m`` the encoded
envelope. The COMMIT script in ``avatarflow.bus.keys`` writes the same four fields."""

from __future__ import annotations

import time

from redis.typing import EncodableT, FieldT

from avatarflow.contracts import codec
from avatarflow.contracts import messages as m

# An entry as read: its id, and its fields (None when the entry was trimmed while pending).
Entry = tuple[bytes, dict[bytes, bytes] | None]

_TIER_CODE = {m.Tier.URGENT: b"U", m.Tier.ORDERED: b"O", m.Tier.DATA: b"D"}


def tier_code(msg: m.Message) -> bytes:
    """``S`` for a SessionStart (the COMMIT script announces the session on it), else the
    message's tier: ``U`` urgent, ``O`` ordered, ``D`` data."""
    return b"S" if isinstance(msg, m.SessionStart) else _TIER_CODE[msg.tier]


def fields(msg: m.Message, turn: int, *, raw_pictures: bool) -> dict[FieldT, EncodableT]:
    """The fields of a new entry for ``msg``."""
    data = codec.encode(msg, raw_pictures=raw_pictures)
    return {b"k": tier_code(msg), b"t": str(turn).encode(), b"p": repr(time.time()).encode(),
            b"m": data}


def stale(entry_fields: dict[bytes, bytes] | None, turn: int) -> bool:
    """Whether an entry is data of a turn older than ``turn`` (an interrupt dropped it)."""
    return (entry_fields is not None and entry_fields.get(b"k") == b"D"
            and int(entry_fields[b"t"]) < turn)
