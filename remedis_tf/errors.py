"""The project's own exception types.

Every failure a user can cause (bad file, bad CSV row, bad flag value, mismatched
checkpoint) raises a subclass of :class:`RemedisError` with a one-line message that
names the offending input, so binaries can print it and exit non-zero.
"""

import copy
from typing import Any, Mapping, Optional, Tuple

# ConfigError(value=...) not given (None is a value a message may show).
_NO_VALUE = object()


class RemedisError(Exception):
  """Base class for all errors raised deliberately by remedis_tf."""


class ConfigError(RemedisError, ValueError):
  """An invalid or contradictory setting (flag value, config field).

  ``ConfigError(message)`` carries a self-contained message. A config class' validation
  says which field it rejects instead, and the message is built from the parts:

  * ``ConfigError("must be >= 1, got 0", field="steps_per_loop")`` reads
    ``steps_per_loop must be >= 1, got 0``;
  * with ``value`` (and ``config``, the class qualifying the name),
    ``ConfigError("must be > 0", field="base_lr", value=0.0, config="OptimizerConfig")``
    reads ``OptimizerConfig.base_lr=0.0: must be > 0``;
  * a reason that names other fields of the same config marks each with ``{name}`` and
    lists them in ``related``: ``ConfigError("need 0 < {crop_area_min} <= {crop_area_max}
    (0.3) <= 1", field="crop_area_min", value=0.5, related=("crop_area_max",))`` reads
    ``crop_area_min=0.5: need 0 < crop_area_min <= crop_area_max (0.3) <= 1``.

  Attributes:
    field: the config field that was rejected; None for a self-contained message.
    reason: what is wrong with it (the message itself when there is no field).
    config: the class name qualifying ``field`` in the message, or None.
    related: other fields the reason names (``{name}`` in ``reason``).

  Whoever sets a field under another name (a binary's ``--flag``) re-words the error with
  :meth:`renamed`, from these parts: the message's text is never parsed.
  """

  def __init__(self, message: str, *, field: Optional[str] = None, value: Any = _NO_VALUE,
               config: Optional[str] = None, related: Tuple[str, ...] = ()):
    if field is None and (value is not _NO_VALUE or config is not None or related):
      raise TypeError("ConfigError: value=, config= and related= need field=")
    self.field = field
    self.reason = message
    self.config = config
    self.related = tuple(related)
    self._names = {name: name for name in (field,) + self.related if name}
    self._value_text = None if value is _NO_VALUE else repr(value)
    self._name = field if config is None else f"{config}.{field}"
    super().__init__(self._message())

  def _message(self) -> str:
    if self.field is None:
      return self.reason
    # Only a reason with ``related`` fields is a template (others may hold literal braces).
    reason = self.reason.format(**self._names) if self.related else self.reason
    if self._value_text is None:
      return f"{self._name} {reason}"
    return f"{self._name}={self._value_text}: {reason}"

  def renamed(self, name: str, related: Optional[Mapping[str, str]] = None
              ) -> "ConfigError":
    """The same error (same ``field``, ``reason``, ``config``) whose message calls the field
    ``name``, e.g. the flag that set it: ``--learning_rate=0.0: must be > 0``; ``related``
    renames the other fields its reason names (``{field: name}``, those it holds)."""
    if self.field is None:
      raise ValueError("renamed: this ConfigError names no field")
    error = copy.copy(self)
    error._name = name  # pylint: disable=protected-access
    error._names = {**self._names, self.field: name,  # pylint: disable=protected-access
                    **{f: n for f, n in (related or {}).items() if f in self.related}}
    error.args = (error._message(),)  # pylint: disable=protected-access
    return error


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
