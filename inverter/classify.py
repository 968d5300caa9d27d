"""Training an encoder from scratch as an image classifier.

Where no pretrained weights exist (CPU runs, other data sets, the question
what an encoder trained from scratch keeps), the project trains its own
encoder: `train_and_evaluate(config, workdir)` trains the network of
`config.encoder` with softmax cross-entropy on its fc8 logits, evaluates
top-1/top-5 accuracy, resumes from the latest checkpoint in `workdir`, and at
the end exports the params in the encoder format (`inverter.encoder_weights`)
to `workdir/encoder`, so that any inverter config can use them with the
config token `encoder=WORKDIR/encoder` (e.g. `configs/fc6.py:encoder=...`). `evaluate(config, workdir)`
evaluates (and exports) the latest checkpoint only.

Images come from the inverter's input pipeline (Caffe space: BGR 0-255 minus
`data.mean`) through the same adapter the inverter uses
(`preprocessing.encoder_input_fn`), so the encoder is trained on exactly what
it sees later when it is inverted. Like `inverter.train`, one jitted step runs
over a 1-D `data` mesh of all devices: the batch is sharded, parameters and
optimizer state are replicated.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from inverter import bn_calibration, checkpointing, classify_configs
from inverter import encoder_weights
from inverter import data as data_lib
from inverter import preflight, train, training_loop
from inverter.models import encoders, preprocessing

TASK = classify_configs.TASK
TrainState = train.TrainState
# The top-k accuracies evaluated and reported.
TOP_K = (1, 5)
# Where the trained encoder is exported, relative to the workdir.
ENCODER_DIR = "encoder"
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class Classifier:
  """Everything fixed for a run: model, input adapter, mesh, class names."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: Any  # A Flax module from encoders.from_config.
  encoder_input: Callable[[jax.Array], jax.Array]
  label_names: tuple[str, ...]

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def data_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))


# --------------------------------------------------------------------------
# Config checks and setup.
# --------------------------------------------------------------------------



def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Problems in a classification config (no file system access)."""
  problems = []
  try:
    encoders.check_arch(config.encoder.arch)
  except ValueError as e:
    return [str(e)]
  problems += preflight.encoder_shape_problems(config.encoder)[1]
  problems += preprocessing.problems(config.encoder.preprocessing, config.data)
  if config.data.crop_size != config.encoder.input_size:
    problems.append(
        f"data.crop_size={config.data.crop_size} differs from"
        f" encoder.input_size={config.encoder.input_size}; set both to the"
        " same value, e.g."
        f" --config.data.crop_size={config.encoder.input_size}.")
  if config.data.resize_size < config.data.crop_size:
    problems.append(f"data.resize_size={config.data.resize_size} is smaller"
                    f" than data.crop_size={config.data.crop_size}.")
  if not config.input_scale > 0:
    problems.append(f"input_scale={config.input_scale} must be > 0.")
  if config.data.get("crop_padding", 0) < 0:
    problems.append(f"data.crop_padding={config.data.crop_padding} must be"
                    " >= 0.")
  problems += preflight.batch_size_problems(config)
  opt = config.optimizer
  if opt.name not in OPTIMIZERS:
    problems.append(f"optimizer.name must be one of {', '.join(OPTIMIZERS)},"
                    f" got {opt.name!r}.")
  if opt.schedule not in ("step", "cosine", "constant"):
    problems.append("optimizer.schedule must be 'step', 'cosine' or"
                    f" 'constant', got {opt.schedule!r}.")
  if config.compute_dtype not in ("float32", "bfloat16"):
    problems.append("compute_dtype must be 'float32' or 'bfloat16', got"
                    f" {config.compute_dtype!r}.")
  return problems


def check(config: ml_collections.ConfigDict) -> None:
  """Raises preflight.PreflightError listing every problem found, if any."""
  problems = config_problems(config)
  data_problems = data_lib.check_source(config.data, with_labels=True)
  problems += data_problems
  if not data_problems and not problems:
    names = data_lib.label_names(config.data)
    if len(names) != config.encoder.num_classes:
      problems.append(
          f"{config.data.source} has {len(names)} classes but"
          f" encoder.num_classes={config.encoder.num_classes}; set"
          f" --config.encoder.num_classes={len(names)}.")
  if problems:
    raise preflight.PreflightError(problems)


def _data_mesh() -> jax.sharding.Mesh:
  # The same 1-D mesh as train.setup: the batch is split on `data`.
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def setup(config: ml_collections.ConfigDict) -> Classifier:
  """Builds the model, input adapter and mesh (checks nothing)."""
  dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
  return Classifier(
      config=config, mesh=_data_mesh(),
      model=encoders.from_config(config.encoder, dtype=dtype),
      encoder_input=preprocessing.encoder_input_fn(
          config.encoder.preprocessing, config.data),
      label_names=tuple(data_lib.label_names(config.data)))


def identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a workdir's checkpoints are: task, network and training data."""
  ident = dict(task=TASK,
               encoder=encoder_weights.architecture(config.encoder),
               data=dict(source=config.data.source,
                         train_split=config.data.train_split))
  return json.loads(json.dumps(ident))


