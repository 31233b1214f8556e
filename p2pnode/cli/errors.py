"""The failures a user can cause (flags, config, keys, addresses, an absent peer)."""

from __future__ import annotations

from p2pnode.chain.genesis import GenesisError
from p2pnode.client import ClientError
from p2pnode.home import HomeError
from p2pnode.net import NetError
from p2pnode.settings import SettingsError
from p2pnode.store import StoreError


class UsageError(Exception):
    """A flag's value cannot be used."""


USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError,
    HomeError,
    SettingsError,
    GenesisError,
    ClientError,
    StoreError,
    NetError,
)
