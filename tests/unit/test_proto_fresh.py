"""The committed protobuf modules match the .proto files (run `make proto` when this fails)."""

from avatarflow.dev import protogen


def test_generated_code_is_fresh() -> None:
    assert protogen.check() == [], "generated code is stale: run `make proto`"
