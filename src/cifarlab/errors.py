"""The project's own error type: anything the user can fix (bad path, malformed file, unknown name, bad
config) is raised as a :class:`CifarlabError`, which the CLI turns into one line and a non-zero exit."""


class CifarlabError(Exception):
    """A user-facing error whose message is complete on one line."""
