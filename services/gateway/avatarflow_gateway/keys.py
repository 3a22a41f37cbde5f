"""The API keys file: tenants, the SHA-256 hashes of their keys and their quotas.

```yaml
tenants:
  acme:
    keys:                      # two keys while one is rotated out
      - sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    max_sessions: 8            # optional; default AVATARFLOW_TENANT_MAX_SESSIONS
    max_avatars: 500           # optional; default AVATARFLOW_TENANT_MAX_AVATARS
    register_per_minute: 30    # optional; default AVATARFLOW_REGISTER_PER_MINUTE
```

Keys are random 256-bit tokens (``avatarflow keys new``), so a plain SHA-256 is a safe way to
keep them at rest: nobody can invert it, and there is nothing for a slow hash to protect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import yaml

from avatarflow.contracts.errors import InvalidInput
from avatarflow.session.portraits import NO_TENANT_TAG, tenant_tag

KEY_PREFIX = "afk_"
HASH = re.compile(r"sha256:[0-9a-f]{64}")
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
TENANT_FORMAT = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
QUOTA_FIELDS = {"max_sessions": int, "max_avatars": int, "register_per_minute": float}


@dataclass(frozen=True)
class Quotas:
    """What one tenant may hold at once across the cluster, and its registration rate."""

    max_sessions: int
    max_avatars: int
    register_per_minute: float


@dataclass(frozen=True)
class Tenant:
    """A caller. ``quotas`` None: no per-tenant limits (the tenant "" of a gateway without
    keys; only the gateway-wide session limit applies)."""

    name: str
    quotas: Quotas | None = None


NO_TENANT = Tenant("")


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe, recognisable by its prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """How a key is stored: ``sha256:<hex>`` of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class KeyTable:
    """Tenants by the hash of their keys."""

    def __init__(self, tenants: dict[str, Tenant], owners: dict[str, str]) -> None:
        self.tenants = tenants  # by name
        self._owners = [(digest.encode(), name) for digest, name in owners.items()]

    def __len__(self) -> int:
        return len(self._owners)

    def tenant_for(self, key: str) -> Tenant | None:
        """The tenant holding ``key``; None when no tenant does.

        Every stored hash is compared in constant time, without stopping at a match, so the
        time taken says nothing about which keys exist (about 0.1 ms per thousand keys, once
        per call, never per frame).
        """
        digest = hash_key(key).encode()
        found = None
        for stored, name in self._owners:
            if hmac.compare_digest(stored, digest):
                found = name
        return None if found is None else self.tenants[found]

    @classmethod
    def parse(cls, text: str | bytes, defaults: Quotas, source: str = "keys file") -> KeyTable:
        """Reads a keys file; InvalidInput naming the file and what is wrong in it."""
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # where, and what, but never the text (it may hold a key)
            mark = getattr(exc, "problem_mark", None)
            at = f"line {mark.line + 1}: " if mark is not None else ""
            raise InvalidInput(f"{source}: not valid YAML ({at}"
                               f"{getattr(exc, 'problem', None) or 'unreadable'})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tenants"), dict | None):
            raise InvalidInput(f"{source}: expected a mapping with 'tenants: {{name: {{keys: "
                               "[sha256:...]}}}}'")
        tenants: dict[str, Tenant] = {}
        owners: dict[str, str] = {}
        tags = {NO_TENANT_TAG: "(no tenant)"}
        for name, entry in (doc.get("tenants") or {}).items():
            where = f"{source}: tenant {name!r}"
            if not isinstance(name, str) or not TENANT.fullmatch(name):
                raise InvalidInput(f"{where}: a tenant name is {TENANT_FORMAT}")
            tag = tenant_tag(name)
            if tag in tags:  # avatar ids would not tell the two apart
                raise InvalidInput(f"{where}: its avatar id tag {tag} is the same as "
                                   f"{tags[tag]!r}'s; rename one of them")
            tags[tag] = name
            tenants[name] = Tenant(name, _quotas(where, entry, defaults))
            for digest in entry["keys"]:
                if digest in owners:
                    raise InvalidInput(f"{where}: a key hash is listed twice (also for "
                                       f"{owners[digest]!r}); a key belongs to one tenant")
                owners[digest] = name
        return cls(tenants, owners)


def _quotas(where: str, entry: Any, defaults: Quotas) -> Quotas:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where}: expected a mapping with 'keys' and optional quotas")
    unknown = set(entry) - {"keys", *QUOTA_FIELDS}
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                           f"known: keys, {', '.join(QUOTA_FIELDS)}")
    keys = entry.get("keys")
    if not isinstance(keys, list) or not keys or not all(
            isinstance(k, str) and HASH.fullmatch(k) for k in keys):
        raise InvalidInput(f"{where}: 'keys' must list one or more key hashes "
                           "'sha256:<64 lowercase hex>' (from `avatarflow keys new` or "
                           "`avatarflow keys hash`), never the keys themselves")
    values: dict[str, Any] = {}
    for field, kind in QUOTA_FIELDS.items():
        value = entry.get(field, getattr(defaults, field))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (
                kind is int and value != int(value)):
            raise InvalidInput(f"{where}: {field} must be a positive "
                               f"{'whole ' if kind is int else ''}number, got {value!r}")
        values[field] = kind(value)
    return Quotas(**values)
