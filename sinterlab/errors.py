"""The one exception type users see: a one-line message naming the file and the fix."""


class SinterlabError(Exception):
    """Bad input or configuration; the message says which file or key, and what to do."""
