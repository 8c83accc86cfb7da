"""Remote-storage failures (remedis_tf.remote_io) with tf.io.gfile errors injected in-process.

Messages follow what TF's Cloud Storage client raises (libcurl / HTTP detail in the text);
the real unreachable case runs in the bad-input catalogue (tests/reliability).
"""

import pytest
import tensorflow as tf

from remedis_tf import remote_io
from remedis_tf.errors import StorageError

PATH = "gs://bucket/weights/BiT-M-R50x1.npz"
DNS = tf.errors.FailedPreconditionError(
    None, None, "Error executing an HTTP request: libcurl code 6 meaning 'Could not resolve "
    "hostname', error details: Could not resolve host: www.googleapis.com\n\t when reading "
    f"metadata of {PATH}")
REFUSED = tf.errors.AbortedError(
    None, None, "All 10 retry attempts failed. The last failure: Error executing an HTTP "
    "request: libcurl code 7 meaning 'Could not connect to server', error details: Failed to "
    f"connect to 10.0.0.1 port 3128 after 1 ms: Could not connect to server\n\t when reading "
    f"metadata of {PATH}")
ANONYMOUS = tf.errors.PermissionDeniedError(
    None, None, "Error executing an HTTP request: HTTP response code 401 with body '{\n "
    "\"error\": {\n  \"code\": 401,\n  \"message\": \"Anonymous caller does not have "
    "storage.objects.get access to the Google Cloud Storage object.\"\n }\n}\n' when reading "
    f"metadata of {PATH}")
FORBIDDEN = tf.errors.PermissionDeniedError(
    None, None, "Error executing an HTTP request: HTTP response code 403 with body '{\n "
    "\"error\": {\n  \"code\": 403,\n  \"message\": \"sa@p.iam.gserviceaccount.com does not "
    "have storage.objects.get access to the Google Cloud Storage object.\"\n }\n}\n' when "
    f"reading metadata of {PATH}")
MISSING = tf.errors.NotFoundError(
    None, None, f"Error executing an HTTP request: HTTP response code 404 with body 'No such "
    f"object: bucket/weights/BiT-M-R50x1.npz' when reading {PATH}")
BUSY = tf.errors.UnavailableError(
    None, None, "Error executing an HTTP request: HTTP response code 503 with body 'Backend "
    f"Error' when uploading {PATH}")
RATE = tf.errors.ResourceExhaustedError(
    None, None, f"HTTP response code 429 with body 'rateLimitExceeded' when uploading {PATH}")


@pytest.mark.parametrize("error,kind,fragments", [
    (DNS, "unreachable", ["cannot reach Cloud Storage for --input " + PATH,
                          "Could not resolve host: www.googleapis.com", "network, DNS and proxy"]),
    (REFUSED, "unreachable", ["cannot reach Cloud Storage", "Failed to connect to 10.0.0.1",
                              "proxy"]),
    (ANONYMOUS, "credentials", ["no valid Google Cloud credentials for --input " + PATH,
                                "HTTP 401: Anonymous caller",
                                "gcloud auth application-default login",
                                "GOOGLE_APPLICATION_CREDENTIALS"]),
    (FORBIDDEN, "permission", ["permission denied for --input " + PATH, "HTTP 403",
                               "roles/storage.objectViewer"]),
    (MISSING, "not_found", [f"--input {PATH} does not exist", "No such object", "gsutil ls"]),
    (BUSY, "transient", ["Cloud Storage is unavailable", "HTTP response code 503",
                         "rerun the same command"]),
    (RATE, "transient", ["Cloud Storage is unavailable", "429"]),
])
def test_storage_failures_become_one_named_line(error, kind, fragments):
  assert remote_io.classify(error) == kind
  message = str(remote_io.storage_error(error, what="--input"))
  assert "\n" not in message and "Traceback" not in message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_path_is_found_in_the_message_and_local_errors_are_left_alone():
  assert PATH in str(remote_io.storage_error(MISSING))
  local = tf.errors.NotFoundError(None, None, "/data/x.npz; No such file or directory")
  assert remote_io.storage_error(local) is None
  assert remote_io.storage_error(local, path="/data/x.npz") is None
  assert remote_io.classify(ValueError("x")) is None
  other = tf.errors.InvalidArgumentError(None, None, f"Invalid PNG data for {PATH}")
  assert remote_io.classify(other) is None


