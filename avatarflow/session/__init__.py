"""The session front: live sessions (audio clock, stall filling, barge-in, frames with their
audio, summaries, the avatar path) over any bus, for the gateway and the embedded pipeline."""

from avatarflow.session.events import Ended, Event, Frame, Gap, Latency, Started
from avatarflow.session.front import SessionFront
from avatarflow.session.live import LiveSession
from avatarflow.session.portraits import AvatarPath, LocalPortraits, Portraits
from avatarflow.session.spec import FrontSettings, SessionSpec

__all__ = ["AvatarPath", "Ended", "Event", "Frame", "FrontSettings", "Gap", "Latency",
           "LiveSession", "LocalPortraits", "Portraits", "SessionFront", "SessionSpec",
           "Started"]
