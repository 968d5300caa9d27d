"""Porting .caffemodel files: every tap of the converted Flax encoder equals an
independent PyTorch forward pass of the Caffe network, and damaged or
unsupported files are refused with a clear message. (The full-size 227x227
CaffeNet is checked end to end, through the CLI, in test_port_cli.py.)

The files are written by tests/caffe_proto_writer.py with real protobuf
classes built from caffe.proto's field definitions, in both of Caffe's layer
formats (legacy V1 `layers`, current `layer`) and both blob shape spellings
(legacy num/channels/height/width, BlobShape).
"""

import re

import jax
import numpy as np
import pytest

import caffe_proto_writer as writer
import reference_alexnet_torch as reference
from inverter.models import alexnet
from inverter.port import caffe, caffemodel
from inverter.port.common import PortError

TOLERANCE = 1e-4  # max|ours - reference| / max|reference|, every tap.

# A reduced AlexNet: ceil-mode pooling matters (24 -> 12), pool5 is 3x3 so
# fc6's row order matters, and LRN parameters differ from the defaults and
# are large enough to change activations, so they must be read from the file.
SMALL = dict(input_size=48, conv1=(5, 2, 2), widths=(8, 16, 24, 24, 16),
             fc_width=32, num_classes=10, groups=2, lrn=(3, 0.5, 0.6, 2.0))


def write_caffemodel(path, spec, weights, *, legacy, legacy_dims, **kwargs):
  layers = writer.alexnet_layers(weights, arch=spec.arch, conv1=spec.conv1,
                                 groups=spec.groups, lrn=spec.lrn, **kwargs)
  path.write_bytes(writer.net_bytes(layers, legacy=legacy,
                                    legacy_dims=legacy_dims))
  return path


def assert_taps_match(encoder_cfg, params, spec, weights, batch=2):
  """Every tap of our encoder (config block + params) against the PyTorch
  reference on the Caffe-layout `weights`; returns the errors per tap."""
  model = alexnet.from_config(encoder_cfg)
  x = reference.random_inputs(spec, batch)
  ours = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
  ref = reference.forward(weights, spec, x)
  assert set(ours) == set(ref) == set(alexnet.tap_names(spec.arch))
  errors = reference.max_relative_errors(ours, ref)
  bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
  assert not bad, f"taps beyond {TOLERANCE}: {bad}"
  return errors


@pytest.mark.parametrize("arch,legacy,legacy_dims", [
    ("caffenet", True, True),    # Like the 2014 BVLC files.
    ("caffenet", False, False),  # Current Caffe.
    ("alexnet", True, False),
    ("alexnet", False, True),
])
def test_reduced_caffemodel_reproduces_every_tap(tmp_path, arch, legacy,
                                                 legacy_dims):
  spec = reference.Spec(arch=arch, **SMALL)
  weights = reference.random_caffe_weights(spec, seed=len(arch) + legacy)
  path = write_caffemodel(tmp_path / "net.caffemodel", spec, weights,
                          legacy=legacy, legacy_dims=legacy_dims)
  ported = caffe.convert_file(str(path), dict(input_size=spec.input_size))
  enc = ported.encoder
  assert enc.arch == arch  # Detected from the layer order.
  assert (enc.conv1_kernel, enc.conv1_stride, enc.conv1_padding) == spec.conv1
  assert tuple(enc.widths) == spec.widths and enc.groups == spec.groups
  assert (enc.fc_width, enc.num_classes) == (spec.fc_width, spec.num_classes)
  size, alpha, beta, k = spec.lrn
  assert enc.lrn.to_dict() == dict(size=size, alpha=alpha, beta=beta, k=k)
  assert ported.source["format"] == "caffemodel"
  assert ("V1" in ported.source["layer_format"]) == legacy
  assert_taps_match(ported.encoder, ported.params, spec, weights)


def test_deploy_net_with_transposed_fc_weights(tmp_path):
  """A deploy-style net (no data/loss layers, a softmax at the end) whose fc
  weights are stored [in, out] with InnerProduct's transpose flag."""
  spec = reference.Spec(arch="caffenet", **SMALL)
  weights = reference.random_caffe_weights(spec, seed=5)
  path = write_caffemodel(tmp_path / "net.caffemodel", spec, weights,
                          legacy=False, legacy_dims=False,
                          with_training_layers=False, fc_transpose=True)
  ported = caffe.convert_file(str(path), dict(input_size=spec.input_size))
  assert_taps_match(ported.encoder, ported.params, spec, weights)


def test_reader_maps_legacy_types_and_reads_unpacked_data(tmp_path):
  rng = np.random.default_rng(0)
  w, b = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal(4)
  layers = [dict(name="c", type="Convolution", blobs=[w, b],
                 conv=dict(num_output=4, kernel_size=[2], group=1)),
            dict(name="r", type="ReLU"), dict(name="n", type="LRN",
                                              lrn=dict(local_size=3, k=2.0)),
            dict(name="p", type="Pooling", pool=dict(pool=0, kernel_size=3))]
  legacy = caffemodel.parse_net(writer.net_bytes(layers, legacy=True,
                                                 legacy_dims=True))
  current = caffemodel.parse_net(writer.net_bytes(layers, legacy=False,
                                                  legacy_dims=False))
  for net in (legacy, current):
    assert [(l.name, l.type) for l in net.layers] == [
        ("c", "Convolution"), ("r", "ReLU"), ("n", "LRN"), ("p", "Pooling")]
    np.testing.assert_array_equal(net.layers[0].blobs[0].reshape(w.shape),
                                  w.astype(np.float32))
    lrn = net.layers[2].param("lrn_param")
    assert (lrn["local_size"], lrn["k"], lrn["alpha"]) == (3, 2.0, 1.0)
    assert net.layers[0].param("convolution_param")["kernel_size"] == [2]
  assert legacy.legacy and not current.legacy
  assert legacy.layers[0].blobs[1].shape == (1, 1, 1, 4)  # Legacy 4-D dims.
  assert current.layers[0].blobs[1].shape == (4,)
  unpacked = caffemodel.parse_net(writer.unpacked_net_bytes(layers))
  np.testing.assert_array_equal(unpacked.layers[0].blobs[0],
                                w.astype(np.float32))
  np.testing.assert_array_equal(unpacked.layers[0].blobs[1],
                                b.astype(np.float32))


