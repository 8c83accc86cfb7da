"""data_flags keeps the attribute columns a binary asks for (subgroup reports)."""

import pytest
from absl import flags

from experiments import data_flags
from remedis_tf.errors import ConfigError


def _values(**settings):
  fv = flags.FlagValues()
  data_flags.define_data_flags("t_", flag_values=fv)
  fv(["prog"])
  for name, value in settings.items():
    fv[f"t_{name}"].value = value
  return fv


def test_attribute_columns_from_csv_and_refused_without_columns(tmp_path):
  csv_path = tmp_path / "m.csv"
  csv_path.write_text("Path,Patient,Y,Sex\na.png,p1,1,F\nb.png,p2,0,M\n")
  fv = _values(source="csv", csv=str(csv_path), label_columns=["Y"], validate="none")
  m = data_flags.manifest_from_flags("t_", flag_values=fv, attribute_columns=("Sex",))
  assert [r.attribute("Sex") for r in m.records] == ["F", "M"]
  assert data_flags.manifest_from_flags("t_", flag_values=fv).records[0].attributes == ()
  fv = _values(source="folder", folder=str(tmp_path), validate="none")
  with pytest.raises(ConfigError, match="--t_source=folder has no columns to read 'Sex'"):
    data_flags.manifest_from_flags("t_", flag_values=fv, attribute_columns=("Sex",))
