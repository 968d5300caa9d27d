"""The analysis studies end to end on tiny trained inverters, and the pieces
they are built from (shift estimation, class predictions, sampling).

The inverters (conv1, fc8, fc8_top5 of the `test` preset) are trained once
per session by tiny_inverters.py; every study reads the same 8 images that
their training evaluation used, so the unperturbed errors must equal the
ones in each workdir's eval/metrics.json.
"""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import analysis as analysis_config
from inverter import presets
from inverter.models import encoders
from conftest import REPO_ROOT
from inverter.analysis import (class_references, classes, color_position,
                               common, measures, run_study, sample)
import tiny_inverters

ALL = ("conv1", "fc8", "fc8_top5")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return tiny_inverters.trained(tmp_path_factory)


def study_config(study, tiny, names=ALL):
  c = analysis_config.get_config(study)
  c.inverters = tuple(tiny[n] for n in names)
  c.num_images = 8
  c.batch_size = 8
  c.num_figure_images = 2
  c.interpolate.num_pairs = 2
  c.interpolate.steps = 4
  c.sample.num_samples = 3
  c.color_position.num_images = 2
  c.color_position.shifts = (0.125,)
  return c


def eval_error(path):
  return json.loads((open(os.path.join(path, "eval", "metrics.json")).read())
                    )["normalized_error"]


def check_outputs(out, results, num_rows):
  """results.json holds what run_study returned; the table has a row per
  entry in Markdown and CSV; every figure is a readable PNG."""
  saved = json.loads((out / "results.json").read_text())
  assert saved["study"] == results["study"]
  with open(out / "table.csv") as f:
    rows = list(csv.reader(f))
  assert len(rows) == 1 + num_rows
  assert (out / "table.md").read_text().count("\n| ") == num_rows + 1
  for name in saved["figures"]:
    with Image.open(out / name) as image:
      assert image.mode == "RGB" and min(image.size) >= 96
  return saved


def test_layers_reports_each_inverters_error_on_the_same_images(tiny,
                                                                tmp_path):
  results = run_study(study_config("layers", tiny), str(tmp_path))
  saved = check_outputs(tmp_path / "layers", results, 3)
  by_label = {e["label"]: e for e in saved["inverters"]}
  assert list(by_label) == list(ALL)  # depth order, unique labels
  for name in ALL:
    assert by_label[name]["normalized_error"] == pytest.approx(
        eval_error(tiny[name]), rel=1e-5)
    assert by_label[name]["num_images"] == 8
  assert by_label["fc8_top5"]["feature_transform"] == "top5"
  with Image.open(tmp_path / "layers" / "reconstructions.png") as image:
    grid_w, grid_h = image.size
  # 2 figure images x (original + 3 inverters), 96-pixel cells.
  assert grid_w > 4 * 96 > 3 * 96 and 2 * 96 < grid_h < 3 * 96 + 40


def test_perturb_compares_each_perturbation_with_the_clean_error(tiny,
                                                                 tmp_path):
  config = study_config("perturb", tiny, ("conv1", "fc8"))
  results = run_study(config, str(tmp_path))
  saved = check_outputs(tmp_path / "perturb", results, 2)
  assert saved["perturbations"][0] == "none"
  for entry in saved["inverters"]:
    per = entry["perturbations"]
    assert set(per) == {"none", *config.perturb.perturbations}
    assert per["none"]["normalized_error"] == pytest.approx(
        eval_error(entry["path"]), rel=1e-5)
    assert per["none"]["relative_to_unperturbed"] == 1
    assert per["none"]["mean_relative_feature_change"] == 0
    for spec in ("binarize", "dropout:0.5", "noise:0"):
      assert per[spec]["mean_relative_feature_change"] > 0.1
      assert per[spec]["relative_to_unperturbed"] == pytest.approx(
          per[spec]["normalized_error"] / per["none"]["normalized_error"])
    # Noise at 0 dB moves the features by about their own norm.
    assert per["noise:0"]["mean_relative_feature_change"] == pytest.approx(
        1.0, abs=0.25)
  assert {"perturb_conv1.png", "perturb_fc8.png"} <= set(saved["figures"])
  # The on/off pattern binarization keeps: the fraction of entries above 0
  # of the same 8 images' features.
  for inv, entry in zip(common.load_inverters(config), saved["inverters"]):
    feats = np.concatenate([np.asarray(inv.encode(x))[mask]
                            for x, mask in common.batches(inv, config)])
    assert entry["active_fraction"] == pytest.approx(
        float((feats.reshape(len(feats), -1) > 0).mean()))
  # conv1 is a ReLU output (entries >= 0, some 0); fc8 logits take both signs.
  assert 0 < saved["inverters"][0]["active_fraction"] < 1
  assert 0 < saved["inverters"][1]["active_fraction"] < 1
  assert "| entries > 0 |" in (tmp_path / "perturb" / "table.md").read_text()


