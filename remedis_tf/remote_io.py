"""Remote storage (``gs://``) failures as named one-line errors, and bounded retries.

``tf.io.gfile`` reports a failing Cloud Storage request as a generic ``tf.errors.OpError``
whose text holds the libcurl or HTTP detail. :func:`classify` sorts those into five kinds:

* ``unreachable`` — DNS or connection failure (no network, a firewall, a proxy);
* ``credentials`` — no or invalid Google credentials (HTTP 401, anonymous caller);
* ``permission`` — the account lacks a role on the bucket (HTTP 403);
* ``not_found`` — the bucket or object does not exist (HTTP 404);
* ``transient`` — the service answered "try again" (HTTP 408/429/5xx, timeouts).

:func:`storage_error` turns one into a :class:`~remedis_tf.errors.StorageError` naming the
path, the cause and a fix. :func:`check_remote_paths` stats the remote paths a binary was
given before it does any work; :func:`with_retries` retries ``unreachable``/``transient``
failures of a long run's writes with bounded exponential backoff.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable, Dict, Optional, TypeVar

import tensorflow as tf

from remedis_tf.errors import StorageError

T = TypeVar("T")
REMOTE_SCHEMES = ("gs://",)
KINDS = ("unreachable", "credentials", "permission", "not_found", "transient")
RETRYABLE = frozenset({"unreachable", "transient"})

_HTTP_CODE = re.compile(r"HTTP response code (\d{3})")
_UNREACHABLE = re.compile(
    r"Could not resolve host|Couldn't resolve|Could not resolve proxy|libcurl code (5|6|7)\b|"
    r"Failed to connect|Couldn't connect|Connection refused|Network is unreachable|"
    r"No route to host", re.IGNORECASE)
_TIMEOUT = re.compile(r"libcurl code (28|52|55|56)\b|Timeout was reached|timed out|"
                      r"Connection reset|Empty reply|SSL connect error", re.IGNORECASE)
_CREDENTIALS = re.compile(r"Anonymous caller|bearer token|credentials|invalid_grant|"
                          r"Unauthenticated|Login Required|invalid authentication",
                          re.IGNORECASE)
_PATH = re.compile(r"gs://[^\s'\",;)]+")

_FIX = {
    "unreachable": "check this machine's network, DNS and proxy settings (it must reach "
                   "*.googleapis.com over HTTPS), or use local paths",
    "credentials": "run `gcloud auth application-default login`, or set "
                   "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (on a "
                   "GCE/TPU VM: give the VM a service account with the storage scope)",
    "permission": "grant this account roles/storage.objectViewer (to read) or "
                  "roles/storage.objectAdmin (to write) on the bucket",
    "not_found": "check the bucket and object name (`gsutil ls` the parent)",
    "transient": "Cloud Storage kept failing; rerun the same command later (a training "
                 "run resumes from its last complete checkpoint)",
}
_CAUSE = {
    "unreachable": "cannot reach Cloud Storage",
    "credentials": "no valid Google Cloud credentials",
    "permission": "permission denied",
    "not_found": "does not exist",
    "transient": "Cloud Storage is unavailable",
}


def is_remote(path: str) -> bool:
  """True for paths on remote storage that ``tf.io.gfile`` serves over the network."""
  return isinstance(path, str) and path.startswith(REMOTE_SCHEMES)


def _detail(error: BaseException) -> str:
  """The informative part of a gfile error's first lines (no op names, no boilerplate)."""
  text = getattr(error, "message", None) or str(error)
  text = re.sub(r"\{\{[^}]*\}\}|\s*\[Op:[^\]]*\]", "", text)
  text = re.sub(r"Error executing an HTTP request:\s*|All \d+ retry attempts failed\. The "
                r"last failure:\s*", "", text)
  text = " ".join(text.split())
  details = re.search(r"error details: (.*?)(?= when |$)", text)
  if details:
    return details.group(1)
  code = _HTTP_CODE.search(text)
  message = re.search(r'"message":\s*"([^"]+)"', text)
  if code and message:
    return f"HTTP {code.group(1)}: {message.group(1)}"
  text = re.sub(r" when (reading|writing|uploading|deleting|listing|creating)\b.*$", "", text)
  return text[:200] + ("..." if len(text) > 200 else "")


