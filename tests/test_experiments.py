"""The resumable reproduction driver, its stages and its report."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from inverter import plots, presets
from inverter.experiments import architectures, report, reproduction, stages
from inverter.models import encoders

from conftest import REPO_ROOT


def build(root: pathlib.Path, dataset: str = "cifar10", **plan):
  source = "folder:/data/cifar10" if dataset == "cifar10" else dataset
  return reproduction.build(reproduction.Plan(
      dataset=dataset, root=root, source=source, publish=root / "publish",
      analysis_images=100, **plan))


def last_step(layer: str = "fc6") -> int:
  return reproduction.num_train_steps("cifar10", layer)


def test_the_experiment_runs_every_stage_the_issue_lists_in_order(tmp_path):
  names = [s.name for s in build(tmp_path)]
  assert names[0] == "encoder" and names[-1] == "report"
  assert [n for n in names if n.startswith("inverter_")] == [
      f"inverter_{l}" for l in (*reproduction.LAYERS, "fc8_top5")]
  for kind in ("autoencoder", "scratch", "random"):
    assert [n for n in names if n.startswith(kind + "_")] == [
        f"{kind}_{l}" for l in reproduction.BASELINE_LAYERS]
  assert [n for n in names if n.startswith("analysis_")] == [
      *(f"analysis_{s}" for s in reproduction.STUDIES), "analysis_baselines"]
  # The studies need only the inverters; the report comes last.
  assert names.index("analysis_layers") > names.index("inverter_fc8_top5")
  assert names[-2:] == ["analysis_baselines", "report"]


def test_the_baselines_study_compares_every_kind_at_the_baseline_layers(
    tmp_path):
  stage = {s.name: s for s in build(tmp_path)}["analysis_baselines"]
  inverters = next(a for a in stage.command
                   if a.startswith("--config.inverters="))
  listed = inverters.split("=", 1)[1].split(",")
  assert listed == [
      *(str(tmp_path / "inverters" / layer)
        for layer in reproduction.BASELINE_LAYERS),
      *(str(tmp_path / kind / "*")
        for kind in ("autoencoders", "scratch", "random_encoder"))]
  assert "--config=configs/analysis.py:layers" in stage.command


def test_stage_commands_are_the_published_command_lines(tmp_path):
  by_name = {s.name: s for s in build(tmp_path)}
  encoder_dir = tmp_path / "encoder" / "encoder"
  assert by_name["inverter_conv3"].shell() == (
      "python -m inverter.main --config=configs/conv3.py:cifar10,"
      f"encoder={encoder_dir},source=folder:/data/cifar10"
      f" --workdir={tmp_path / 'inverters' / 'conv3'}")
  assert by_name["autoencoder_fc6"].command[-1] == (
      "--config.train_encoder=True")
  assert ",encoder=" not in by_name["scratch_fc6"].shell()
  assert "train_encoder" not in by_name["random_fc6"].shell()
  assert "--config.num_images=100" in by_name["analysis_topk"].command
  # The optimisation study takes its config's (smaller) default.
  assert not any(a.startswith("--config.num_images")
                 for a in by_name["analysis_optimization"].command)
  assert by_name["report"].done is None  # Rebuilt at every run.


def test_one_driver_takes_the_data_set_as_an_argument(tmp_path):
  cifar = {s.name: s for s in build(tmp_path / "c")}
  tiny = {s.name: s for s in build(tmp_path / "t", "tiny_imagenet",
                                   data_dir="/data/tfds")}
  assert list(cifar) == list(tiny)
  encoder_dir = tmp_path / "t" / "encoder" / "encoder"
  assert tiny["inverter_fc8"].shell() == (
      "python -m inverter.main --config=configs/fc8.py:tiny_imagenet,"
      f"encoder={encoder_dir},source=tiny_imagenet"
      f" --workdir={tmp_path / 't' / 'inverters' / 'fc8'}"
      " --config.data.data_dir=/data/tfds")
  assert tiny["encoder"].command[3] == (
      "--config=configs/encoders/tiny_imagenet.py:source=tiny_imagenet")
  assert "--dataset=tiny_imagenet" in tiny["report"].command
  assert reproduction.num_train_steps("tiny_imagenet", "fc8_top5") == (
      reproduction.num_train_steps("tiny_imagenet", "fc8"))


def test_another_family_is_an_argument_and_its_plan_can_be_trimmed(tmp_path):
  plan = dict(arch="resnet50", layers=("conv1", "conv2", "fc6", "fc8"),
              studies=("layers", "perturb"), baseline_kinds=("random",),
              baseline_layers=("conv2", "fc8"), inverter_steps=300)
  by_name = {s.name: s for s in build(tmp_path, "tiny_imagenet", **plan)}
  assert list(by_name) == [
      "encoder", "inverter_conv1", "inverter_conv2", "inverter_fc6",
      "inverter_fc8", "analysis_layers", "analysis_perturb", "random_conv2",
      "random_fc8", "analysis_baselines", "report"]
  assert by_name["encoder"].command[3] == (
      "--config=configs/encoders/tiny_imagenet.py:source=tiny_imagenet,"
      "arch=resnet50")
  # A random encoder is built from the config; a trained one brings its
  # architecture in its metadata.
  assert "--config=configs/fc8.py:tiny_imagenet,arch=resnet50," in (
      by_name["random_fc8"].shell())
  assert "arch=" not in by_name["inverter_fc8"].shell()
  assert by_name["inverter_conv1"].command[-1] == (
      "--config.num_train_steps=300")
  # Done at the plan's steps, not the preset's.
  workdir = tmp_path / "inverters" / "conv1"
  (workdir / "eval").mkdir(parents=True)
  (workdir / "eval" / "metrics.json").write_text(json.dumps({"step": 300}))
  assert by_name["inverter_conv1"].done()
  baselines = next(a for a in by_name["analysis_baselines"].command
                   if a.startswith("--config.inverters="))
  assert baselines == "--config.inverters=" + ",".join([
      str(tmp_path / "inverters" / "conv2"),
      str(tmp_path / "inverters" / "fc8"),
      str(tmp_path / "random_encoder" / "*")])
  unpublished = reproduction.Plan(dataset="tiny_imagenet", root=tmp_path,
                                  source="tiny_imagenet", arch="vgg16")
  assert unpublished.publish_dir == (
      REPO_ROOT / "docs" / "results" / "architectures" / "vgg16")
  assert "inverter_fc7" not in {s.name for s in build(tmp_path, "tiny_imagenet",
                                                      arch="resnet50")}


def test_a_run_started_with_other_steps_is_not_resumed_under_new_ones(
    tmp_path):
  stage = {s.name: s for s in build(tmp_path, inverter_steps=300)}[
      "inverter_fc6"]
  workdir = tmp_path / "inverters" / "fc6"
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(
      {"identity": {}, "config": {"num_train_steps": last_step()}}))
  with pytest.raises(reproduction.PlanError, match=(
      f"started with {last_step()} training steps, this plan asks for 300")):
    stage.done()


@pytest.mark.parametrize("plan, message", [
    (dict(arch="resnet50", layers=("fc7",)), r"layers: \['fc7'\] not among"),
    (dict(studies=("layer",)), r"studies: \['layer'\] not among"),
    (dict(baseline_kinds=("inverter",)),
     r"baseline_kinds: \['inverter'\] not among"),
    (dict(arch="alexnet"), "arch=alexnet has no reduced network"),
    (dict(inverter_steps=0), "inverter_steps must be positive"),
    (dict(layers=("conv1", "conv1")), r"layers: \['conv1'\] given more"),
    (dict(layers=()), "layers is empty"),
    (dict(layers=("conv1", "fc6")),
     r"baseline_layers \['conv2', 'conv5', 'fc8'\] are compared"),
])
def test_a_plan_with_an_unknown_part_is_refused_naming_it(tmp_path, plan,
                                                          message):
  with pytest.raises(reproduction.PlanError, match=message):
    build(tmp_path, "tiny_imagenet", **plan)


def test_an_encoder_of_another_family_is_refused(tmp_path):
  encoder = tmp_path / "encoder"
  encoder.mkdir()
  (encoder / "metadata.json").write_text(json.dumps(
      {"architecture": {"arch": "caffenet"}}))
  build(tmp_path, "tiny_imagenet", encoder=encoder)  # The same family.
  with pytest.raises(reproduction.PlanError,
                     match="is a caffenet, the plan's family is vgg16"):
    build(tmp_path, "tiny_imagenet", encoder=encoder, arch="vgg16")


def test_a_given_encoder_replaces_the_encoder_stage(tmp_path):
  published = tmp_path / "published_encoder"
  by_name = {s.name: s for s in build(tmp_path, encoder=published)}
  assert f"encoder={published}," in by_name["inverter_conv1"].shell()
  assert f"--encoder={published}" in by_name["report"].command
  assert not by_name["encoder"].done()
  published.mkdir()
  (published / "metadata.json").write_text("{}")
  assert by_name["encoder"].done()


def test_a_stage_is_done_when_its_run_reached_the_last_step(tmp_path):
  stage = {s.name: s for s in build(tmp_path)}["inverter_conv1"]
  metrics = tmp_path / "inverters" / "conv1" / "eval" / "metrics.json"
  assert not stage.done()
  metrics.parent.mkdir(parents=True)
  steps = last_step("conv1")
  metrics.write_text(json.dumps({"step": steps - 500}))
  assert not stage.done()  # an interrupted run's eval does not count
  metrics.write_text(json.dumps({"step": steps}))
  assert stage.done()


def test_run_skips_done_stages_records_times_and_stops_at_a_failure(tmp_path):
  marker = tmp_path / "made"
  ok = stages.Stage("make", (stages.PYTHON, "-c",
                             f"open({str(marker)!r}, 'w').write('x')"),
                    done=marker.exists)
  skipped = stages.Stage("skip", ("false",), done=lambda: True)
  broken = stages.Stage("broken", (stages.PYTHON, "-c", "raise SystemExit(3)"),
                        done=lambda: False)
  lines = []
  with pytest.raises(stages.StageFailed, match=r"exit 3.*broken\.log"):
    stages.run([skipped, ok, broken], tmp_path, echo=lines.append)
  assert marker.exists()
  assert "skip: done, skipped" in lines[0]
  record = json.loads((tmp_path / "stages.json").read_text())
  assert list(record) == ["make"] and record["make"]["seconds"] >= 0
  assert record["make"]["command"].startswith("python -c")


def test_a_stage_without_a_done_check_runs_every_time_and_succeeds(tmp_path):
  # Like the report: rebuilt from what exists at every run.
  count = tmp_path / "count"
  stage = stages.Stage(
      "report", (stages.PYTHON, "-c", f"open({str(count)!r}, 'a').write('x')"),
      done=None)
  for _ in range(2):
    stages.run([stage], tmp_path, echo=lambda _: None)
  assert count.read_text() == "xx"
  assert "report" in json.loads((tmp_path / "stages.json").read_text())
  broken = stages.Stage("report", (stages.PYTHON, "-c", "raise SystemExit(4)"),
                        done=None)
  with pytest.raises(stages.StageFailed, match="exit 4"):
    stages.run([broken], tmp_path, echo=lambda _: None)


def test_a_stage_s_time_adds_up_over_its_attempts(tmp_path):
  # The first attempt fails after 0.4 s, the second succeeds after 0.3 s.
  tried, done = tmp_path / "tried", tmp_path / "done"
  script = (f"import os, time; first = not os.path.exists({str(tried)!r})\n"
            f"open({str(tried)!r}, 'a').close()\n"
            "time.sleep(0.4 if first else 0.3)\n"
            f"if not first: open({str(done)!r}, 'w').close()\n"
            "raise SystemExit(1 if first else 0)\n")
  stage = stages.Stage("twice", (stages.PYTHON, "-c", script),
                       done=done.exists)
  with pytest.raises(stages.StageFailed, match="exit 1"):
    stages.run([stage], tmp_path, echo=lambda _: None)
  partial = json.loads((tmp_path / "logs" / "twice.seconds").read_text())
  assert partial["attempts"] == 1 and partial["seconds"] >= 0.4
  lines = []
  stages.run([stage], tmp_path, echo=lines.append)
  assert "attempt 2" in lines[0]
  record = json.loads((tmp_path / "stages.json").read_text())["twice"]
  assert record["attempts"] == 2 and record["seconds"] >= 0.7
  assert not (tmp_path / "logs" / "twice.seconds").exists()


def test_a_running_stage_s_time_is_on_disk_before_it_ends(tmp_path,
                                                         monkeypatch):
  # So a driver killed outright loses at most one heartbeat of time: the
  # stage below exits 0 only once it sees 0.3 s of its own time written down.
  monkeypatch.setattr(stages, "HEARTBEAT_SECONDS", 0.05)
  seconds = tmp_path / "waits.seconds"
  script = ("import json, os, sys, time; deadline = time.time() + 10\n"
            "def so_far():\n"
            f"  try: return json.load(open({str(seconds)!r}))['seconds']\n"
            "  except (OSError, ValueError): return 0\n"
            "while so_far() < 0.3:\n"
            "  time.sleep(0.02)\n"
            "  if time.time() > deadline: sys.exit(9)\n")
  # pylint: disable=protected-access
  code = stages._call([sys.executable, "-c", script], tmp_path / "waits.log",
                      stages._Stopwatch(seconds))
  assert code == 0
  assert json.loads(seconds.read_text())["attempts"] == 1


def test_a_terminated_driver_stops_its_stage_and_keeps_its_time(tmp_path):
  # The stage stands for a trainer: on SIGTERM it "saves" and exits 143.
  saved = tmp_path / "saved"
  trainer = ("import signal, sys, time\n"
             "def stop(*_):\n"
             f"  open({str(saved)!r}, 'w').close(); sys.exit(143)\n"
             "signal.signal(signal.SIGTERM, stop)\n"
             "time.sleep(0.3); print('training', flush=True)\n"
             "time.sleep(60)\n")
  driver = ("import pathlib, signal, sys\n"
            "from inverter.experiments import stages\n"
            "signal.signal(signal.SIGTERM, lambda n, _: sys.exit(128 + n))\n"
            f"stage = stages.Stage('train', (stages.PYTHON, '-c', {trainer!r}),"
            " done=lambda: False)\n"
            f"stages.run([stage], pathlib.Path({str(tmp_path)!r}))\n")
  proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO_ROOT,
                          stdout=subprocess.DEVNULL)
  log = tmp_path / "logs" / "train.log"
  deadline = time.monotonic() + 60
  while not (log.exists() and "training" in log.read_text()):
    assert time.monotonic() < deadline and proc.poll() is None
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=30) == 143
  assert saved.exists()  # The stage was told to stop, and did.
  partial = json.loads((tmp_path / "logs" / "train.seconds").read_text())
  assert partial == {"seconds": partial["seconds"], "attempts": 1}
  assert partial["seconds"] >= 0.3


def test_dry_run_runs_nothing(tmp_path):
  marker = tmp_path / "made"
  stage = stages.Stage("make", ("touch", str(marker)), done=marker.exists)
  lines = []
  stages.run([stage], tmp_path, dry_run=True, echo=lines.append)
  assert not marker.exists() and "would run" in lines[0]


def test_stage_patterns_select_and_unknown_ones_are_named(tmp_path):
  chosen = stages.select(build(tmp_path), "inverter_conv*,report")
  assert [s.name for s in chosen] == [
      *(f"inverter_conv{i}" for i in range(1, 6)), "report"]
  with pytest.raises(stages.UnknownStageError, match="nonsense"):
    stages.select(build(tmp_path), "nonsense")


def test_the_command_line_dry_run_lists_the_stages(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "inverter.experiments", "--dataset=cifar10",
       f"--root={tmp_path}", "--source=folder:/data/cifar10", "--dry-run",
       "--stages=encoder,analysis_*"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "[1/9] encoder: would run" in proc.stdout
  assert "configs/encoders/cifar10.py:source=folder:/data/cifar10" in (
      proc.stdout)
  assert not (tmp_path / "logs").exists()


def test_the_command_line_takes_a_family_and_refuses_a_layer_it_lacks(
    tmp_path):
  def experiments(*flags):
    return subprocess.run(
        [sys.executable, "-m", "inverter.experiments",
         "--dataset=tiny_imagenet", f"--root={tmp_path}", "--dry-run",
         "--arch=torchvision_googlenet", *flags],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  listed = experiments("--layers=conv3,fc8", "--studies=color_position",
                       "--baselines=random", "--baseline_layers=fc8",
                       "--inverter_steps=3000")
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert "[7/7] report: would run" in listed.stdout
  assert ("configs/fc8.py:tiny_imagenet,arch=torchvision_googlenet,"
          "source=tiny_imagenet") in listed.stdout
  refused = experiments("--layers=fc7")
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1].startswith(
      "ERROR: layers: ['fc7'] not among")
  assert not (tmp_path / "logs").exists()


def write_run(workdir: pathlib.Path, errors: dict[int, float],
              pair_distance: float = 100.0,
              final_pair_distance: float | None = None) -> None:
  """A finished run's metrics.json and TensorBoard evaluations: normalized
  errors over `pair_distance`, the last one re-evaluated (metrics.json)
  with `final_pair_distance` (default: the same)."""
  (workdir / "eval").mkdir(parents=True)
  last = max(errors)
  final = final_pair_distance or pair_distance
  l2 = {step: value * pair_distance for step, value in errors.items()}
  (workdir / "eval" / "metrics.json").write_text(json.dumps(
      {"step": last, "normalized_error": l2[last] / final,
       "mean_l2_error": l2[last], "mean_pair_distance": final}))
  writer = tf.summary.create_file_writer(str(workdir))
  with writer.as_default():
    for step, value in errors.items():
      tf.summary.scalar("eval/normalized_error", value, step=step)
      tf.summary.scalar("eval/mean_l2_error", l2[step], step=step)
  writer.close()


def test_curves_use_the_final_evaluation_s_pair_distance(tmp_path):
  # Evaluated during training against pair distance 100, re-evaluated at
  # the end (another image order) against 125: the curve follows the mean
  # L2 error on the final scale, and ends at the table's value.
  last = last_step()
  write_run(tmp_path, {500: 0.8, last: 0.6}, pair_distance=100.0,
            final_pair_distance=125.0)
  steps, values = report.eval_curve(tmp_path)
  assert steps == [500, last]
  assert values == [pytest.approx(80 / 125), pytest.approx(60 / 125)]
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert values[-1] == pytest.approx(metrics["normalized_error"])


def test_report_tables_curves_and_stage_times(tmp_path):
  root, publish = tmp_path / "root", tmp_path / "publish"
  last = last_step()
  write_run(root / "inverters" / "conv1", {500: 0.5, last: 0.3})
  write_run(root / "inverters" / "fc6", {500: 0.8, last: 0.7})
  write_run(root / "random_encoder" / "fc6", {500: 0.9, last: 0.85})
  # A run still training (intermediate evaluations) is left out of the
  # tables, the flattening one included.
  write_run(root / "autoencoders" / "fc6", {500: 0.4, 600: 0.35})
  (root / "stages.json").write_text(json.dumps({
      "inverter_conv1": dict(
          command="python -m inverter.main ...", seconds=90.0,
          finished="2026-11-27T00:00:00+00:00", commit="abc123"),
      "inverter_fc6": dict(
          command="python -m inverter.main ...", seconds=30.0, attempts=2,
          finished="2026-11-27T00:00:00+00:00", commit="def456",
          note="the first sitting was cut short")}))
  report.write("cifar10", root, publish)
  header, rows = report.main_table("cifar10", root)
  assert [r[0] for r in rows] == ["conv1", "fc6"]
  assert rows[1][header.index("fixed random encoder")] == 0.85
  assert rows[0][header.index("fixed random encoder")] is None
  table = (publish / "main.md").read_text()
  assert "| fc6 | 0.7000 |  |  | 0.8500 |" in table
  assert (publish / "main.csv").read_text().splitlines()[1].startswith(
      "conv1,0.3")
  assert report.eval_curve(root / "inverters" / "fc6") == (
      [500, last], [pytest.approx(0.8), pytest.approx(0.7)])
  assert (publish / "curves.png").stat().st_size > 0
  assert not (publish / "encoder").exists()  # none trained yet
  encoder = root / "encoder" / "encoder"
  (encoder / "params").mkdir(parents=True)
  (encoder / "metadata.json").write_text("{}")
  (encoder / "params" / "weights").write_bytes(b"w")
  (root / "encoder" / "eval").mkdir()
  (root / "encoder" / "eval" / "metrics.json").write_text(json.dumps(
      {"top1": 0.5, "top5": 0.75, "num_images": 10000}))
  writer = tf.summary.create_file_writer(str(root / "encoder"))
  with writer.as_default():
    for step, top1 in ((1000, 0.3), (5000, 0.5)):
      tf.summary.scalar("eval/top1", top1, step=step)
      tf.summary.scalar("eval/top5", top1 + 0.25, step=step)
  writer.close()
  report.write("cifar10", root, publish)
  assert (publish / "encoder" / "params" / "weights").read_bytes() == b"w"
  with Image.open(publish / "encoder_accuracy.png") as chart:
    assert chart.size == (760, 440)
  assert (publish / "main.md").read_text().startswith(
      "Encoder: 50.00% top-1, 75.00% top-5 on 10,000 CIFAR-10 test images.")
  # Change over the last fifth: from the first evaluation at or after 4/5
  # of the run (but before its end) to the end.
  flattening = (publish / "flattening.csv").read_text().splitlines()
  assert flattening[1:] == [f"inverter_conv1,500,0.5,{last},0.3,-40.0",
                            f"inverter_fc6,500,0.8,{last},0.7,-12.5",
                            f"random_fc6,500,0.9,{last},0.85,-5.56"]
  times = (publish / "stages.md").read_text()
  assert "Wall time on this machine: 0.03 h over 2 stages." in times
  assert "| inverter_conv1 | 1.5 min | 1 | abc123 |" in times
  assert "| inverter_fc6 | 0.5 min | 2 | def456 |" in times
  assert "- inverter_fc6: the first sitting was cut short" in times


def test_a_run_is_finished_at_its_own_steps_not_the_preset_s(tmp_path):
  root = tmp_path / "root"
  write_run(root / "inverters" / "fc6", {300: 0.8, 600: 0.75})
  write_run(root / "inverters" / "conv1", {300: 0.5, 600: 0.45})
  # fc6 was trained for 600 steps on purpose (a plan's inverter_steps);
  # conv1 was meant to train for the preset's and is still on its way.
  (root / "inverters" / "fc6" / "config.json").write_text(json.dumps(
      {"identity": {}, "config": {"num_train_steps": 600}}))
  assert 600 < last_step("conv1")
  _, rows = report.main_table("cifar10", root)
  assert rows == [["fc6", 0.75, None, None, None]]


def test_a_report_before_any_run_finished_says_so(tmp_path):
  root, publish = tmp_path / "root", tmp_path / "publish"
  write_run(root / "inverters" / "conv1", {500: 0.5})  # still training
  report.write("cifar10", root, publish)
  assert (publish / "main.md").read_text() == (
      "No run has reached its last step yet.\n")


def test_an_empty_series_keeps_the_other_series_colours():
  chart = plots.line_chart({"a": ([], []), "b": ([0, 1], [0, 1])})
  assert np.all(chart == plots.COLOURS[1], axis=-1).sum() > 50
  assert not np.all(chart == plots.COLOURS[0], axis=-1).any()


def test_baseline_curves_have_a_panel_per_layer(tmp_path):
  last = last_step()
  write_run(tmp_path / "inverters" / "fc6", {500: 0.8, last: 0.7})
  # The fixed-encoder inverter alone is no baseline yet.
  assert report.baseline_curves("cifar10", tmp_path) is None
  write_run(tmp_path / "random_encoder" / "fc6", {500: 0.9, last: 0.85})
  one = report.baseline_curves("cifar10", tmp_path)
  write_run(tmp_path / "scratch" / "conv2", {500: 0.3, last: 0.2})
  two = report.baseline_curves("cifar10", tmp_path)
  # Panels two to a row: conv2's joins fc6's where a blank stood.
  assert one.shape == two.shape
  half = one.shape[1] // 2
  assert np.all(one[:, half:] == 255) and not np.all(two[:, :half] == 255)
  assert not np.all(one[:, :half] == 255)
  assert report.baseline_curves("cifar10", tmp_path / "empty") is None
  # A layer outside the default baseline layers gets its panel too.
  write_run(tmp_path / "random_encoder" / "conv1", {500: 0.5, last: 0.45})
  three = report.baseline_curves("cifar10", tmp_path)
  assert three.shape[0] > two.shape[0]


def test_nice_ticks_are_round_and_cover_the_range():
  ticks = plots.nice_ticks(0.27, 0.93)
  assert ticks[0] <= 0.27 and ticks[-1] >= 0.93
  steps = np.diff(ticks)
  assert np.allclose(steps, steps[0]) and steps[0] in (0.1, 0.2, 0.25)


def test_line_chart_draws_each_series_in_its_colour():
  chart = plots.line_chart({"a": ([0, 1, 2], [3, 2, 1]),
                            "b": ([0, 2], [1, 3])}, title="t")
  assert chart.dtype == np.uint8 and chart.ndim == 3
  for colour in plots.COLOURS[:2]:
    assert np.all(chart == colour, axis=-1).sum() > 50
  with pytest.raises(ValueError):
    plots.line_chart({"empty": ([], [])})


# ---------------------------------------------------------------------------
# The architectures report.
# ---------------------------------------------------------------------------


def write_family_run(root: pathlib.Path, arch: str, kind: str, layer: str,
                     errors: dict[int, float],
                     encoder_dir: pathlib.Path | None = None) -> None:
  """A finished Tiny ImageNet run of `arch` at `layer` (its config.json
  names the encoder, the exported one in `encoder_dir` if given, and its
  steps, as training writes it)."""
  workdir = root / reproduction.KINDS[kind] / layer
  write_run(workdir, errors)
  encoder = presets.get_config(layer, f"tiny_imagenet,arch={arch}").encoder
  encoder.tap = encoders.default_tap(arch, layer)
  if encoder_dir is not None:
    encoder.weights = str(encoder_dir)
  (workdir / "config.json").write_text(json.dumps({
      "identity": {"encoder": encoder.to_dict()},
      "config": {"num_train_steps": max(errors)}}))


def test_architectures_report_puts_families_side_by_side(tmp_path):
  alexnet, resnet = tmp_path / "alexnet", tmp_path / "resnet"
  # AlexNet's inverters use an exported encoder (--encoder=DIR), not one
  # trained in their root: its accuracy is in its metadata.
  published = tmp_path / "published_encoder"
  published.mkdir()
  (published / "metadata.json").write_text(
      json.dumps({"source": {"top1": 0.3097}}))
  write_family_run(alexnet, "caffenet", "inverter", "conv1",
                   {1500: 0.30, 3000: 0.25}, encoder_dir=published)
  write_family_run(alexnet, "caffenet", "inverter", "fc8",
                   {1500: 0.62, 3000: 0.58}, encoder_dir=published)
  write_family_run(resnet, "resnet50", "inverter", "conv5",
                   {1500: 0.5, 3000: 0.45})
  write_family_run(resnet, "resnet50", "inverter", "prob", {3000: 0.66})
  write_family_run(resnet, "resnet50", "random", "prob", {3000: 0.99})
  # Still training: left out.
  write_run(resnet / "inverters" / "fc6", {1500: 0.7})
  (resnet / "encoder" / "eval").mkdir(parents=True)
  (resnet / "encoder" / "eval" / "metrics.json").write_text(
      json.dumps({"top1": 0.4, "top5": 0.7, "num_images": 10000}))
  (resnet / "analysis" / "perturb").mkdir(parents=True)
  (resnet / "analysis" / "perturb" / "results.json").write_text(json.dumps(
      {"inverters": [{"label": "prob", "step": 3000, "perturbations": {
          "none": {"normalized_error": 0.66, "relative_to_unperturbed": 1},
          "binarize": {"normalized_error": 0.7,
                       "relative_to_unperturbed": 1.06}},
          "active_fraction": 0.93}]}))
  (resnet / "analysis" / "color_position").mkdir(parents=True)
  (resnet / "analysis" / "color_position" / "results.json").write_text(
      json.dumps({"inverters": [{
          "label": "prob", "step": 3000, "full": {"normalized_error": 0.66},
          "over_class_mean": {"blurred": 0.9, "edges": 1.3},
          "position": {"follow_ratio": 0.0}}]}))
  for root, width in ((alexnet, 50), (resnet, 30)):
    (root / "analysis" / "layers").mkdir(parents=True)
    Image.new("RGB", (width, 20), "red").save(
        root / "analysis" / "layers" / "reconstructions.png")
  def ledger(**seconds):
    return json.dumps({name: {"seconds": s, "commit": "abc", "command": "c"}
                       for name, s in seconds.items()})
  (alexnet / "stages.json").write_text(
      ledger(inverter_conv1=1800.0, inverter_fc8=900.0))
  (resnet / "stages.json").write_text(
      ledger(encoder=7200.0, inverter_conv5=3600.0))
  # Each family's report is published first (the driver's last stage);
  # the comparison reads only what was published.
  report.write("tiny_imagenet", alexnet, tmp_path / "pub_alexnet",
               encoder=published)
  report.write("tiny_imagenet", resnet, tmp_path / "pub_resnet")
  shutil.rmtree(alexnet)
  shutil.rmtree(resnet)
  reports = architectures.parse_reports(
      [f"caffenet={tmp_path / 'pub_alexnet'}",
       f"resnet50={tmp_path / 'pub_resnet'}"], "tiny_imagenet")
  publish = tmp_path / "publish"
  # A chart of an earlier report with nothing to draw now must go.
  publish.mkdir()
  (publish / "error_vs_size.png").write_bytes(b"stale")
  architectures.write(reports, publish)

  header, rows = architectures.taps_table(reports)
  column = {name: header.index(name) for name in header}
  alexnet_title = presets.SMALL_ENCODER_TITLES["caffenet"]
  resnet_title = "ResNet-18-shaped (resnet50)"
  by_key = {(r[0], r[1]): r for r in rows}
  assert list(by_key) == [(alexnet_title, "conv1"), (alexnet_title, "fc8"),
                          (resnet_title, "conv5"), (resnet_title, "prob")]
  assert by_key[alexnet_title, "fc8"][column["error"]] == 0.58
  assert by_key[alexnet_title, "fc8"][column["steps"]] == 3000
  # Relative depth: place among the family's own layers (9 and 8).
  assert by_key[alexnet_title, "conv1"][column["relative depth"]] == 0.111
  assert by_key[resnet_title, "conv5"][column["relative depth"]] == 0.625
  assert by_key[resnet_title, "prob"][column["relative depth"]] == 1.0
  # res5 of the quarter-width ResNet-18 at 64x64: 2x2x128.
  assert by_key[resnet_title, "conv5"][column["tap"]] == "res5"
  assert by_key[resnet_title, "conv5"][column["feature shape"]] == "2x2x128"
  assert by_key[resnet_title, "conv5"][column["feature size"]] == 512
  assert by_key[resnet_title, "prob"][column["encoder top-1"]] == 0.4
  assert by_key[alexnet_title, "conv1"][column["encoder top-1"]] == 0.3097
  assert (f"| {resnet_title} | prob | 3000 | 0.7000 |  | 1.0600 |  |"
          " 0.9300 |") in (
      publish / "perturb.md").read_text()
  assert (f"| {resnet_title} | prob | 3000 | 0.6600 | 0.9000 | 1.3000 |"
          " 0.0000 |") in (publish / "color_position.md").read_text()
  assert (publish / "random.csv").read_text().splitlines()[1] == (
      f"{resnet_title},prob,3000,0.66,0.99,1.5")
  # Compute: the exported encoder's time is not AlexNet's to count.
  assert (publish / "compute.csv").read_text().splitlines()[1:] == [
      f"{alexnet_title},2,0.0,0.75,0.75", f"{resnet_title},2,2.0,1.0,3.0",
      "all,4,2.0,1.75,3.75"]
  for name in ("error_vs_depth", "error_vs_size"):
    assert (publish / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
  figure = np.asarray(Image.open(publish / "reconstructions.png"))
  assert figure.shape[1] == 50 and figure.shape[0] > 2 * 20
  # Both panels are there, left-aligned on white.
  red = (figure == (255, 0, 0)).all(axis=2)
  assert red.sum() == 50 * 20 + 30 * 20
  assert not red[-20:, 30:].any()  # The narrower panel, left-aligned.

  # Without runs to show, nothing stale is left and the tables say why.
  report.write("tiny_imagenet", tmp_path / "empty", tmp_path / "pub_empty")
  architectures.write({"vgg16": tmp_path / "pub_empty"}, publish)
  assert not list(publish.glob("*.png"))
  assert (publish / "taps.md").read_text() == architectures.EMPTY


def test_report_and_architectures_command_lines_run(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  (tmp_path / "root").mkdir()
  published = tmp_path / "published"
  for module, flags in (
      ("inverter.experiments.report",
       ["--dataset=tiny_imagenet", f"--root={tmp_path / 'root'}",
        f"--publish={published}"]),
      ("inverter.experiments.architectures",
       [f"--reports=caffenet={published}",
        f"--publish={tmp_path / 'across'}"])):
    proc = subprocess.run(
        [sys.executable, "-m", module, *flags],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
  assert (published / "stages.md").exists()
  assert (tmp_path / "across" / "taps.md").exists()
  refused = subprocess.run(
      [sys.executable, "-m", "inverter.experiments.architectures",
       f"--reports=caffenet={tmp_path / 'root'}",
       f"--publish={tmp_path / 'x'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1].startswith(
      "ERROR: --reports: caffenet's")
  assert "is not a published report" in refused.stderr
  assert not (tmp_path / "x").exists()


def test_a_family_report_summarizes_what_the_comparison_reads(tmp_path):
  root, publish = tmp_path / "root", tmp_path / "publish"
  write_family_run(root, "resnet50", "inverter", "conv5", {750: 0.6, 1500: 0.5})
  write_family_run(root, "resnet50", "random", "conv5", {1500: 0.7})
  write_run(root / "inverters" / "fc6", {1500: 0.7})  # no config: unfinished
  (root / "encoder" / "eval").mkdir(parents=True)
  (root / "encoder" / "eval" / "metrics.json").write_text(
      json.dumps({"top1": 0.4, "top5": 0.7, "num_images": 10000}))
  report.write("tiny_imagenet", root, publish)
  summary = json.loads((publish / report.SUMMARY).read_text())
  assert summary == {
      "dataset": "tiny_imagenet", "arch": "resnet50",
      "encoder": {"top1": 0.4, "top5": 0.7, "num_images": 10000},
      "runs": {
          "inverter": {"conv5": {"normalized_error": pytest.approx(0.5),
                                 "step": 1500, "feature_shape": [2, 2, 128]}},
          "random": {"conv5": {"normalized_error": pytest.approx(0.7),
                               "step": 1500, "feature_shape": [2, 2, 128]}}}}


def test_a_report_of_inverters_of_an_exported_encoder_states_its_accuracy(
    tmp_path):
  exported = tmp_path / "exported"
  exported.mkdir()
  (exported / "metadata.json").write_text(json.dumps({"source": {
      "top1": 0.3097, "top5": 0.5842, "eval_num_images": 10000}}))
  root, publish = tmp_path / "root", tmp_path / "publish"
  write_family_run(root, "caffenet", "inverter", "fc8", {1500: 0.6},
                   encoder_dir=exported)
  report.write("tiny_imagenet", root, publish, encoder=exported)
  assert (publish / "main.md").read_text().startswith(
      "Encoder: 30.97% top-1, 58.42% top-5 on 10,000 Tiny ImageNet"
      " validation images.")
  assert json.loads((publish / report.SUMMARY).read_text())["encoder"] == {
      "top1": 0.3097, "top5": 0.5842, "num_images": 10000}


def test_a_report_keeps_the_stages_an_earlier_report_recorded_elsewhere(
    tmp_path):
  # The encoder was trained and published from a root since lost; its
  # inverters ran in a new root (--encoder=the published copy). The new
  # report keeps the encoder's time, and the new root's records win.
  publish = tmp_path / "publish"
  first, second = tmp_path / "first", tmp_path / "second"
  for root, ledger in (
      (first, {"encoder": {"seconds": 7200.0, "commit": "aaa", "command":
                           "python -m inverter.main ..."},
               "inverter_conv1": {"seconds": 60.0, "commit": "aaa",
                                  "command": "python -m inverter.main ..."}}),
      (second, {"inverter_conv1": {"seconds": 600.0, "commit": "bbb",
                                   "command": "python -m inverter.main ..."}})):
    root.mkdir()
    (root / "stages.json").write_text(json.dumps(ledger))
    report.write("tiny_imagenet", root, publish)
  ledger = stages.records(publish)
  assert {name: r["seconds"] for name, r in ledger.items()} == {
      "encoder": 7200.0, "inverter_conv1": 600.0}
  times = (publish / "stages.md").read_text()
  assert "Wall time on this machine: 2.17 h over 2 stages." in times
  assert "| inverter_conv1 | 10.0 min | 1 | bbb |" in times


@pytest.mark.parametrize("reports, named", [
    (["caffenet"], "ARCH=DIR"),
    (["alexnet={report}"], "arch=alexnet has no reduced network"),
    (["caffenet={report}", "caffenet={report}"], "twice"),
    (["caffenet={report}/missing"], "is not a published report"),
    (["vgg16={report}"], "is caffenet's report, not vgg16's"),
    (["caffenet={cifar10}"], "is a report on cifar10, not tiny_imagenet"),
    ([], "empty"),
])
def test_architectures_report_refuses_bad_reports(tmp_path, reports, named):
  for name, dataset in (("report", "tiny_imagenet"), ("cifar10", "cifar10")):
    (tmp_path / name).mkdir()
    (tmp_path / name / report.SUMMARY).write_text(json.dumps(
        {"dataset": dataset, "arch": "caffenet", "encoder": {}, "runs": {}}))
  with pytest.raises(architectures.ReportsError, match=named):
    architectures.parse_reports(
        [r.format(report=tmp_path / "report", cifar10=tmp_path / "cifar10")
         for r in reports], "tiny_imagenet")
