"""A LoadReport prints as one readable line, not as a dataclass repr (issue 19, item 10)."""

from remedis_tf.weights.bit_npz import LoadReport


def test_load_report_prints_readably():
  report = LoadReport("w.npz", "tiny", 42, "skipped: not requested", ("resnet/head/conv2d/bias",
                                                                      "resnet/head/conv2d/kernel"))
  assert str(report) == ("42 arrays into tiny, head skipped: not requested, 2 source keys "
                         "ignored")
  assert str(LoadReport("w.npz", "tiny", 42, "absent")) == "42 arrays into tiny, head absent"
  assert f"{report}" and "LoadReport(" not in f"from {report}"
