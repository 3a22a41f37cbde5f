"""The avatar path: a portrait stored once in the avatar registry, analysed once per output
format by whoever can (the renderer), the analysis leased for as long as it is used.

``Portraits`` is the analysis: in a cluster the renderer's gRPC ``Portraits.Prepare``, in one
process the renderer stage itself (``LocalPortraits``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Protocol

from avatarflow.avatars.registry import AvatarRegistry, image_key
from avatarflow.avatars.store import Avatar, AvatarStore, avatar_key
from avatarflow.contracts.errors import InvalidInput, NotFound, PermissionDenied, shown
from avatarflow.contracts.images import decode_image
from avatarflow.contracts.v1 import api_pb2


class Portraits(Protocol):
    """Analyses the portrait registered under ``avatar_id`` for ``output``, storing the
    result where the renderer and refiner find it. Raises AvatarflowError."""

    async def prepare(self, avatar_id: str, output: api_pb2.OutputFormat) -> None: ...


class Analyser(Protocol):
    """What ``LocalPortraits`` needs of the renderer stage."""

    store: AvatarStore

    def prepare_avatar(self, image: bytes, avatar_id: str, mode: str, width: int,
                       height: int) -> Avatar: ...


AVATAR_ID_FORMAT = '"av-" and 32 lowercase hex digits'
AVATAR_ID = re.compile(r"av-[0-9a-f]{32}")
# Avatar ids carry their tenant: "av-" + an 8-hex tag of the tenant + 24 hex of a hash of
# (tenant, image). Who may use an id is decided from the id alone, before any lookup, so the
# answer never reveals whether another tenant's avatar exists. The tenant "" (a gateway without
# API keys, the embedded pipeline) has the fixed tag below.
NO_TENANT_TAG = "00000000"


def tenant_tag(tenant: str) -> str:
    """The 8 hex digits that start the avatar ids of ``tenant``."""
    if not tenant:
        return NO_TENANT_TAG
    return hashlib.sha256(b"avatarflow-tenant\0" + tenant.encode()).hexdigest()[:8]


def avatar_id_for(image: bytes, tenant: str = "") -> str:
    """The id names the portrait and its tenant, whatever the format: the same upload by the
    same tenant, the same id; by another tenant, another id (and another stored copy)."""
    digest = hashlib.sha256(tenant.encode() + b"\0" + image).hexdigest()
    return "av-" + tenant_tag(tenant) + digest[:24]


def check_avatar_id(avatar_id: str) -> None:
    """InvalidInput unless ``avatar_id`` has the form RegisterAvatar gives: the public API
    checks it before any lookup, so no store key is made from a caller's arbitrary string."""
    if not AVATAR_ID.fullmatch(avatar_id):
        raise InvalidInput(f"malformed avatar id {shown(avatar_id)}: an avatar id is "
                           f"{AVATAR_ID_FORMAT}, as RegisterAvatar returns it")


def check_owner(avatar_id: str, tenant: str) -> None:
    """PermissionDenied unless ``avatar_id`` was issued to ``tenant``; from the id alone, so
    it says nothing about whether the avatar exists. An id not of the public format carries
    no tag (only code inside the process makes one): it is the tenant ""'s."""
    tag = avatar_id[3:11] if AVATAR_ID.fullmatch(avatar_id) else NO_TENANT_TAG
    if tag != tenant_tag(tenant):
        raise PermissionDenied(f"avatar id {shown(avatar_id)} was not issued to this tenant: "
                               "use an id that RegisterAvatar returned for your API key")


class AvatarPath:
    """Registers portraits and makes sure an avatar is analysed before a session uses it."""

    def __init__(self, registry: AvatarRegistry, portraits: Portraits) -> None:
        self.registry, self.portraits = registry, portraits
        self._preparing: dict[str, asyncio.Future[None]] = {}

    async def ensure(self, image: bytes, avatar_id: str, output: api_pb2.OutputFormat,
                     tenant: str = "") -> str:
        """Stores an uploaded ``image`` (else uses the registered ``avatar_id``) and has it
        analysed for ``output`` unless that analysis is leased already. Returns the id."""
        if image:
            await asyncio.to_thread(decode_image, image)  # a clear error before anything else
            avatar_id = avatar_id_for(image, tenant)
            await asyncio.to_thread(self.registry.save_image, avatar_id, image)
        else:
            check_owner(avatar_id, tenant)  # before any lookup
        key = avatar_key(avatar_id, output.mode, output.width, output.height)
        if await asyncio.to_thread(self.registry.touch, key):
            return avatar_id  # analysed before; its lease is renewed
        if not await asyncio.to_thread(self.registry.touch, image_key(avatar_id)):
            raise NotFound(f"unknown avatar id {shown(avatar_id)}: register the portrait with "
                           "RegisterAvatar (registrations expire after "
                           f"{self.registry.ttl_s:g} s unused)")
        # Sessions that ask for the same new analysis at once share one call.
        if key not in self._preparing:
            self._preparing[key] = asyncio.ensure_future(self.portraits.prepare(avatar_id,
                                                                                output))
            self._preparing[key].add_done_callback(lambda _: self._preparing.pop(key, None))
        await asyncio.shield(self._preparing[key])
        return avatar_id


class LocalPortraits:
    """The analysis in one process: the renderer stage's own, in a worker thread, one at a
    time, skipped when its store already holds the avatar for that format."""

    def __init__(self, renderer: Analyser, registry: AvatarRegistry) -> None:
        self.renderer, self.registry = renderer, registry
        self._lock = asyncio.Lock()

    async def prepare(self, avatar_id: str, output: api_pb2.OutputFormat) -> None:
        key = avatar_key(avatar_id, output.mode, output.width, output.height)
        if key in self.renderer.store:
            return
        image = await asyncio.to_thread(self.registry.load_image, avatar_id)
        if image is None:
            raise NotFound(f"unknown avatar id {shown(avatar_id)} (expired or never registered)")
        async with self._lock:
            await asyncio.to_thread(self.renderer.prepare_avatar, image, avatar_id, output.mode,
                                    output.width, output.height)
