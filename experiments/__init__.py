"""absl binaries: thin wrappers that parse flags, build configs and call remedis_tf."""

# Before anything imports TensorFlow: its log level (--tf_log_level, default 2) and its
# start-up lines kept off the console (see experiments/_startup.py).
from experiments import _startup  # noqa: F401