def small_file(tmp_path, **kwargs):
  spec = reference.Spec(**SMALL)
  weights = reference.random_caffe_weights(spec)
  return write_caffemodel(tmp_path / "net.caffemodel", spec, weights,
                          legacy=False, legacy_dims=False, **kwargs)


@pytest.mark.parametrize("cut", [0.999, 0.5, 0.01])
def test_truncated_file_is_refused(tmp_path, cut):
  data = small_file(tmp_path).read_bytes()
  path = tmp_path / "cut.caffemodel"
  path.write_bytes(data[:int(len(data) * cut)])
  with pytest.raises(PortError, match="damaged|truncated"):
    caffe.convert_file(str(path), dict(input_size=48))


def test_garbage_is_refused(tmp_path):
  path = tmp_path / "garbage.caffemodel"
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  with pytest.raises(PortError):
    caffe.convert_file(str(path), {})
  assert not caffemodel.looks_like_net(_renamed(path, "garbage.bin"))


def _renamed(path, name):
  target = path.with_name(name)
  path.rename(target)
  return target


def test_blob_data_size_differing_from_its_shape_is_refused(tmp_path):
  net = writer.CLASSES["NetParameter"]()
  layer = net.layer.add(name="conv1", type="Convolution")
  blob = layer.blobs.add()
  blob.shape.dim.extend([8, 3, 5, 5])
  blob.data.extend([0.5] * 100)  # 600 declared.
  path = tmp_path / "bad.caffemodel"
  path.write_bytes(net.SerializeToString())
  with pytest.raises(PortError, match=r"shape \(8, 3, 5, 5\).*600.*100"):
    caffemodel.read_net(path)


def test_blob_shape_not_fitting_the_layer_is_refused(tmp_path):
  spec = reference.Spec(**SMALL)
  weights = reference.random_caffe_weights(spec)
  w, b = weights["conv2"]
  weights["conv2"] = (np.concatenate([w, w], axis=1), b)  # Ignores groups.
  path = write_caffemodel(tmp_path / "net.caffemodel", spec, weights,
                          legacy=True, legacy_dims=True)
  with pytest.raises(PortError, match="conv2.*expected"):
    caffe.convert_file(str(path), dict(input_size=48))


def test_wrong_input_size_names_the_sizes_that_fit(tmp_path):
  path = small_file(tmp_path)  # Written for 48x48 inputs.
  with pytest.raises(PortError, match=r"--input_size (\d+)") as error:
    caffe.convert_file(str(path), dict(input_size=64))
  suggested = int(re.search(r"--input_size (\d+)\.", str(error.value))[1])
  assert caffe.convert_file(str(path), dict(input_size=suggested))


def test_arch_option_must_agree_with_the_file(tmp_path):
  path = small_file(tmp_path)  # caffenet order.
  with pytest.raises(PortError, match="caffenet.*pool before norm"):
    caffe.convert_file(str(path), dict(input_size=48, arch="alexnet"))
  ported = caffe.convert_file(str(path), dict(input_size=48, arch="caffenet"))
  assert ported.encoder.arch == "caffenet"


def test_unsupported_layers_and_parameters_are_refused(tmp_path):
  spec = reference.Spec(**SMALL)
  weights = reference.random_caffe_weights(spec)
  layers = writer.alexnet_layers(weights, arch="caffenet", conv1=spec.conv1,
                                 groups=2, lrn=spec.lrn)
  def refused(layers, match):
    path = tmp_path / "x.caffemodel"
    path.write_bytes(writer.net_bytes(layers, legacy=False, legacy_dims=False))
    with pytest.raises(PortError, match=match):
      caffe.convert_file(str(path), dict(input_size=48))

  extra = [dict(l) for l in layers]
  extra.insert(3, dict(name="bn1", type="BatchNorm"))
  refused(extra, "'bn1'.*BatchNorm")
  ave = [dict(l, pool=dict(pool=1, kernel_size=3, stride=2))
         if l["name"] == "pool1" else l for l in layers]
  refused(ave, "pool1.*AVE")
  within = [dict(l, lrn=dict(local_size=3, norm_region=1))
            if l["name"] == "norm2" else l for l in layers]
  refused(within, "norm2.*WITHIN_CHANNEL")
  conv3 = [dict(l, conv=dict(l["conv"], group=2))
           if l["name"] == "conv3" else l for l in layers]
  refused(conv3, "conv3.*group")


def test_sniff_recognises_caffemodels_only(tmp_path):
  path = _renamed(small_file(tmp_path), "model.bin")
  assert caffemodel.looks_like_net(path)
  npy = tmp_path / "a.npy"
  np.save(npy, np.zeros(3))
  assert not caffemodel.looks_like_net(npy)
