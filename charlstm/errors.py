"""User-facing errors: raised anywhere, printed by the CLI as one line."""

from __future__ import annotations

import difflib
import errno


class UserError(Exception):
    """A mistake in the user's input (bad flag value, missing file, ...).

    The CLI prints `charlstm: error: <message>` and exits with `exit_code`
    (2 for usage errors, as argparse does; 1 for other failures), no traceback.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# What to do about the file-system errors a user's machine produces (the CLI prints
# these for any OSError that reaches it; every write is atomic, so nothing is half done).
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space and run the command again (files "
                  "written before are intact)",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again "
                  "(files written before are intact)",
    errno.EROFS: "the file system is read-only: copy the files somewhere writable, or "
                 "write elsewhere",
    errno.EACCES: "no permission: make it writable (and readable) for you, or use "
                  "another place",
    errno.EPERM: "not permitted: make it writable for you, or use another place",
    errno.EIO: "the disk reported an I/O error: check it before trusting its files",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter path",
}


def os_error_message(e: OSError, path=None) -> str:
    """One line for a failed file operation: the file (path, when the error itself does
    not name one), the system's reason, what to do."""
    where = e.filename or path
    advice = _ADVICE.get(e.errno, "check the file and the disk, then run the command again")
    return f"{where}: " * bool(where) + f"{e.strerror or e}; {advice}"


def closest(word: str, choices) -> str | None:
    """The one of choices that `word` was most likely a typo of, or None: difflib's
    ratio at its default cutoff, which takes --hiden-size for --hidden-size but
    suggests nothing for a word unlike every choice."""
    found = difflib.get_close_matches(word, list(choices), n=1)
    return found[0] if found else None
