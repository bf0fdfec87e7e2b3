"""Where a cursor resumes: the one definition of the ``RESET_*`` rules, shared by every backend.

Pure arithmetic on sequence numbers, so the memory and Redis logs cannot disagree about when a
viewer gets a ``reset`` instead of an exact resume.
"""

from __future__ import annotations

import secrets
import string

from ssegate.log.base import RESET_FUTURE, RESET_OTHER_EPOCH, RESET_TRIMMED, RESET_UNKNOWN_ID, parse_id

_EPOCH_ALPHABET = string.digits + string.ascii_lowercase
# 10 base-36 characters: ~52 bits, so two lives of one stream practically never share an epoch.
_EPOCH_LENGTH = 10
_EPOCH_SPACE = len(_EPOCH_ALPHABET) ** _EPOCH_LENGTH


def new_epoch() -> str:
    """A fresh random epoch word for a newly created stream."""
    # One draw from the OS for the whole word, not one per character (secrets.choice each time).
    number = secrets.randbelow(_EPOCH_SPACE)
    digits = []
    for _ in range(_EPOCH_LENGTH):
        number, digit = divmod(number, len(_EPOCH_ALPHABET))
        digits.append(_EPOCH_ALPHABET[digit])
    return "".join(digits)


def resolve_cursor(after: str | None, epoch: str, first_seq: int, last_seq: int) -> tuple[int, str | None]:
    """``(seq to read from, reset reason or None)`` for cursor ``after``.

    ``first_seq`` is the earliest retained event (``last_seq + 1`` when nothing is retained) and
    ``last_seq`` the newest appended one (0 before the first append). A cursor resumes exactly only
    if it names a position of this epoch from ``first_seq - 1`` up to ``last_seq``; any other cursor
    restarts at ``first_seq`` with the reason it could not resume.
    """
    if after is None:
        return first_seq, None
    parsed = parse_id(after)
    if parsed is None:
        return first_seq, RESET_UNKNOWN_ID
    cursor_epoch, seq = parsed
    if cursor_epoch != epoch:
        return first_seq, RESET_OTHER_EPOCH
    if seq > last_seq:
        return first_seq, RESET_FUTURE
    if seq + 1 < first_seq:
        return first_seq, RESET_TRIMMED
    return seq + 1, None