# --------------------------------------------------------------------------
# Optimizer, steps and metrics.
# --------------------------------------------------------------------------


def learning_rate_schedule(config: ml_collections.ConfigDict
                          ) -> optax.Schedule:
  """Caffe's 'step' policy if optimizer.decay_every_steps > 0, else the
  inverter's schedules (`train.learning_rate_schedule`)."""
  opt = config.optimizer
  if opt.decay_every_steps > 0:
    main = optax.exponential_decay(
        opt.learning_rate, transition_steps=opt.decay_every_steps,
        decay_rate=opt.decay_factor, staircase=True)
    if not opt.warmup_steps:
      return main
    warmup = optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
    return optax.join_schedules([warmup, main], [opt.warmup_steps])
  return train.learning_rate_schedule(config)


# The first layer's parameter name in each encoder family.
_FIRST_LAYER = {"alexnet": "conv1", "vgg16": "conv1_1", "googlenet": "conv1",
                "resnet": "conv1"}


def _first_layer(config: ml_collections.ConfigDict) -> str:
  return _FIRST_LAYER[encoders.family(config.encoder.arch)]


def make_optimizer(config: ml_collections.ConfigDict
                  ) -> optax.GradientTransformation:
  """SGD with momentum or Adam, after adding weight_decay * kernel to the
  gradient (Caffe's L2 regularisation; biases are not decayed), with the
  first layer's updates scaled for `input_scale` (see
  `classify_configs.base_config`)."""
  opt = config.optimizer
  schedule = learning_rate_schedule(config)
  if opt.name == "sgd":
    base = optax.sgd(schedule, momentum=opt.momentum or None,
                     nesterov=opt.nesterov)
    first_scale = config.input_scale ** 2
  else:
    base = optax.adam(schedule, b1=opt.b1, b2=opt.b2)
    first_scale = config.input_scale
  parts = []
  if opt.weight_decay:
    kernels = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=kernels))
  parts.append(base)
  if first_scale != 1:
    first = _first_layer(config)
    only_first = lambda params: {
        name: jax.tree.map(lambda _: name == first, layer)  # pylint: disable=cell-var-from-loop
        for name, layer in params.items()}
    parts.append(optax.masked(optax.scale(first_scale), only_first))
  return optax.chain(*parts)


def create_train_state(clf: Classifier) -> TrainState:
  """Fresh params (seed encoder.init_seed; the first kernel times
  input_scale) and optimizer state, replicated."""
  config = clf.config
  size = config.encoder.input_size
  dummy = jnp.zeros((1, size, size, 3), jnp.float32)
  tx = make_optimizer(config)
  first = _first_layer(config)

  def init(key):
    params = clf.model.init(key, dummy)["params"]
    params = dict(params)
    params[first] = dict(params[first], kernel=params[first]["kernel"]
                         * config.input_scale)
    return TrainState.create(apply_fn=clf.model.apply, params=params, tx=tx)

  return jax.jit(init, out_shardings=clf.replicated)(
      jax.random.key(int(config.encoder.init_seed)))


def topk_correct(logits: jax.Array, labels: jax.Array,
                 ks: tuple[int, ...] = TOP_K) -> dict[int, jax.Array]:
  """{k: bool [N]}: whether the true label is among the k highest logits.

  The label's rank is the number of other classes whose logit is at least
  as high, so ties count against the label: a network that outputs the same
  logit for every class scores 0, not 100%.
  """
  true_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)
  rank = jnp.sum(logits >= true_logit, axis=1) - 1
  return {k: rank < k for k in ks}


def scores_tap(config: ml_collections.ConfigDict) -> str:
  """The class scores' tap: fc8, fc1000 (ResNet) or logits (GoogLeNet)."""
  return encoders.class_tail(config.encoder.arch)[-2]


