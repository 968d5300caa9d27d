r"""Input pipeline throughput against the train step's consumption rate.

Measures images/s of the real training pipeline,
`inverter.data.train_iterator` (decode, Caffe warp to 256x256, BGR,
mean subtraction, random 227x227 crop, mirror, batching), with the data
settings of configs/fc6.py (the paper's setup), from

  (a) an image folder (`data.source=folder:PATH`; default
      ../shared/data/imagenet-sample, ~500 ImageNet JPEGs of which a flat
      folder's train split holds 9 in 10, looped over epochs: the pipeline
      repeats and reshuffles the file list), and
  (b) TFDS mock data (`tfds.testing.mock_data`, source 'imagenet2012'):
      TFDS generates each example in Python as a small (5-49 px) random-noise
      image, so this row tests the TFDS code path, not a realistic decode;
  (c) the same folder's images warped once to 256x256 as a prepared TFDS
      data set (`python -m inverter.prepare <source>_warped`, written to a
      temporary directory first): what a Caffe-style prepared ImageNet
      costs per image, against (a);

each with `data.num_parallel_calls` 1 and AUTOTUNE (-1). Besides images per
wall-clock second it reports images per CPU-second of this process (all
threads), i.e. what one core delivers. Then it times the full-size caffenet
fc6 train step on this machine's default JAX backend (random encoder
weights, `train.setup` / `make_train_step`, as training builds it) and says
which side is the bottleneck, by how much.

The two are measured one after the other: in a CPU-only training run the
pipeline and the step compete for the same cores, so the real rate is lower
than either; on an accelerator the step leaves the host cores to the
pipeline.

  python benchmarks/input_pipeline.py
  python benchmarks/input_pipeline.py --folder /data/imagenet/train --batches 50
  python benchmarks/input_pipeline.py --batches 3 --step_steps 1   # quick
  python benchmarks/input_pipeline.py --no_step --feed_rate 3000    # cores
                                                  # to feed a 3000 images/s GPU
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import step_timer

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"
CONFIG = REPO_ROOT / "configs" / "fc6.py"




def folder_summary(folder: pathlib.Path, sample: int = 50) -> str:
  """'N files, mean WxH (of the first `sample`)' for the table caption."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from inverter import data as data_lib  # pylint: disable=g-import-not-at-top
  files = sorted(p for p in folder.rglob("*")
                 if p.suffix.lower() in data_lib.IMAGE_EXTENSIONS)
  sizes = []
  for path in files[:sample]:
    with Image.open(path) as image:
      sizes.append(image.size)
  if not sizes:
    return f"{len(files)} image files"
  w = statistics.mean(s[0] for s in sizes)
  h = statistics.mean(s[1] for s in sizes)
  return (f"{len(files)} image files, mean {w:.0f}x{h:.0f} px (first"
          f" {len(sizes)})")


