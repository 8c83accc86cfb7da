"""The project's own exception types.

Every failure a user can cause (bad file, bad CSV row, bad flag value, mismatched
checkpoint) raises a subclass of :class:`RemedisError` with a one-line message that
names the offending input, so binaries can print it and exit non-zero.
"""


class RemedisError(Exception):
  """Base class for all errors raised deliberately by remedis_tf."""


class ConfigError(RemedisError, ValueError):
  """An invalid or contradictory setting (flag value, config field)."""


class DataError(RemedisError, ValueError):
  """Bad input data: missing/undecodable file, malformed manifest row, empty set."""


class CheckpointError(RemedisError, ValueError):
  """A weight file or checkpoint that does not match the model it is loaded into."""


class TrainingError(RemedisError, RuntimeError):
  """A training run that cannot continue (e.g. non-finite loss)."""


class StorageError(RemedisError, RuntimeError):
  """Storage that cannot be used: an unreachable host, missing credentials, permission
  denied or a missing object on remote storage (``gs://``), or remote writes that kept
  failing after bounded retries."""


class RunDirLockedError(RemedisError, RuntimeError):
  """The run directory is in use by another process (one writer per run directory)."""