def test_interpolate_decodes_paths_between_pairs(tiny, tmp_path):
  results = run_study(study_config("interpolate", tiny, ("conv1", "fc8")),
                      str(tmp_path))
  saved = check_outputs(tmp_path / "interpolate", results, 2)
  assert saved["alphas"] == [0.0, 1 / 3, 2 / 3, 1.0]
  assert saved["pairs"] == [[0, 1], [2, 3]]
  for entry in saved["inverters"]:
    assert len(entry["largest_step_fraction"]) == 2
    # Three steps: the largest is at least a third of the path, at most all.
    assert all(1 / 3 - 1e-6 <= f <= 1 for f in entry["largest_step_fraction"])
  with Image.open(tmp_path / "interpolate" / "interpolate_fc8.png") as image:
    assert image.size[0] > 6 * 96  # A, 4 steps, B


def test_sample_decodes_samples_and_names_their_top5_classes(tiny, tmp_path,
                                                              capsys):
  results = run_study(study_config("sample", tiny, ("conv1", "fc8")),
                      str(tmp_path))
  saved = check_outputs(tmp_path / "sample", results, 2)
  conv1, fc8 = saved["inverters"]
  assert "top5" not in conv1  # no classes from a conv layer
  assert len(fc8["top5"]) == 3
  for top in fc8["top5"]:
    probs = [c["probability"] for c in top]
    assert len(top) == 5 and probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1 + 1e-6
    # No names are known for this 10-class test encoder: indices it is.
    assert all(c["name"] == f"class {c['index']}" for c in top)
  printed = capsys.readouterr().out
  assert "top-5 classes of fc8 samples" in printed and "sample 2:" in printed
  assert conv1["feature_dim"] == int(np.prod(
      common.load_inverters(study_config("sample", tiny, ("conv1",)))[0]
      .feature_shape))

  # The Gaussian option truncates post-ReLU features (conv1's norm1) at 0.
  config = study_config("sample", tiny, ("conv1",))
  config.sample.method = "gaussian"
  gaussian = run_study(config, str(tmp_path / "g"))["inverters"][0]
  assert gaussian["truncated_at_zero"] and gaussian["zero_fraction_samples"] > 0


def test_topk_compares_the_top5_inverter_on_the_same_input(tiny, tmp_path):
  results = run_study(study_config("topk", tiny, ("fc8", "fc8_top5")),
                      str(tmp_path))
  saved = check_outputs(tmp_path / "topk", results, 4)
  rows = [(r["input"], r["inverter"]) for r in saved["results"]]
  assert rows == [("all activations", "fc8"), ("top-5 only", "fc8"),
                  ("all but top-5", "fc8"), ("top-5 only", "fc8_top5")]
  assert saved["results"][0]["normalized_error"] == pytest.approx(
      eval_error(tiny["fc8"]), rel=1e-5)
  # The top5 inverter sees exactly top-5-only input in training and eval.
  assert saved["results"][3]["normalized_error"] == pytest.approx(
      eval_error(tiny["fc8_top5"]), rel=1e-5)
  gain = saved["top_k_inverter_improvement"]
  general, trained = (saved["results"][1]["normalized_error"],
                      saved["results"][3]["normalized_error"])
  assert gain["relative"] == pytest.approx((general - trained) / general)
  verdict = "lower (better)" if trained < general else "higher (worse)"
  assert verdict in (tmp_path / "topk" / "table.md").read_text()

  # Without the top5 inverter the study still runs and says what to train.
  alone = run_study(study_config("topk", tiny, ("fc8",)), str(tmp_path / "a"))
  assert len(alone["results"]) == 3
  assert "configs/fc8_top5.py" in " ".join(alone["notes"])


