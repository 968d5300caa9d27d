"""The paper's studies on trained inverters: tables and figures for a paper.

  python -m inverter.analysis --config=configs/analysis.py:STUDY --workdir=OUT

restores every inverter in `config.inverters` (workdirs, local or gs://, or
globs) and writes OUT/STUDY/results.json (every number the study reports),
table.md / table.csv where it has a table, and PNG figures. Studies:

  layers          normalized error of every inverter; reconstruction figure
  perturb         binarized, 50% dropout, noisy and quantized features
  interpolate     decoded interpolations between image pairs' features
  sample          decoded samples of a fitted feature distribution (+ top-5
                  classes for fc layers)
  topk            fc8 from its top-5 activations alone / all but them
  color_position  colour, contours and layout vs detail, against class-only
                  references; following translations
  optimization    the decoder against Mahendran & Vedaldi's optimisation
                  and the hybrid: image and feature errors, time per image

`run_study(config, workdir)` does the same from Python.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from inverter import errors

STUDIES = ("layers", "perturb", "interpolate", "sample", "topk",
           "color_position", "optimization")


class ConfigError(errors.UserError, ValueError):
  """The analysis config asks for something that does not exist."""


def check_study(study: str) -> None:
  if study not in STUDIES:
    raise ConfigError(f"Unknown study {study!r} (config field `study`);"
                      f" choose one of {', '.join(STUDIES)}, e.g."
                      " --config=configs/analysis.py:layers.")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a bad option before anything is restored or computed."""
  from inverter import perturbations  # pylint: disable=g-import-not-at-top
  from inverter.analysis import optimization  # pylint: disable=g-import-not-at-top
  from inverter.analysis import sample  # pylint: disable=g-import-not-at-top
  check_study(config.study)
  problems = []
  for spec in config.perturb.perturbations:
    try:
      perturbations.parse(spec)
    except ValueError as e:
      problems.append(f"config.perturb.perturbations: {e}")
  if config.sample.method not in sample.METHODS:
    problems.append(f"config.sample.method={config.sample.method!r}; use one"
                    f" of {', '.join(sample.METHODS)}.")
  if config.batch_size < 2:
    problems.append("config.batch_size must be at least 2: the normalized"
                    " error compares images within a batch.")
  if config.study == "optimization":
    problems += optimization.check(config)
  if config.num_images != -1 and config.num_images < 2:
    problems.append("config.num_images must be at least 2 (or -1 for all).")
  if problems:
    raise ConfigError("\n".join(problems))


def run_study(config: ml_collections.ConfigDict,
              workdir: str) -> dict[str, Any]:
  """Runs `config.study` and writes its outputs to workdir/STUDY; returns
  what results.json holds."""
  from inverter.analysis import common  # pylint: disable=g-import-not-at-top
  check_config(config)
  module = importlib.import_module(f"inverter.analysis.{config.study}")
  out_dir = epath.Path(workdir) / config.study
  start = time.monotonic()
  inverters = common.load_inverters(config)
  logging.info("Study %s on %d inverter(s): %s", config.study, len(inverters),
               ", ".join(inv.label for inv in inverters))
  results = module.run(config, inverters, out_dir)
  results = dict(study=config.study, data=config.data.source or
                 "each inverter's own evaluation data",
                 num_images=config.num_images, batch_size=config.batch_size,
                 seed=config.seed, seconds=time.monotonic() - start,
                 **results)
  common.write_results(out_dir, {k: v for k, v in results.items()
                                 if k != "table"})
  return results
