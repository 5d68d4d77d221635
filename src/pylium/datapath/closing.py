"""`Closing`: what every datapath handle (an fd, a loaded object, a ring buffer) shares as a
context manager: `with` closes it on the way out, also on an error."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """A handle that releases its kernel resources in `close` (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the handle holds; calling it again does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