def test_color_position_separates_layout_from_detail(tiny, tmp_path):
  results = run_study(study_config("color_position", tiny, ("conv1", "fc8")),
                      str(tmp_path))
  saved = check_outputs(tmp_path / "color_position", results, 2)
  for entry in saved["inverters"]:
    assert entry["full"]["normalized_error"] == pytest.approx(
        eval_error(entry["path"]), rel=1e-5)
    assert entry["blurred_over_full"] == pytest.approx(
        entry["blurred"]["normalized_error"]
        / entry["full"]["normalized_error"])
    position = entry["position"]
    assert position["shifts_px"] == [[0, 4], [0, -4], [4, 0], [-4, 0]]
    # The estimator recovers the inputs' own shifts exactly.
    assert position["estimator_on_inputs"] == {"follow_ratio": 1.0,
                                               "shift_error_px": 0.0}


def write_two_colour_classes(root, per_class=6, seed=0):
  """An ImageFolder ROOT/{train,test}/{red,blue}/: each class one picture
  (its colour, split by a vertical or a horizontal edge) plus a little noise,
  so that its class mean image predicts any of its images almost exactly and
  the overall mean does not."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:40, :48]
  base = {"red": np.array([180, 40, 40]) + 60.0 * (x >= 24)[..., None],
          "blue": np.array([30, 60, 190]) + 60.0 * (y >= 20)[..., None]}
  for split in ("train", "test"):
    for name, picture in base.items():
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(per_class):
        pixels = picture + rng.normal(0, 4, (40, 48, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / f"{i}.png")


def test_color_position_measures_against_class_only_references(tiny,
                                                               tmp_path):
  write_two_colour_classes(tmp_path / "classes")
  config = study_config("color_position", tiny, ("conv1", "fc8"))
  config.data.source = f"folder:{tmp_path / 'classes'}"
  config.data.split = "test"
  config.num_images = 12
  config.batch_size = 6
  results = run_study(config, str(tmp_path / "out"))
  saved = check_outputs(tmp_path / "out" / "color_position", results, 4)
  (refs,) = saved["references"]
  error = lambda errs, kind: errs[kind]["normalized_error"]
  for kind in ("full", "blurred", "edges"):
    # Knowing the class predicts these images far better than not knowing.
    assert error(refs["class_mean"], kind) < 0.25 * error(
        refs["dataset_mean"], kind)
  for entry in saved["inverters"]:
    assert entry["over_class_mean"]["blurred"] == pytest.approx(
        error(entry, "blurred") / error(refs["class_mean"], "blurred"))
    assert entry["over_class_mean"]["edges"] == pytest.approx(
        error(entry, "edges") / error(refs["class_mean"], "edges"))
  with open(tmp_path / "out" / "color_position" / "table.csv") as f:
    rows = {row[0]: row for row in csv.reader(f)}
  assert float(rows["reference: mean image of the true class"][5]) == 1.0
  assert float(rows["reference: data set mean image"][5]) > 4.0


def test_class_references_are_the_mean_training_image_of_each_class(
    tiny, tmp_path):
  write_two_colour_classes(tmp_path / "classes", per_class=3, seed=1)
  config = study_config("color_position", tiny, ("conv1",))
  config.data.source = f"folder:{tmp_path / 'classes'}"
  config.data.split = "test"
  config.batch_size = 4
  inv = common.load_inverters(config)[0]
  refs = class_references.compute(inv, config, edge_size=8)
  assert list(refs.counts) == [3, 3]  # blue, red: sorted class names
  for index, name in enumerate(("blue", "red")):
    photos = [np.asarray(Image.open(p)) for p in
              sorted((tmp_path / "classes" / "train" / name).iterdir())]
    targets = inv.target(inv.preprocess(photos))
    images, edges = refs.class_means(np.array([index]))
    np.testing.assert_allclose(images[0], targets.mean(0), atol=1e-3)
    np.testing.assert_allclose(
        edges[0], measures.edge_map(targets, 8).mean(0), atol=1e-3)
  overall, _ = refs.overall_means()
  np.testing.assert_allclose(overall[0], refs.class_means(
      np.array([0, 1]))[0].mean(0), atol=1e-3)


def test_edge_maps_find_contours_and_ignore_constant_offsets():
  step = np.zeros((1, 32, 32, 3), np.float32)
  step[:, :, 16:] = 100.0
  edges = measures.edge_map(step, 16)[0, :, :, 0]
  assert edges.shape == (16, 16)
  assert set(np.argmax(edges, axis=1)) <= {7, 8}  # the step, in every row
  assert np.abs(edges[:, :5]).max() < 1e-3 and edges[:, 7:9].min() > 50
  np.testing.assert_allclose(measures.edge_map(step - 60.0, 16),
                             measures.edge_map(step, 16), atol=1e-3)
  assert np.abs(measures.edge_map(np.full_like(step, 7.0), 16)).max() < 1e-3


def test_optimization_compares_three_methods_on_the_same_images(tiny,
                                                                tmp_path):
  config = study_config("optimization", tiny, ("conv1", "fc8"))
  config.optimization.iterations = 4
  config.optimization.final_iterations = 2
  results = run_study(config, str(tmp_path))
  saved = check_outputs(tmp_path / "optimization", results, 6)
  for entry in saved["inverters"]:
    by_method = {m["method"]: m for m in entry["methods"]}
    assert list(by_method) == ["decoder", "optimize", "hybrid"]
    # The decoder row is the inverter's own evaluation, on the same images.
    assert by_method["decoder"]["normalized_error"] == pytest.approx(
        eval_error(entry["path"]), rel=1e-5)
    assert by_method["decoder"]["time_over_decoder"] == 1.0
    for m in entry["methods"]:
      assert m["num_images"] == 8 and m["seconds_per_image"] > 0
      assert 0 <= m["feature_error"] < 10
  with Image.open(tmp_path / "optimization" / "optimization.png") as image:
    # 2 inverters x 2 images, columns input | decoder | M&V | hybrid.
    assert image.size[0] > 4 * 96 and image.size[1] > 4 * 96


@pytest.mark.parametrize("override,message", [
    ("--config.optimization.methods=decoder,gradient",
     "config.optimization.methods"),
    ("--config.optimization.iterations=0", "iterations=0"),
    (None, "config.inverters is empty"),
])
def test_bad_optimization_options_stop_before_any_work(tiny, tmp_path,
                                                       override, message):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  given = [f"--config.inverters={tiny['conv1']}", override] if override else []
  proc = subprocess.run(
      [sys.executable, "-m", "inverter.analysis",
       "--config=configs/analysis.py:optimization", *given,
       f"--workdir={tmp_path}"], cwd=REPO_ROOT, env=env, capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert message in proc.stderr and "Traceback" not in proc.stderr
  assert "Restoring the inverter" not in proc.stderr
  assert not (tmp_path / "optimization").exists()


def test_a_study_without_the_layer_it_needs_says_what_to_train(tiny):
  with pytest.raises(common.MissingInverterError,
                     match=r"(?s)fc8 .*configs/fc8\.py"):
    run_study(study_config("topk", tiny, ("conv1",)), "/nonexistent")


def test_cli_exits_with_the_training_command_for_a_missing_layer(tiny,
                                                                 tmp_path):
  pattern = os.path.join(os.path.dirname(tiny["conv1"]), "conv*")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  proc = subprocess.run(
      [sys.executable, "-m", "inverter.analysis",
       "--config=configs/analysis.py:topk", f"--config.inverters={pattern}",
       f"--workdir={tmp_path}"], cwd=REPO_ROOT, env=env, capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "configs/fc8.py" in proc.stderr and tiny["conv1"] in proc.stderr


def test_cli_takes_inverters_as_a_comma_separated_list(tiny, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="")
  proc = subprocess.run(
      [sys.executable, "-m", "inverter.analysis",
       "--config=configs/analysis.py:layers",
       f"--config.inverters={tiny['fc8']},{tiny['conv1']}",
       "--config.num_images=8", "--config.batch_size=8",
       "--config.num_figure_images=2", f"--workdir={tmp_path}"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.loads((tmp_path / "layers" / "results.json").read_text())
  assert [e["label"] for e in saved["inverters"]] == ["conv1", "fc8"]


# ------------------------------------------------------------------ pieces


def test_shift_estimate_recovers_translations_of_an_image():
  rng = np.random.default_rng(0)
  smooth = np.asarray(jax.image.resize(rng.normal(size=(8, 8, 3)),
                                       (48, 48, 3), "cubic"))
  image = smooth[None].astype(np.float32)
  for dy, dx in [(0, 5), (0, -3), (4, 0), (-6, 2)]:
    moved = color_position.translate(image, dy, dx)
    np.testing.assert_array_equal(moved[0, 10 + dy:30 + dy, 10 + dx:30 + dx],
                                  image[0, 10:30, 10:30])
    assert color_position.estimate_shift(image[0], moved[0]) == (dy, dx)


def test_class_probabilities_continue_the_encoder_from_its_tap(tiny):
  inv = common.load_inverters(study_config("layers", tiny, ("fc8",)))[0]
  x = np.random.default_rng(0).normal(0, 5, size=(4, 32, 32, 3)).astype(
      np.float32)
  taps = jax.jit(lambda p, x: inv.exp.encoder.apply({"params": p}, x))(
      inv.exp.encoder_params, x)
  for tap in ("relu6", "fc7", "fc8"):
    np.testing.assert_allclose(
        classes.tail(inv.exp.encoder_params, tap, np.asarray(taps[tap])),
        np.asarray(taps["prob"]), rtol=1e-4, atol=1e-6)
  logits = np.asarray(taps["fc8"], np.float64)
  top = classes.top_k(classes.tail(inv.exp.encoder_params, "fc8", logits),
                      None)
  for row, t in zip(logits, top):
    assert [c["index"] for c in t] == list(np.argsort(-row)[:5])


@pytest.mark.parametrize("arch", ["resnet50", "googlenet"])
def test_class_probabilities_of_resnet_and_googlenet_start_at_pool5(arch):
  cfg = presets.get_config("fc6", f"arch={arch},test").encoder
  model = encoders.from_config(cfg)
  x = np.random.default_rng(0).normal(0, 5, size=(4, 32, 32, 3)).astype(
      np.float32)
  params = model.init(jax.random.key(0), x)["params"]
  taps = model.apply({"params": params}, x)
  np.testing.assert_allclose(
      classes.tail(params, "pool5", np.asarray(taps["pool5"]), arch),
      np.asarray(taps["prob"]), rtol=1e-4, atol=1e-6)


def test_class_names_come_from_local_sources(tmp_path):
  names = classes.imagenet_names()
  assert len(names) == 1000 and names[:2] == ["tench", "goldfish"]
  for label in ("cat", "airplane", "dog"):
    (tmp_path / "train" / label).mkdir(parents=True)
  assert classes.dataset_names(f"folder:{tmp_path}", None, 3) == [
      "airplane", "cat", "dog"]
  assert classes.dataset_names(f"folder:{tmp_path}", None, 10) is None
  # WordNet ids of ImageNet classes (Tiny ImageNet's labels) read as names.
  assert classes.readable(["n01443537", "n01440764", "cat"]) == [
      "goldfish", "tench", "cat"]


def test_samples_follow_the_fitted_distribution():
  rng = np.random.default_rng(0)
  fit = rng.normal(size=(40, 3)) @ np.array([[2.0, 0, 0], [1.5, 0.5, 0],
                                              [0, 0, 1.0]])
  marginal, _ = sample.fit_and_sample(fit, "marginal", 50, rng)
  for d in range(3):  # every value of a dimension is one it took in the fit
    assert set(marginal[:, d]) <= set(fit[:, d].astype(np.float32))
  gaussian, truncated = sample.fit_and_sample(fit, "gaussian", 40_000, rng)
  assert not truncated  # the fit has negative values
  np.testing.assert_allclose(np.cov(gaussian, rowvar=False),
                             np.cov(fit, rowvar=False), atol=0.15)
  relu, truncated = sample.fit_and_sample(np.maximum(fit, 0), "gaussian", 100,
                                          rng)
  assert truncated and relu.min() == 0


def test_repeated_inverter_names_are_told_apart_by_their_workdirs():
  labels = common.unique_labels(
      ["conv2", "conv2", "fc6", "conv2"],
      ["/r/inverters/conv2", "/r/autoencoders/conv2/", "/r/inverters/fc6",
       "/r/scratch/conv2"])
  assert labels == ["conv2@inverters", "conv2@autoencoders", "fc6",
                    "conv2@scratch"]
  # Workdirs named apart already need only their own name.
  assert common.unique_labels(["fc6", "fc6"], ["/a/run1", "/a/run2"]) == [
      "fc6@run1", "fc6@run2"]
