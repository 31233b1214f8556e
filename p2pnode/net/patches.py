"""Library attributes replaced only while some holder needs them, and restored after the last."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from p2pnode.net.guards import check_libp2p_version


class Patch:
    """One attribute of a py-libp2p module or class, replaced by `replacement` while any number
    of holders (peers in this process) hold the patch; the library's own is back when the last
    one leaves. Checks the library's version and that the attribute exists before replacing."""

    def __init__(self, owner: Any, name: str, replacement: Any) -> None:
        self._owner = owner
        self._name = name
        self._replacement = replacement
        self._lock = threading.Lock()
        self._holders = 0
        self._original: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        check_libp2p_version()
        if self._name not in vars(self._owner):
            raise RuntimeError(f"py-libp2p has no {self._name} in {self._owner!r}: review it")
        with self._lock:
            if self._holders == 0:
                self._original = vars(self._owner)[self._name]
                setattr(self._owner, self._name, self._replacement)
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    setattr(self._owner, self._name, self._original)
