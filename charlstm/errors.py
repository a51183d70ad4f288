"""User-facing errors: raised anywhere, printed by the CLI as one line."""


class UserError(Exception):
    """A mistake in the user's input (bad flag value, missing file, ...).

    The CLI prints `charlstm: error: <message>` and exits with `exit_code`
    (2 for usage errors, as argparse does; 1 for other failures), no traceback.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
