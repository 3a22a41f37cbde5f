"""The API keys file: hashed keys per tenant, quotas with defaults, mistakes named, and the
file re-read when its content changes without ever dropping the keys in force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.settings import Settings
from avatarflow_gateway.auth import KeyFile, load_keys
from avatarflow_gateway.keys import KEY_PREFIX, KeyTable, Quotas, hash_key, new_key

DEFAULTS = Quotas(max_sessions=16, max_avatars=1000, register_per_minute=60.0)


def _text(tenants: dict) -> str:
    return yaml.safe_dump({"tenants": tenants})


def test_a_key_finds_its_tenant_and_nothing_else_does() -> None:
    a1, a2, b = new_key(), new_key(), new_key()
    table = KeyTable.parse(_text({"acme": {"keys": [hash_key(a1), hash_key(a2)],
                                           "max_sessions": 2},
                                  "beta": {"keys": [hash_key(b)], "register_per_minute": 5}}),
                           DEFAULTS)
    acme = table.tenant_for(a1)
    assert acme is not None and acme == table.tenant_for(a2)  # rotation: two keys at once
    assert acme.name == "acme" and acme.quotas == Quotas(2, 1000, 60.0)
    beta = table.tenant_for(b)
    assert beta is not None and beta.quotas == Quotas(16, 1000, 5.0)
    assert table.tenant_for(new_key()) is None and table.tenant_for("") is None
    assert table.tenant_for(hash_key(a1)) is None  # the stored hash is not a key


def test_keys_are_random_tokens_stored_as_sha256() -> None:
    key = new_key()
    assert key.startswith(KEY_PREFIX) and len(key) > 40 and key != new_key()
    assert hash_key("abc") == ("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f"
                               "20015ad")


@pytest.mark.parametrize("doc,words", [
    ("tenants: [", "not valid YAML"),
    ("- a\n- b", "expected a mapping"),
    (_text({"acme": {"keys": ["afk_plaintextkey"]}}), "never the keys themselves"),
    (_text({"acme": {"keys": []}}), "one or more key hashes"),
    (_text({"acme": {"keys": [hash_key("k")], "max_session": 3}}), "unknown field(s) max_session"),
    (_text({"acme": {"keys": [hash_key("k")], "max_sessions": 0}}), "max_sessions must be"),
    (_text({"acme": {"keys": [hash_key("k")], "max_avatars": 1.5}}), "positive whole number"),
    (_text({"bad name": {"keys": [hash_key("k")]}}), "a tenant name is"),
    (_text({"a": {"keys": [hash_key("k")]}, "b": {"keys": [hash_key("k")]}}), "listed twice"),
])
def test_mistakes_are_named(doc: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        KeyTable.parse(doc, DEFAULTS, "keys.yaml")
    assert info.value.message.startswith("keys.yaml")


def test_an_empty_file_has_no_tenants() -> None:
    table = KeyTable.parse("tenants:\n", DEFAULTS)
    assert not table.tenants and table.tenant_for(new_key()) is None


def _write(path: Path, text: str) -> None:
    """As Kubernetes updates a Secret volume: a new file swapped in under the same path."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_the_file_is_reread_when_it_changes_and_a_bad_version_keeps_the_old_keys(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old, new = new_key(), new_key()
    path = tmp_path / "keys.yaml"
    _write(path, _text({"acme": {"keys": [hash_key(old)]}}))
    keys = KeyFile(str(path), DEFAULTS)
    assert keys.refresh() is False  # unchanged
    _write(path, _text({"acme": {"keys": [hash_key(old), hash_key(new)]}}))
    assert keys.refresh() is True
    assert keys.table.tenant_for(old) is not None and keys.table.tenant_for(new) is not None
    _write(path, "tenants: {acme: {keys: [" + new + "]")  # a key pasted in, and broken
    assert keys.refresh() is False and keys.refresh() is False  # the keys in force stay
    assert keys.table.tenant_for(new) is not None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "not valid YAML (line 1" in errors[0]  # once per version
    assert new not in caplog.text  # never logged
    path.unlink()
    assert keys.refresh() is False and keys.table.tenant_for(new) is not None
    _write(path, _text({"acme": {"keys": [hash_key(new)]}}))
    assert keys.refresh() is True
    assert keys.table.tenant_for(old) is None and keys.table.tenant_for(new) is not None


def test_keys_are_required_unless_switched_off(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="AVATARFLOW_API_KEYS_FILE.*AVATARFLOW_AUTH=off"):
        load_keys(Settings.load("gateway", environ={}))
    assert load_keys(Settings.load("gateway", environ={"AVATARFLOW_AUTH": "off"})) is None
    with pytest.raises(InvalidInput, match="cannot read the API keys file"):
        load_keys(Settings.load("gateway", environ={},
                                api_keys_file=str(tmp_path / "missing.yaml")))
    path = tmp_path / "keys.yaml"
    path.write_text(_text({"acme": {"keys": [hash_key("k")]}}))
    keys = load_keys(Settings.load("gateway", environ={"AVATARFLOW_TENANT_MAX_AVATARS": "7"},
                                   api_keys_file=str(path)))
    assert keys is not None
    tenant = keys.table.tenant_for("k")
    assert tenant is not None and tenant.quotas is not None and tenant.quotas.max_avatars == 7