def _logits(clf: Classifier, params, images_, *, train: bool, rng=None):
  tap = scores_tap(clf.config)
  taps = clf.model.apply(
      {"params": params}, clf.encoder_input(images_), train=train,
      until=tap, rngs=None if rng is None else {"dropout": rng})
  return taps[tap].astype(jnp.float32)


def inference_params(clf: Classifier, params: Any) -> Any:
  """The params to evaluate and export: with batch norm (a network trained
  from scratch normalises by batch statistics), its stored statistics set
  from `batch_norm_images` training images (see bn_calibration)."""
  if not bn_calibration.has_batch_norm(params):
    return params
  config = clf.config
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.eval_split = data.train_split
  data.eval_num_images = int(config.get("batch_norm_images", 2048))
  local = train._local_batch_size(config.eval_batch_size)  # pylint: disable=protected-access
  stats = bn_calibration.statistics_fn(clf.model, clf.encoder_input,
                                       "pool5")
  batches = (
      _global(clf, batch["image"]) for batch in data_lib.eval_iterator(
          data, local_batch_size=local, process_index=jax.process_index(),
          process_count=jax.process_count())
      if bool(np.all(batch["mask"])))
  return bn_calibration.calibrate(params, batches, stats)


def make_train_step(clf: Classifier):
  """(state, images, labels) -> (state, loss, number correct); donates state.

  Dropout's key is the config seed folded with the step number, so a resumed
  run draws the same masks as an uninterrupted one.
  """
  seed = int(clf.config.seed)

  def step(state, images_, labels):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
      logits = _logits(clf, params, images_, train=True, rng=rng)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return loss.mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    correct = jnp.sum(jnp.argmax(logits, axis=1) == labels)
    return state.apply_gradients(grads=grads), loss, correct

  return jax.jit(step, donate_argnums=0,
                 in_shardings=(clf.replicated, clf.data_sharding,
                               clf.data_sharding),
                 out_shardings=(clf.replicated, clf.replicated,
                                clf.replicated))


def make_eval_step(clf: Classifier):
  """(params, images, labels, mask) -> {'loss', 'top1', 'top5', 'count'} sums
  over the real (mask True) images of the batch."""

  def step(params, images_, labels, mask):
    logits = _logits(clf, params, images_, train=False)
    weight = mask.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    sums = {f"top{k}": jnp.sum(c * weight)
            for k, c in topk_correct(logits, labels).items()}
    return dict(sums, loss=jnp.sum(loss * weight), count=jnp.sum(weight))

  return jax.jit(step, in_shardings=(clf.replicated,) + (
      clf.data_sharding,) * 3, out_shardings=clf.replicated)


def _global(clf: Classifier, local: np.ndarray) -> jax.Array:
  return jax.make_array_from_process_local_data(clf.data_sharding, local)


def evaluate_state(clf: Classifier, params: Any, step: int,
                   workdir: epath.Path, writer=None,
                   eval_step=None) -> dict[str, Any]:
  """Top-1/top-5 accuracy and loss over the whole eval split (padding masked);
  writes eval/metrics.json. Pass an earlier `make_eval_step` to skip
  recompiling."""
  config = clf.config
  eval_step = eval_step or make_eval_step(clf)
  local = train._local_batch_size(config.eval_batch_size)  # pylint: disable=protected-access
  batches = data_lib.eval_iterator(
      config.data, local_batch_size=local, process_index=jax.process_index(),
      process_count=jax.process_count(), with_labels=True)
  totals = {k: 0.0 for k in ("loss", "count", *(f"top{k}" for k in TOP_K))}
  start = time.monotonic()
  for batch in batches:
    sums = eval_step(params, _global(clf, batch["image"]),
                     _global(clf, batch["label"]), _global(clf, batch["mask"]))
    for key, value in jax.device_get(sums).items():
      totals[key] += float(value)
  count = max(totals["count"], 1.0)
  metrics = dict(
      step=int(step), task=TASK,
      num_images=int(totals["count"]),
      **{f"top{k}": totals[f"top{k}"] / count for k in TOP_K},
      loss=totals["loss"] / count,
      num_classes=len(clf.label_names),
      encoder=config.encoder.arch,
      data=config.data.source, split=config.data.eval_split,
      skipped_corrupt_images=data_lib.skipped_images(),
      eval_seconds=time.monotonic() - start)
  logging.info("Eval at step %d: top-1 %.2f%%, top-5 %.2f%%, loss %.4f over"
               " %d images.", step, 100 * metrics["top1"],
               100 * metrics["top5"], metrics["loss"], metrics["num_images"])
  if jax.process_index() == 0:
    eval_dir = workdir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
  if writer is not None:
    writer.write_scalars(step, {f"eval/{k}": metrics[k]
                                for k in ("top1", "top5", "loss")})
  return metrics