def _fake_exists(monkeypatch, behaviour):
  calls = []

  def exists(path):
    calls.append(path)
    outcome = behaviour[path]
    if isinstance(outcome, Exception):
      raise outcome
    return outcome

  monkeypatch.setattr(tf.io.gfile, "exists", exists)
  return calls


def test_preflight_names_the_flag_of_an_unusable_path(monkeypatch):
  calls = _fake_exists(monkeypatch, {"gs://b/run": False, PATH: FORBIDDEN})
  with pytest.raises(StorageError, match=f"permission denied for --init {PATH}"):
    remote_io.check_remote_paths({"--run_dir": "gs://b/run", "--csv": "/local/a.csv",
                                  "--init": PATH, "--empty": ""})
  assert calls == ["gs://b/run", PATH]  # local and empty values are not stat-ed


def test_preflight_requires_inputs_to_exist_but_not_outputs(monkeypatch):
  _fake_exists(monkeypatch, {"gs://b/new_run": False, "gs://b/train.csv": False})
  remote_io.check_remote_paths({"--run_dir": "gs://b/new_run"},
                               must_exist=lambda name: name != "--run_dir")
  with pytest.raises(StorageError, match="--train_csv gs://b/train.csv does not exist"):
    remote_io.check_remote_paths({"--train_csv": "gs://b/train.csv"},
                                 must_exist=lambda name: True)


def test_retry_delays_double_up_to_the_cap():
  policy = remote_io.RetryPolicy(attempts=6, initial_delay_s=1.5, max_delay_s=5.0)
  assert policy.delays() == [1.5, 3.0, 5.0, 5.0, 5.0]
  assert remote_io.RetryPolicy(attempts=1).delays() == []


class Flaky:
  def __init__(self, errors):
    self.errors, self.calls = list(errors), 0

  def __call__(self):
    self.calls += 1
    if self.errors:
      raise self.errors.pop(0)
    return "saved"


def test_transient_failures_are_retried_with_backoff():
  sleeps, lines = [], []
  fn = Flaky([BUSY, DNS])
  policy = remote_io.RetryPolicy(attempts=3, initial_delay_s=0.25, max_delay_s=10)
  assert remote_io.with_retries(fn, PATH, "checkpoint save to", policy, lines.append,
                                sleeps.append) == "saved"
  assert fn.calls == 3 and sleeps == [0.25, 0.5]
  assert "retry 2/3 in 0.25 s" in lines[0] and "transient" in lines[0]
  assert "unreachable" in lines[1]


def test_retries_are_bounded_and_end_in_a_named_error():
  sleeps = []
  fn = Flaky([BUSY] * 5)
  policy = remote_io.RetryPolicy(attempts=4, initial_delay_s=0.01, max_delay_s=0.02)
  with pytest.raises(StorageError, match=f"unavailable for checkpoint save to {PATH} after 4 "
                                         "attempts"):
    remote_io.with_retries(fn, PATH, "checkpoint save to", policy, lambda line: None,
                           sleeps.append)
  assert fn.calls == 4 and sleeps == [0.01, 0.02, 0.02]


@pytest.mark.parametrize("error", [FORBIDDEN, ANONYMOUS, MISSING])
def test_permanent_failures_are_not_retried(error):
  fn = Flaky([error, error])
  with pytest.raises(StorageError):
    remote_io.with_retries(fn, PATH, "x", remote_io.RetryPolicy(attempts=5),
                           lambda line: None, lambda s: None)
  assert fn.calls == 1


def test_local_paths_are_not_retried():
  fn = Flaky([BUSY])
  with pytest.raises(tf.errors.UnavailableError):
    remote_io.with_retries(fn, "/runs/x", "x", remote_io.RetryPolicy(attempts=5),
                           lambda line: None, lambda s: None)
  assert fn.calls == 1
