"""Sharded TFRecords of ``tf.train.Example`` (write from a Manifest, read as tf.data).

Layout for an output prefix ``P``:
  ``P-00000-of-00008.tfrecord`` …  the shards (record i of the written order goes to
                                   shard i mod N, so every shard spans the whole set);
  ``P.manifest.json``              small sidecar: label names, task, count, shard files,
                                   image_size, bit_depth, source (written last: its
                                   presence marks a complete write);
  ``P.index.csv``                  one row per example (id, patient, view, site, labels,
                                   mask, shard): lets label-fraction selection and MICLe
                                   pairing work on a Manifest (:func:`tfrecords_manifest`)
                                   without touching image bytes.

Example features: ``image/encoded`` (PNG bytes; 1 channel when grey, 8- or 16-bit),
``image/id``, ``image/patient``, ``image/view``, ``image/site`` (bytes), ``label`` and
``mask`` (float lists of length K).

``image_size``: when set, images are downscaled (area resampling, aspect ratio kept, never
upscaled) so their LONGEST side is at most ``image_size``; crops to a square are left to
the training/eval pipeline, so no pixels are thrown away here.

Modules: ``schema`` (paths, sidecar schema, Example features), ``writer``
(``write_tfrecords``, ``write_tfrecords_from_examples``), ``reader`` (``read_tfrecords``,
``tfrecords_manifest``). A manifest from ``tfrecords_manifest`` carries
``Manifest.storage = Storage.tfrecords(prefix)``; consumers test
``manifest.storage.is_tfrecords``, never the ``source`` text.
"""

from remedis_tf.data.tfrecords.reader import read_tfrecords, tfrecords_manifest
from remedis_tf.data.tfrecords.schema import (TFRecordSchema, index_path, make_example,
                                              parse_example, read_schema, shard_path,
                                              sidecar_path)
from remedis_tf.data.tfrecords.writer import (encode_png, write_tfrecords,
                                              write_tfrecords_from_examples)

__all__ = [
    "TFRecordSchema", "shard_path", "sidecar_path", "index_path", "make_example",
    "parse_example", "read_schema", "encode_png", "write_tfrecords",
    "write_tfrecords_from_examples", "read_tfrecords", "tfrecords_manifest",
]
