"""The storage layer's refusals, shared by the storage root (``root``) and source folders (``sources``)."""

from __future__ import annotations


class SourceError(Exception):
    """A whole source file is unusable. The message names the file, the problem and the fix."""

    def __init__(self, path: str, problem: str, fix: str):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{path}: {problem}. {fix}")


class UnsafePath(SourceError, ValueError):
    """A path that could leave its root: a source folder's (``..`` that climbs out, absolute, ``~``, a drive
    letter, a URL, a backslash, a control character; it is never opened) or the storage root's (a part that is
    empty, ``.``, ``..``, absolute, or holds a backslash or a control character; nothing is written).

    One class for both, so ``except UnsafePath`` (or ``SourceError``, or ``ValueError``) catches either. A
    source refusal is ``UnsafePath(path, problem, fix)``; a storage-root refusal ``UnsafePath(message=...)``.
    """

    def __init__(
        self,
        path: str | None = None,
        problem: str | None = None,
        fix: str | None = None,
        *,
        message: str | None = None,
    ):
        if problem is None:  # the one-message form (also what unpickling passes: the message)
            text = message if message is not None else str(path)
            self.path, self.problem, self.fix = None, text, None
            Exception.__init__(self, text)
            return
        super().__init__(str(path), problem, fix or "")


class UncommittedTable(RuntimeError):
    """A table file that its gate record does not name: a publication that died between writing the table
    and committing its gate record, or a file changed after it was published. Readers never serve it."""
