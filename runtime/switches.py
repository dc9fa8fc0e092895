"""The environment switches the runtime reads, in one place and without torch.

`HERD_KERNELS`, `HERD_ATTENTION` and `HERD_FUSE_PROJECTIONS` are read where they act, in
the middle of a model's forward pass; `herd run`, `generate` and `chat` check them all
before anything runs (`check_all`), so a misspelt value is refused at once, not after
the data stages, when the first model is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from herdlang.errors import UserError


class SwitchError(UserError, ValueError):
    """A switch set to a value it does not take (a setup problem, not a bug)."""


@dataclass(frozen=True)
class Switch:
    name: str
    choices: tuple[str, ...]  # the first is the default
    hint: str

    def read(self, error: type[UserError] = SwitchError) -> str:
        """The validated value (the default when unset or empty); anything else is a
        one-line `error` naming the choices."""
        value = os.environ.get(self.name, "").strip().lower() or self.choices[0]
        if value not in self.choices:
            raise error(f"{self.name}={os.environ[self.name]!r} is not one of {', '.join(self.choices)}; "
                        f"hint: {self.hint}")
        return value


KERNELS = Switch("HERD_KERNELS", ("auto", "triton", "reference"),
                 "unset it to let herd choose (the Triton kernels on CUDA, the torch references elsewhere)")
ATTENTION = Switch("HERD_ATTENTION", ("auto", "dense", "flex", "varlen"),
                   "unset it to let herd choose (FlexAttention on CUDA, a dense mask elsewhere)")
PROJECTIONS = Switch("HERD_FUSE_PROJECTIONS", ("auto", "on", "off"),
                     "unset it to let herd choose (stacked on CUDA, one by one elsewhere)")
ALL = (KERNELS, ATTENTION, PROJECTIONS)


def check_all() -> None:
    """Raise SwitchError for the first switch set to a value it does not take."""
    for switch in ALL:
        switch.read()
