"""Forward hooks whose needs the evaluation decoder knows: a registry, so runtime code need not know who set them.

The decoder (lensml.runtime.decoding) prefills prompts in chunks and shares their template
prefix; a hook of unknown needs may have to see whole prompts, so a model carrying one is
decoded with generate(). A hook family that can pause during a prefill and restart at the
first decode step (steering, lensml.methods.steer) registers its handles here; each handle has
`hook_ids` (set of hook ids), `paused()` (a context manager) and `restart()`.
"""

from __future__ import annotations

import weakref

from lensml.runtime.models import decoder_of
from lensml.runtime.shared_prefix import hook_ids

_ATTACHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # decoder -> its known handles


def add(model, handle) -> None:
    _ATTACHED.setdefault(decoder_of(model), []).append(handle)


def discard(model, handle) -> None:
    attached = _ATTACHED.get(decoder_of(model), [])
    if handle in attached:
        attached.remove(handle)


def known_only(model) -> list | None:
    """The known handles on model when they are all its hooks ([] for none); None when other hooks
    are on it too (whose needs nobody knows: they get whole prompts, lensml.runtime.shared_prefix.hooked)."""
    handles = list(_ATTACHED.get(decoder_of(model), []))
    ours = set().union(*(h.hook_ids for h in handles)) if handles else set()
    return handles if hook_ids(model) <= ours else None
