"""Avatar ids carry their tenant: the same image gives each tenant its own id, and whose an
id is follows from the id alone (before any lookup)."""

from __future__ import annotations

import pytest
import yaml

from avatarflow.contracts.errors import InvalidInput, PermissionDenied
from avatarflow.session.portraits import (
    AVATAR_ID,
    NO_TENANT_TAG,
    avatar_id_for,
    check_owner,
    tenant_tag,
)
from avatarflow_gateway.keys import KeyTable, Quotas, hash_key

IMAGE = b"\x89PNG the same portrait bytes"


def test_the_same_image_gets_one_id_per_tenant_in_the_public_format() -> None:
    ids = {t: avatar_id_for(IMAGE, t) for t in ("", "acme", "beta")}
    assert len(set(ids.values())) == 3
    assert all(AVATAR_ID.fullmatch(i) for i in ids.values())
    assert ids == {t: avatar_id_for(IMAGE, t) for t in ids}  # stable
    assert ids["acme"][3:11] == tenant_tag("acme") and ids[""][3:11] == NO_TENANT_TAG
    assert avatar_id_for(IMAGE) == ids[""]  # no tenant: a gateway without keys, embedded
    assert avatar_id_for(IMAGE + b"!", "acme") != ids["acme"]


def test_only_the_owner_may_use_an_id() -> None:
    mine = avatar_id_for(IMAGE, "acme")
    check_owner(mine, "acme")
    for other in ("beta", ""):
        with pytest.raises(PermissionDenied, match="was not issued to this tenant"):
            check_owner(mine, other)
    made_up = "av-" + tenant_tag("beta") + "0" * 24  # beta's tag: beta's to try (NOT_FOUND)
    check_owner(made_up, "beta")
    check_owner("av-" + "0" * 32, "")
    with pytest.raises(PermissionDenied):
        check_owner("av-" + "0" * 32, "acme")


def test_tenants_whose_tags_collide_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from avatarflow_gateway import keys

    monkeypatch.setattr(keys, "tenant_tag", lambda name: "abcd0123")
    doc = yaml.safe_dump({"tenants": {"a": {"keys": [hash_key("1")]},
                                      "b": {"keys": [hash_key("2")]}}})
    with pytest.raises(InvalidInput, match="avatar id tag abcd0123 is the same as 'a'"):
        KeyTable.parse(doc, Quotas(1, 1, 1.0))
    monkeypatch.setattr(keys, "tenant_tag", lambda name: NO_TENANT_TAG)
    with pytest.raises(InvalidInput, match="same as '\\(no tenant\\)'"):
        KeyTable.parse(yaml.safe_dump({"tenants": {"a": {"keys": [hash_key("1")]}}}),
                       Quotas(1, 1, 1.0))
