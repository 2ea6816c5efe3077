"""Feature flags: the shipped flag file and the one module that checks and changes it."""

from boutique.flags.file import (
    DEFAULT_FILE,
    Change,
    FlagFile,
    FlagFileError,
    FlagView,
    check_document,
    local_user,
    shipped,
)

__all__ = [
    "DEFAULT_FILE",
    "Change",
    "FlagFile",
    "FlagFileError",
    "FlagView",
    "check_document",
    "local_user",
    "shipped",
]
