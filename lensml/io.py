"""Writing outputs so that nothing half-written is ever seen: the one home of atomic writes.

Files go to a temporary name in the target folder and are renamed when complete;
folders are built in a temporary sibling and swapped in. Both follow the user's
umask (tempfile creates 0600 files and 0700 folders). JSON never holds a bare
NaN or Infinity (invalid JSON): such numbers are written as null.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from safetensors import safe_open
from safetensors.torch import save_file

from lensml.errors import LensError

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"  # temporary siblings are named .NAME.tmp-PID-XXXX (see staged_dir)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def chmod_default(path: Path, directory: bool) -> None:
    """Give a path made by tempfile the permissions a plain open()/mkdir() would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def finite(obj):
    """obj with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj, indent: int | None = 2) -> str:
    """JSON text; non-finite floats become null, other objects their str()."""
    return json.dumps(finite(obj), indent=indent, ensure_ascii=False, default=str, allow_nan=False)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}{os.getpid()}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        chmod_default(Path(tmp), directory=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tensors_atomic(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file written to a temporary name of this process's own and renamed: concurrent writers
    never mix their bytes, and whichever finishes last leaves a complete file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}{os.getpid()}-")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        chmod_default(Path(tmp), directory=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def tensors_for_start(path: Path, start: int) -> Iterator[tuple | None]:
    """(open safetensors file, its metadata) of a cache file written for start layer `start`; None when the
    file is absent or was written for another start layer (lensml.evaluation.quick's cached states and prefill)."""
    if not path.is_file():
        yield None
        return
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        yield (f, meta) if meta.get("start") == str(start) else None


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, dumps(obj) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(dumps(row, indent=None) + "\n" for row in rows))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row and flush it (a log that grows while a job runs, e.g. per-step losses)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(dumps(row, indent=None) + "\n")
        f.flush()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def remove_stale(parent: Path, prefix: str) -> list[tuple[Path, int]]:
    """Remove temporary folders named PREFIX<pid>-... whose process is dead (a killed job's leftovers).

    Returns what was removed with its size in bytes; each removal is logged.
    """
    removed = []
    if not parent.is_dir():
        return removed
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    for path in parent.iterdir():
        match = pattern.match(path.name)
        if not match or pid_alive(int(match.group(1))):
            continue
        size = folder_size(path) if path.is_dir() else path.stat().st_size
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        log.warning("removed %s (%.1f MB), left behind by a process that no longer runs", path, size / 1e6)
        removed.append((path, size))
    return removed


def check_writable(folder: Path) -> None:
    """Fail now, not after an hour of work, when the output folder's parent cannot be written."""
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{folder.name}.write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise LensError(f"cannot write to {parent} ({err.strerror or err}): choose another --out") from err


def check_not_cwd(out: Path) -> None:
    """Refuse an output that is the current folder or holds it (`--out ''`, `--out .`, `--out ..`).

    Such a folder cannot be swapped for the new one (a process's working folder cannot be renamed
    away), so the job would fail only at its very end, after all its work.
    """
    where = Path(out).resolve()
    here = Path.cwd().resolve()
    if where == here or where in here.parents:
        shown = "''" if str(out) in ("", ".") else str(out)
        raise LensError(f"output {shown} is the current folder or holds it: name a new folder, e.g. --out runs/NAME")


def is_empty_dir(path: Path) -> bool:
    """A folder with nothing in it: replacing it loses nothing."""
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


#: A test of whether an existing folder may be replaced with --overwrite (a folder that lensml wrote).
Replaceable = Callable[[Path], bool]


def check_free(out: Path, overwrite: bool, replaceable: Replaceable | None = None) -> None:
    """An output path may be written: absent, or --overwrite given and it is a folder we can replace.

    replaceable: when given, an existing non-empty folder is replaced only if it says True (a folder a
    lensml job wrote, by its manifest), so --overwrite never deletes a folder of the user's own files.
    """
    check_not_cwd(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise LensError(f"output {out} already exists: pass --overwrite or choose another --out")
        if not out.is_dir():
            raise LensError(f"output {out} is a file, not a folder: remove it or choose another --out")
        if replaceable is not None and not is_empty_dir(out) and not replaceable(out):
            raise LensError(f"output {out} exists and was not written by lensml (no lensml manifest), so --overwrite "
                            f"will not replace it: remove it yourself or choose another --out")


def follow_umask(folder: Path) -> None:
    """Give every file and folder under folder the permissions plain open()/mkdir() would have.

    Writers that go through a temporary file (safetensors' save_file, tempfile) leave 0600 files,
    which other users of a shared model folder cannot read.
    """
    mask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, 0o777 & ~mask)
        else:
            os.chmod(path, (0o777 if path.stat().st_mode & 0o100 else 0o666) & ~mask)


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, overwrite: bool = False,
               replaceable: Replaceable | None = None, keep: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `out` only if the block succeeds.

    The old `out` (with --overwrite, and only if replaceable says so: see check_free) is moved
    aside first and deleted only after the new one is in place, so a failure at any point leaves
    either the old or the new folder, never a mix and never neither. What the block wrote gets
    the umask's permissions (follow_umask) before it is published.

    keep: stage in this folder instead (a sibling of `out`, made if absent, its contents kept) and
    leave it where it is when the block fails, so that a later job can take up its finished parts
    (lensml.recipes.resume); `out` itself is still written only whole.
    """
    out = Path(out)
    check_free(out, overwrite, replaceable)
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}{TMP_MARK}"
    remove_stale(out.parent, prefix)
    if keep is None:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{prefix}{os.getpid()}-"))
        chmod_default(tmp, directory=True)
    else:
        tmp = Path(keep)
        tmp.mkdir(exist_ok=True)
    try:
        yield tmp
        check_free(out, overwrite, replaceable)
        follow_umask(tmp)
        if out.exists():
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{prefix}{os.getpid()}-old-"))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