# --------------------------------------------------------------------------
# Export in the encoder format.
# --------------------------------------------------------------------------


def _git_commit() -> str | None:
  """`git describe --always --dirty` of this checkout, if it is one."""
  try:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=40"],
        cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True,
        text=True, timeout=10, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() or None


def export_encoder(clf: Classifier, params: Any, metrics: dict[str, Any],
                   workdir: epath.Path) -> epath.Path:
  """Writes the encoder to workdir/encoder with its provenance; logs how to
  use it in an inverter config."""
  config = clf.config
  path = workdir / ENCODER_DIR
  pre = dict(config.encoder.preprocessing.to_dict(),
             input_size=config.encoder.input_size,
             resize_size=config.data.resize_size,
             crop_size=config.data.crop_size)
  source = dict(
      trained_by="inverter.classify (trained from scratch)",
      data=config.data.source, train_split=config.data.train_split,
      eval_split=config.data.eval_split, label_names=list(clf.label_names),
      step=metrics["step"], top1=metrics["top1"], top5=metrics["top5"],
      eval_num_images=metrics["num_images"],
      git_commit=_git_commit(),
      exported=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      config=json.loads(config.to_json_best_effort()))
  if jax.process_index() == 0:
    encoder_weights.save(str(path), jax.device_get(params), config.encoder,
                         preprocessing=pre, source=source)
  logging.info("Exported the encoder (top-1 %.2f%% at step %d) to %s. Invert"
               " it with any inverter config, e.g.:\n  python -m inverter.main"
               " --config=configs/fc6.py:encoder=%s --workdir=...",
               100 * metrics["top1"], metrics["step"], path, path)
  return path


# --------------------------------------------------------------------------
# Train and evaluate.
# --------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains (or resumes) a classifier in `workdir`, evaluates it and exports
  the encoder; returns the final eval metrics."""
  workdir = epath.Path(workdir)
  check(config)
  train.check_workdir(config, workdir, identity(config))
  clf = setup(config)
  train._save_config(config, workdir, identity(config))  # pylint: disable=protected-access
  logging.info("Training %s (input %d, %d classes) on %s; %d devices,"
               " global batch %d, %d steps.", config.encoder.arch,
               config.encoder.input_size, len(clf.label_names),
               config.data.source, jax.device_count(), config.batch_size,
               config.num_train_steps)
  writer = training_loop.metric_writer(workdir)
  eval_step = make_eval_step(clf)
  train_step = make_train_step(clf)
  schedule = learning_rate_schedule(config)

  def step(state, batch):
    state, loss, correct = train_step(state, batch["image"], batch["label"])
    return state, {"loss": loss, "correct": correct}

  def summarize(sums, steps):
    loss = sums["loss"] / steps
    accuracy = sums["correct"] / (steps * config.batch_size)
    return ({"train/loss": loss, "train/accuracy": accuracy},
            f"loss {loss:.4f}, train accuracy {100 * accuracy:.2f}%")

  task = training_loop.Task(
      train_step=step, summarize=summarize,
      evaluate=lambda state, step: evaluate_state(
          clf, inference_params(clf, state.params), step, workdir, writer,
          eval_step),
      batch_keys=("image", "label"))
  try:
    state = training_loop.run(config, workdir, create_train_state(clf), task,
                              writer=writer, data_sharding=clf.data_sharding,
                              learning_rate=schedule)
  finally:
    writer.flush()
  params = inference_params(clf, state.params)
  metrics = evaluate_state(clf, params, int(state.step), workdir, writer,
                           eval_step)
  export_encoder(clf, params, metrics, workdir)
  writer.flush()
  return metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the latest checkpoint in `workdir` and exports its encoder."""
  workdir = epath.Path(workdir)
  check(config)
  train.check_workdir(config, workdir, identity(config))
  clf = setup(config)
  state = checkpointing.require_latest(workdir, create_train_state(clf))
  writer = training_loop.metric_writer(workdir, asynchronous=False)
  params = inference_params(clf, state.params)
  metrics = evaluate_state(clf, params, int(state.step), workdir, writer)
  export_encoder(clf, params, metrics, workdir)
  writer.flush()
  return metrics