def warped_copy(folder: pathlib.Path) -> tuple[pathlib.Path, str]:
  """The folder's images as a TFDS ImageFolder (links in a temporary
  directory), prepared once more warped to 256x256 (inverter.prepare);
  returns the data_dir holding image_folder_warped and a caption."""
  import tempfile  # pylint: disable=g-import-not-at-top

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from inverter import data as data_lib  # pylint: disable=g-import-not-at-top
  from inverter.prepare import warped  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(tempfile.mkdtemp())
  links = root / "folder" / "train" / "images"
  links.mkdir(parents=True)
  files = sorted(p for p in folder.rglob("*")
                 if p.suffix.lower() in data_lib.IMAGE_EXTENSIONS)
  for i, path in enumerate(files):
    (links / f"{i:06d}{path.suffix.lower()}").symlink_to(path)
  start = time.perf_counter()
  warped.prepare(str(root / "tfds"),
                 source=tfds.folder_dataset.ImageFolder(str(root / "folder")),
                 splits=("train",))
  print(f"  warped {len(files)} images once in"
        f" {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
  return root / "tfds", f"{len(files)} images of the folder"


def time_iterator(batches, batch_size: int, warmup: int, timed: int) -> dict:
  """Pulls `warmup` untimed then `timed` timed batches; images/s figures."""
  start = time.perf_counter()
  for _ in range(warmup):
    batch = next(batches)
  first_s = time.perf_counter() - start
  wall0, cpu0 = time.perf_counter(), time.process_time()
  for _ in range(timed):
    batch = next(batches)
  wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
  images = timed * batch_size
  return dict(images=images, wall_s=wall, cpu_s=cpu, warmup_s=first_s,
              images_per_s=images / wall,
              images_per_cpu_s=images / cpu if cpu > 0 else float("nan"),
              shape=list(batch["image"].shape))


def bench_pipeline(data, args, parallel: int) -> dict:
  from inverter import data as data_lib  # pylint: disable=g-import-not-at-top
  data = data.copy_and_resolve_references()
  data.num_parallel_calls = parallel
  batches = data_lib.train_iterator(
      data, local_batch_size=args.batch_size, seed=0)
  return time_iterator(batches, args.batch_size, args.warmup_batches,
                       args.batches)


def bench_step(args) -> dict:
  """Images/s of the full-size caffenet fc6 train step (random weights)."""
  config = step_timer.load_config(str(CONFIG))
  config.batch_size = args.step_batch
  return step_timer.time_train_step(config, args.step_steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--folder", default=str(DEFAULT_FOLDER),
                      help="image folder for data.source=folder:PATH")
  parser.add_argument("--mock_examples", type=int, default=512,
                      help="examples of the TFDS mock imagenet2012")
  parser.add_argument("--sources", default="folder,mock,warped",
                      help="which pipelines: folder, mock, warped"
                      " (comma-separated)")
  parser.add_argument("--batch_size", type=int, default=64,
                      help="pipeline batch (configs/fc6.py: 64)")
  parser.add_argument("--batches", type=int, default=20,
                      help="timed batches per pipeline")
  parser.add_argument("--warmup_batches", type=int, default=3,
                      help="untimed batches first (start-up, buffers)")
  parser.add_argument("--step_batch", type=int, default=32,
                      help="train-step batch for the consumption rate")
  parser.add_argument("--step_steps", type=int, default=3,
                      help="timed train steps (after the compiling one)")
  parser.add_argument("--no_step", action="store_true",
                      help="skip the train-step timing")
  parser.add_argument("--feed_rate", type=float, default=None,
                      help="images/s a train step elsewhere consumes (e.g."
                      " a GPU's, from benchmarks/gpu_train_step.py): prints"
                      " the CPU cores each pipeline needs to keep up")
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sources = [s.strip() for s in args.sources.split(",") if s.strip()]
  unknown = set(sources) - {"folder", "mock", "warped"}
  if unknown:
    parser.error(f"--sources: unknown {sorted(unknown)}; use folder, mock,"
                 " warped")

  folder = pathlib.Path(args.folder).expanduser().resolve()
  if {"folder", "warped"} & set(sources) and not folder.is_dir():
    raise SystemExit(
        f"Image folder {folder} does not exist. Point --folder at a folder"
        " of images (flat, class subfolders, or PATH/train/<class>/...), or"
        " leave it out with --sources mock.")

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # tf.data only; leave GPUs to JAX.

  base = step_timer.load_config(str(CONFIG))
  data = base.data
  print(f"Pipeline: configs/fc6.py data settings (resize {data.resize_size},"
        f" crop {data.crop_size}, mirror {data.mirror}, prefetch"
        f" {data.prefetch}), batch {args.batch_size}, {args.warmup_batches}"
        f" warm-up + {args.batches} timed batches; {os.cpu_count()} CPU"
        f" cores, load average {os.getloadavg()[0]:.1f}.", file=sys.stderr,
        flush=True)
  rows = []
  parallel_settings = ((1, "1"), (-1, "AUTOTUNE"))
  if "folder" in sources:
    data.source = f"folder:{folder}"
    described = folder_summary(folder)
    for value, name in parallel_settings:
      r = bench_pipeline(data, args, value)
      rows.append(dict(source=f"folder ({described})", parallel=name, **r))
      print(f"  folder, num_parallel_calls={name}:"
            f" {r['images_per_s']:.0f} images/s", file=sys.stderr, flush=True)
  if "mock" in sources:
    data.source = "imagenet2012"
    data.data_dir = "/nonexistent/tfds_mock"
    with tfds.testing.mock_data(num_examples=args.mock_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      for value, name in parallel_settings:
        r = bench_pipeline(data, args, value)
        rows.append(dict(source=f"TFDS mock imagenet2012 ({args.mock_examples}"
                         " examples, 5-49 px noise)", parallel=name, **r))
        print(f"  mock, num_parallel_calls={name}:"
              f" {r['images_per_s']:.0f} images/s", file=sys.stderr,
              flush=True)

  if "warped" in sources:
    warped_dir, described = warped_copy(folder)
    data.source, data.data_dir = "image_folder_warped", str(warped_dir)
    data.train_split = "train"
    for value, name in parallel_settings:
      r = bench_pipeline(data, args, value)
      rows.append(dict(source=f"warped 256x256 TFDS copy ({described})",
                       parallel=name, **r))
      print(f"  warped, num_parallel_calls={name}:"
            f" {r['images_per_s']:.0f} images/s", file=sys.stderr, flush=True)

  step = None
  if not args.no_step:
    print(f"  timing the caffenet fc6 train step at batch {args.step_batch}"
          " (compiles first)...", file=sys.stderr, flush=True)
    step = bench_step(args)

  print("\n### Input pipeline (configs/fc6.py data settings, 227x227 crops)\n")
  print("| source | num_parallel_calls | images/s | images per CPU-second |"
        " warm-up (s) |")
  print("|---|---|---:|---:|---:|")
  for r in rows:
    print(f"| {r['source']} | {r['parallel']} | {r['images_per_s']:.1f} |"
          f" {r['images_per_cpu_s']:.1f} | {r['warmup_s']:.1f} |")
  if step:
    print(f"| train step: caffenet fc6, batch {step['batch']},"
          f" {step['backend']} x{step['devices']} | - |"
          f" {step['images_per_s']:.1f} | - | {step['compile_s']:.1f} |")
    print(f"\nTrain step: median {step['median_s']:.2f} s over"
          f" {step['steps']} steps (compile + first step"
          f" {step['compile_s']:.1f} s), random encoder weights.")
    for r in rows:
      ratio = r["images_per_s"] / step["images_per_s"]
      verdict = ("the input pipeline is the bottleneck" if ratio < 1 else
                 "the train step is the bottleneck")
      print(f"- {r['source']}, num_parallel_calls={r['parallel']}: pipeline"
            f" / step = {ratio:.2f}: {verdict}"
            + (f" (the step could take {1 / ratio:.1f}x more images)."
               if ratio < 1 else
               f" (the pipeline delivers {ratio:.1f}x what the step uses)."))
    print("Measured one after the other; in CPU-only training both share the"
          " same cores.")
  if args.feed_rate:
    print(f"\nTo feed {args.feed_rate:.0f} images/s (at the measured images"
          " per CPU-second):")
    for r in rows:
      r["cores_for_feed_rate"] = args.feed_rate / r["images_per_cpu_s"]
      print(f"- {r['source']}, num_parallel_calls={r['parallel']}:"
            f" {r['cores_for_feed_rate']:.1f} cores")
  print(json.dumps(dict(benchmark="input_pipeline", cpu_count=os.cpu_count(),
                        feed_rate=args.feed_rate, pipelines=rows,
                        train_step=step)))


if __name__ == "__main__":
  main()