def classify(error: BaseException) -> Optional[str]:
  """One of :data:`KINDS` for a storage failure raised by ``tf.io.gfile``, else None."""
  if not isinstance(error, tf.errors.OpError):
    return None
  text = error.message or ""
  code = _HTTP_CODE.search(text)
  status = int(code.group(1)) if code else 0
  if isinstance(error, tf.errors.UnauthenticatedError) or status == 401 or (
      status in (0, 403) and _CREDENTIALS.search(text)):
    return "credentials"
  if status == 403 or (isinstance(error, tf.errors.PermissionDeniedError) and status == 0):
    return "permission"
  if status in (404, 410) or isinstance(error, tf.errors.NotFoundError):
    return "not_found"
  if _UNREACHABLE.search(text):
    return "unreachable"
  if status in (408, 429) or status >= 500 or _TIMEOUT.search(text) or isinstance(
      error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
              tf.errors.AbortedError)):
    return "transient"
  return None


def storage_error(error: BaseException, path: Optional[str] = None, what: str = "",
                  attempts: int = 1) -> Optional[StorageError]:
  """A one-line StorageError for a remote-storage failure, else None.

  Args:
    error: what ``tf.io.gfile`` raised.
    path: the remote path used (found in the message when None). Local-path errors and
      errors that name no remote path give None (they are not this module's business).
    what: how the path was given, e.g. ``"--input"`` or ``"checkpoint save"``.
    attempts: how many tries were made (mentioned when > 1).
  """
  kind = classify(error)
  text = getattr(error, "message", "") or str(error)
  if path is None:
    found = _PATH.search(text)
    path = found.group(0) if found else None
  if kind is None or not is_remote(path or ""):
    return None
  label = f"{what} {path}" if what else path
  tries = f" after {attempts} attempts" if attempts > 1 else ""
  if kind == "not_found":
    head = f"{label} does not exist"
  else:
    head = f"{_CAUSE[kind]} for {label}{tries}"
  return StorageError(f"{head} ({_detail(error)}); {_FIX[kind]}")


def check_remote_paths(paths: Dict[str, str],
                       must_exist: Callable[[str], bool] = lambda name: False) -> None:
  """Stats every remote path in ``paths`` (name → path) before any work is done.

  Raises StorageError for an unreachable host, missing credentials or a permission
  problem, and for a missing path whose name ``must_exist`` (inputs). Local paths and
  empty values are skipped (the library checks them with its own messages).
  """
  for name, path in paths.items():
    if not is_remote(path):
      continue
    try:
      exists = tf.io.gfile.exists(path)
    except tf.errors.OpError as e:
      error = storage_error(e, path, name)
      if error is None:
        raise
      raise error from None
    if not exists and must_exist(name):
      raise StorageError(f"{name} {path} does not exist; {_FIX['not_found']}")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """Bounded exponential backoff for remote writes during a run.

  ``attempts`` tries in all; the wait before try k+1 is ``initial_delay_s * 2**(k-1)``,
  capped at ``max_delay_s`` (defaults: 6 tries over about 1 minute).
  """
  attempts: int = 6
  initial_delay_s: float = 2.0
  max_delay_s: float = 30.0

  def delays(self):
    """The waits between tries, in seconds."""
    return [min(self.max_delay_s, self.initial_delay_s * 2 ** k)
            for k in range(max(0, self.attempts - 1))]


def with_retries(fn: Callable[[], T], path: str, what: str,
                 policy: RetryPolicy = RetryPolicy(),
                 log: Callable[[str], None] = print,
                 sleep: Callable[[float], None] = time.sleep) -> T:
  """``fn()``, retried on unreachable/transient remote-storage errors.

  Raises StorageError (naming ``what`` and ``path``) when the tries run out or the error
  is permanent (credentials, permission, missing object); other errors propagate as-is.
  Local paths are not retried (a local write failure is not transient).
  """
  delays = policy.delays()
  for attempt in range(len(delays) + 1):
    try:
      return fn()
    except tf.errors.OpError as e:
      kind = classify(e) if is_remote(path) else None
      if kind is None:
        raise
      if kind not in RETRYABLE or attempt == len(delays):
        error = storage_error(e, path, what, attempts=attempt + 1)
        raise error from None
      log(f"[storage] {what} {path} failed ({kind}: {_detail(e)}); retry "
          f"{attempt + 2}/{len(delays) + 1} in {delays[attempt]:g} s")
      sleep(delays[attempt])
  raise AssertionError("unreachable")  # the loop returns or raises
