"""Porting bvlc_alexnet.npy: every tap of the converted encoder equals the
PyTorch reference of Caffe's bvlc_alexnet, and malformed dicts are refused.

The test files follow the published file's layout (the dict caffe-tensorflow
wrote): {'conv1'..'fc8': [W, b]}, conv W HWIO with the per-group input width,
fc6's rows in pool5's H, W, C order, fc W [in, out].
"""

import numpy as np
import pytest

import reference_alexnet_torch as reference
from inverter.port import __main__ as cli
from inverter.port import npy_dict
from inverter.port.common import PortError
from test_port_caffe import assert_taps_match

# bvlc_alexnet's conv1 (11x11, stride 4, no padding) at a reduced input:
# 99 -> 23 -> 11 -> 5 -> 2, so pool5 is 2x2 and fc6's row order matters.
SMALL = dict(arch="alexnet", input_size=99, conv1=(11, 4, 0),
             widths=(8, 16, 24, 24, 16), fc_width=32, num_classes=10, groups=2)


def npy_dict_from_caffe(weights, spec):
  """Caffe-layout weights in bvlc_alexnet.npy's layout."""
  out = {}
  for i in range(1, 6):
    w, b = weights[f"conv{i}"]
    out[f"conv{i}"] = [w.transpose(2, 3, 1, 0), b]  # OIHW -> HWIO.
  w, b = weights["fc6"]
  side, channels = spec.pool5_side(), spec.widths[-1]
  rows = w.reshape(-1, channels, side, side).transpose(2, 3, 1, 0)
  out["fc6"] = [rows.reshape(side * side * channels, -1), b]  # H, W, C rows.
  for j in (7, 8):
    w, b = weights[f"fc{j}"]
    out[f"fc{j}"] = [w.T, b]
  return out


def save_dict(path, data):
  np.save(path, np.array(data, dtype=object), allow_pickle=True)
  return path


def small_npy(tmp_path):
  spec = reference.Spec(**SMALL)
  # Unscaled conv1: activations of tens, so LRN (alpha 1e-4) really acts and
  # the default LRN parameters are tested too.
  weights = reference.random_caffe_weights(spec, seed=3, input_scale=1.0)
  path = save_dict(tmp_path / "bvlc_alexnet.npy",
                   npy_dict_from_caffe(weights, spec))
  return path, spec, weights


def test_npy_dict_reproduces_every_tap(tmp_path):
  path, spec, weights = small_npy(tmp_path)
  assert npy_dict.sniff(str(path))
  ported = npy_dict.convert(str(path), dict(input_size=spec.input_size))
  enc = ported.encoder
  assert enc.arch == "alexnet"
  assert (enc.conv1_kernel, enc.conv1_stride, enc.conv1_padding) == (11, 4, 0)
  assert tuple(enc.widths) == spec.widths and enc.groups == 2
  assert ported.source["format"] == "npy_dict"
  errors = assert_taps_match(ported.encoder, ported.params, spec, weights)
  # The LRN really changed the activations (so its parameters were tested).
  relu1 = reference.forward(weights, spec, reference.random_inputs(spec, 1))
  assert not np.allclose(relu1["relu1"], relu1["norm1"], rtol=1e-2)
  assert errors["norm1"] <= 1e-4


def test_cli_recognises_the_npy_dict(tmp_path, capsys):
  path, spec, _ = small_npy(tmp_path)
  out = tmp_path / "enc"
  assert cli.main([str(path), "--out", str(out), "--input_size", "99"]) == 0
  assert "npy_dict" in capsys.readouterr().out
  assert (out / "metadata.json").exists()


def test_plain_array_is_not_a_dict(tmp_path):
  path = tmp_path / "mean.npy"
  np.save(path, np.zeros((3, 4, 4)))
  assert not npy_dict.sniff(str(path))
  with pytest.raises(PortError, match="not the dict"):
    npy_dict.convert(str(path), {})


def test_missing_and_unexpected_keys_are_named(tmp_path):
  path, spec, weights = small_npy(tmp_path)
  data = npy_dict_from_caffe(weights, spec)
  data["fc9"] = data.pop("fc8")
  save_dict(path, data)
  with pytest.raises(PortError, match="missing fc8.*unexpected fc9"):
    npy_dict.convert(str(path), dict(input_size=99))


def test_wrong_shapes_are_refused(tmp_path):
  path, spec, weights = small_npy(tmp_path)
  data = npy_dict_from_caffe(weights, spec)
  w, b = data["conv4"]
  data["conv4"] = [np.concatenate([w, w], axis=2), b]  # Ungrouped in-width.
  save_dict(path, data)
  with pytest.raises(PortError, match=r"conv4 W has shape \(3, 3, 24, 24\),"
                     r" expected \(3, 3, 12, 24\)"):
    npy_dict.convert(str(path), dict(input_size=99))
  data = npy_dict_from_caffe(weights, spec)
  data["fc7"] = [data["fc7"][0], data["fc7"][1][:-1]]
  save_dict(path, data)
  with pytest.raises(PortError, match="fc7 b has shape"):
    npy_dict.convert(str(path), dict(input_size=99))
  data = npy_dict_from_caffe(weights, spec)
  data["conv1"] = [data["conv1"][0]]
  save_dict(path, data)
  with pytest.raises(PortError, match=r"conv1 must be \[W, b\]"):
    npy_dict.convert(str(path), dict(input_size=99))


def test_fc6_rows_that_do_not_fit_the_input_size(tmp_path):
  path, _, _ = small_npy(tmp_path)
  with pytest.raises(PortError, match="fc6 W has 64 rows.*--input_size"):
    npy_dict.convert(str(path), dict(input_size=227))


def test_caffenet_arch_does_not_apply(tmp_path):
  path, _, _ = small_npy(tmp_path)
  with pytest.raises(PortError, match="alexnet architecture"):
    npy_dict.convert(str(path), dict(input_size=99, arch="caffenet"))
