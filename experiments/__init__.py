"""absl binaries: thin wrappers that parse flags, build configs and call remedis_tf."""

import os

# Keep TensorFlow's C++ start-up chatter out of the binaries' output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
