"""Experiment storage: a local folder or a URI (s3://, gs://, ...), through pyarrow's file systems
(which Ray Tune uses for the same paths). Local writes are atomic (``layerout.files``)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.fs as pafs

from layerout.errors import UserError
from layerout.files import WriteError, atomic_write, write_reason


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> Path:
    return Path(path.replace("file://", "", 1))


def storage_root(storage: str) -> str:
    """``--storage`` as an absolute local path, or the URI as given (no trailing slash)."""
    if "://" in storage:
        return storage.rstrip("/")
    return str(Path(os.path.expanduser(storage)).resolve())


def storage_fs(path: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for a local path or a URI."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def exists(path: str) -> bool:
    fs, p = storage_fs(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def read_text(path: str) -> str | None:
    """The file's text, or None when it is missing or unreadable."""
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8", errors="replace")


def read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None when it is missing or unreadable."""
    fs, p = storage_fs(path)
    try:
        if fs.get_file_info(p).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(p) as f:
            return f.read()
    except OSError:
        return None


def check_writable(folder: str, flag: str) -> None:
    """A local folder that exists (created if missing) and takes new files; else one UserError
    naming ``flag`` (``--storage``, ``--resume``). Remote storage is checked by its first write."""
    if not is_local(folder):
        return
    p = local_path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p, prefix=".layerout-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {p}: cannot write there ({write_reason(exc)}); use a folder you can write") from None


@contextlib.contextmanager
def claimed(exp_dir: str, taken: Callable[[], Exception]) -> Iterator[None]:
    """Claim a new experiment folder for this process: a local one is created by one
    ``os.mkdir``, which only one of several processes starting at once can do (the others get
    ``taken()`` raised); a remote one can only be checked for existence first. If the block (the
    first write into it) fails, the folder is removed again while it is still empty."""
    if is_local(exp_dir):
        p = local_path(exp_dir)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.mkdir(mode=0o755)  # atomic: exactly one process creates it
        except FileExistsError:
            raise taken() from None
        except OSError as exc:
            raise WriteError(p, write_reason(exc)) from exc
    elif exists(exp_dir):
        raise taken()
    try:
        yield
    except BaseException:
        if is_local(exp_dir):
            with contextlib.suppress(OSError):  # only an empty folder: what others wrote stays
                os.rmdir(local_path(exp_dir))
        raise


def write_text(path: str, text: str) -> None:
    """Write a file so that readers never see a half-written one (WriteError when it cannot be)."""
    if is_local(path):
        atomic_write(local_path(path), text)
        return
    fs, p = storage_fs(path)
    try:
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        tmp = p + ".tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(text.encode("utf-8"))
        try:
            fs.move(tmp, p)
        except OSError:  # some object stores cannot rename: write in place
            with fs.open_output_stream(p) as f:
                f.write(text.encode("utf-8"))
            fs.delete_file(tmp)
    except OSError as exc:
        raise WriteError(path, " ".join(str(exc).split())[:200]) from exc


def list_names(path: str, folders: bool = False) -> list[str]:
    """Names of the entries directly in the folder ``path`` (``folders``: of its folders only;
    empty when it cannot be listed)."""
    fs, p = storage_fs(path)
    try:
        return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(p, recursive=False))
                      if not folders or i.type == pafs.FileType.Directory)
    except OSError:
        return []
