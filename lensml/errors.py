"""One exception type for user-facing problems.

The CLI turns a LensError into a one-line message and a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class LensError(Exception):
    """A problem with the user's input: the message names it and the fix."""
