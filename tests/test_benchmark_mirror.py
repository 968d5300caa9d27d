"""The PyTorch copy of the inverter step in benchmarks/gpu_train_step.py,
which benchmarks/cpu_train_step.py times against JAX, computes the same step
as the project's JAX code."""

import pathlib
import sys

import pytest

pytest.importorskip("torch")

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import cpu_train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
import gpu_train_step as mirror  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_conv_layer_mirror_matches_jax():
  # conv2 of the test preset at 36x36 with conv1 unpadded: 8x8 features,
  # two up-convolutions to 32x32, so the loss compares with the input
  # resized (antialiased) as at full size (13x13 -> 208 for 227).
  spec = "configs/conv2.py:test"
  overrides = {"encoder.input_size": 36, "encoder.conv1_padding": 0}
  net = mirror.describe_net(mirror.make_config(spec, "float32", overrides))
  assert net["feature_shape"] == [8, 8, 16]
  assert net["decoder"]["conv_channels"] == [16]
  assert net["decoder"]["output_size"] == 32
  out = mirror.check_worker(dict(config=spec, net=net, overrides=overrides,
                                 check_batch=4, compare_train=False))
  assert out["recon_rel"] < mirror.RECON_REL_TOL, out
  assert out["grad_rel"] < mirror.GRAD_REL_TOL, out
  assert out["loss0_rel"] < mirror.LOSS_REL_TOL, out
  assert out["loss1_rel"] < mirror.STEP_REL_TOL, out
  assert out["ok"], out


@pytest.mark.parametrize(
    "spec", sorted({s for rows in cpu_train_step.ROW_GROUPS.values()
                    for s, _ in rows}))
def test_mirror_has_the_parameters_of_every_benchmark_row(spec):
  net = mirror.describe_net(mirror.make_config(spec, "float32"))
  encoder, decoder = mirror.torch_modules(net)
  jax_params = net["jax_params"]
  assert sum(p.numel() for p in encoder.parameters()) == (
      jax_params["encoder_to_tap"])
  assert sum(p.numel() for p in decoder.parameters()) == jax_params["decoder"]


def test_rows_and_peak():
  rows = cpu_train_step.parse_rows("demo,configs/fc7.py:demo@8")
  assert rows == [("demo", "configs/conv2.py:demo", None),
                  ("demo", "configs/fc6.py:demo", None),
                  ("custom", "configs/fc7.py:demo", 8)]
  with pytest.raises(SystemExit):
    cpu_train_step.parse_rows("nonsense")
  assert cpu_train_step.cpu_peak(123.0)["peak_gflops"] == 123.0
