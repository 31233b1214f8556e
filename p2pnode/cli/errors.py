"""The failures a user can cause (flags, config, keys, addresses, an absent peer)."""

from __future__ import annotations

from p2pnode.api.client import ClientError
from p2pnode.chain.genesis import GenesisError
from p2pnode.net import NetError
from p2pnode.peer.home import HomeError
from p2pnode.peer.node import NodeError
from p2pnode.peer.settings import SettingsError
from p2pnode.peer.writer import StoreError


class UsageError(Exception):
    """A flag's value cannot be used."""


def user_message(err: BaseException) -> str | None:
    """The one line to show for a failure the user can fix, or None for a bug.

    trio wraps an error raised inside a nursery in an ExceptionGroup; its leaves decide.
    """
    if isinstance(err, USER_ERRORS):
        return str(err)
    if isinstance(err, BaseExceptionGroup):
        for leaf in err.exceptions:
            message = user_message(leaf)
            if message is not None:
                return message
    return None


USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    HomeError,
    SettingsError,
    GenesisError,
    ClientError,
    StoreError,
    NetError,
    NodeError,
)
