"""Progress bars: one helper so that every bar behaves the same.

Bars show on a terminal only: when stderr is a file or a pipe (a log, CI) they stay
silent instead of writing thousands of carriage-return lines; stage start and end
are logged instead. Under data parallelism only the main process draws. TQDM_DISABLE=1
turns them off everywhere (tqdm's own variable).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

from lensml import distributed


def progress(*args, **kwargs):
    """tqdm that is hidden off a terminal and on non-main processes."""
    if distributed.is_distributed() and not distributed.is_main():
        kwargs["disable"] = True
    elif os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        kwargs["disable"] = True
    else:
        kwargs.setdefault("disable", None)  # tqdm: None hides the bar when the stream is not a terminal
    return tqdm(*args, **kwargs)
