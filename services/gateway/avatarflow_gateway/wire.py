"""Requests off the wire: bytes that do not parse become a value the handler rejects with
INVALID_ARGUMENT, instead of an error grpc raises before the handler runs (UNKNOWN, a
traceback in the log, and a Session call left open)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import api_pb2

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes are not a valid ``type_name`` (bad wire format, invalid UTF-8)."""

    type_name: str


def parser(message_type: type[M]) -> Callable[[bytes], M | Undecodable]:
    """``message_type.FromString`` that returns ``Undecodable`` rather than raising."""
    def parse(data: bytes) -> M | Undecodable:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return Undecodable(message_type.DESCRIPTOR.full_name)
    return parse


def checked(request: M | Undecodable) -> M:
    """The request, or InvalidInput when its bytes did not decode."""
    if isinstance(request, Undecodable):
        raise InvalidInput(f"the message could not be decoded as {request.type_name}: "
                           "send a serialised protobuf of that type (strings in UTF-8)")
    return request


def add_avatars_to_server(servicer: Any, server: grpc.aio.Server) -> None:
    """``api_pb2_grpc.add_AvatarsServicer_to_server`` with the tolerant parsers."""
    handlers = {
        "RegisterAvatar": grpc.unary_unary_rpc_method_handler(
            servicer.RegisterAvatar, request_deserializer=parser(api_pb2.RegisterAvatarRequest),
            response_serializer=api_pb2.RegisterAvatarResponse.SerializeToString),
        "Session": grpc.stream_stream_rpc_method_handler(
            servicer.Session, request_deserializer=parser(api_pb2.SessionRequest),
            response_serializer=api_pb2.SessionResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("avatarflow.v1.Avatars", handlers),))
