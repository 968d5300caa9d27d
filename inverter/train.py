"""Training and evaluation of a feature inverter.

`train_and_evaluate(config, workdir)` trains an up-convolutional decoder to map
the frozen encoder's features at `config.layer` back to the input image with an
L2 pixel loss, evaluates it, and resumes automatically from the latest
checkpoint in `workdir`. `evaluate(config, workdir)` evaluates the latest
checkpoint only.

One jitted step runs over a mesh of all devices: the batch is sharded on the
`data` axis, parameters and optimizer state are replicated.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from inverter import checkpointing, encoder_weights, errors, evaluation
from inverter import feature_transforms, images, preflight
from inverter import data as data_lib
from inverter import training_loop
from inverter.models import decoder as decoder_lib
from inverter.models import encoders, preprocessing

TrainState = train_state.TrainState

# Config fields that define what a checkpoint in a workdir contains; a rerun
# whose config differs in any of them must not reuse that workdir.
_IDENTITY_FIELDS = ("layer", "encoder", "decoder")


DivergedError = training_loop.DivergedError


class WorkdirMismatchError(errors.UserError, ValueError):
  """The workdir holds a different experiment."""


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything fixed for a run: models, mesh, frozen encoder params."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  encoder: Any  # A Flax module from encoders.from_config.
  decoder: decoder_lib.UpconvDecoder
  tap: str
  feature_shape: tuple[int, ...]
  output_size: int
  encoder_params: Any
  # Pipeline (Caffe-space) images -> the encoder's own input space.
  encoder_input: Callable[[jax.Array], jax.Array] = lambda x: x

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def data_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))


def _dtype(config) -> Any:
  return jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32


def setup(config: ml_collections.ConfigDict) -> Experiment:
  """Builds models and mesh and loads the frozen encoder."""
  # Auto axes: XLA propagates shardings from the inputs (batch on `data`).
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  encoder = encoders.from_config(config.encoder, dtype=_dtype(config))
  tap = preflight.resolved_tap(config)
  feature_shape = encoders.tap_shapes(encoder)[tap]
  size = config.encoder.input_size
  resolved = decoder_lib.resolve(config.decoder, feature_shape, size)
  decoder = decoder_lib.from_config(config.decoder, feature_shape, size,
                                    dtype=_dtype(config))
  params = encoder_weights.load(config.encoder, encoder)
  params = jax.device_put(params, NamedSharding(mesh, P()))
  encoder_input = preprocessing.encoder_input_fn(config.encoder.preprocessing,
                                                 config.data)
  return Experiment(config, mesh, encoder, decoder, tap, feature_shape,
                    resolved["output_size"], params, encoder_input)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  opt = config.optimizer
  total = config.num_train_steps
  if opt.schedule == "constant":
    main = optax.constant_schedule(opt.learning_rate)
  elif opt.schedule == "step":
    main = optax.piecewise_constant_schedule(
        opt.learning_rate,
        {int(f * total) - opt.warmup_steps: opt.decay_factor
         for f in opt.decay_at})
  else:
    main = optax.cosine_decay_schedule(
        opt.learning_rate, max(1, total - opt.warmup_steps))
  if not opt.warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
  return optax.join_schedules([warmup, main], [opt.warmup_steps])


def targets_for(images_: jax.Array, output_size: int) -> jax.Array:
  """The input images as the loss sees them: resized to the decoder output
  (antialiased bilinear) where that differs from the input size."""
  if images_.shape[1] == output_size:
    return images_
  shape = (images_.shape[0], output_size, output_size, images_.shape[3])
  return jax.image.resize(images_, shape, "linear", antialias=True)


def trains_encoder(config: ml_collections.ConfigDict) -> bool:
  """Whether the encoder is trained with the decoder (the paper's
  autoencoder baseline) instead of frozen."""
  return bool(config.get("train_encoder", False))


def split_params(exp: Experiment, params: Any,
                 encoder_params: Any = None) -> tuple[Any, Any]:
  """(decoder params, encoder params) of a train state's params: an
  autoencoder's state holds both, an inverter's only the decoder's (its
  encoder params are the frozen `encoder_params`, default exp's)."""
  if trains_encoder(exp.config):
    return params["decoder"], params["encoder"]
  return params, exp.encoder_params if encoder_params is None else (
      encoder_params)


def features(exp: Experiment, encoder_params: Any, images_: jax.Array):
  """The encoder's activation at the inverted tap for pipeline images
  (adapted to the encoder's own preprocessing first). Gradients reach the
  encoder only when it is trained (`train_encoder`)."""
  taps = exp.encoder.apply({"params": encoder_params},
                           exp.encoder_input(images_), until=exp.tap)
  tap = taps[exp.tap]
  if not trains_encoder(exp.config):
    tap = jax.lax.stop_gradient(tap)
  return feature_transforms.apply(exp.config.get("feature_transform", ""),
                                  tap)


def create_train_state(exp: Experiment, seed: int) -> TrainState:
  tx = optax.adam(learning_rate_schedule(exp.config),
                  b1=exp.config.optimizer.b1, b2=exp.config.optimizer.b2)
  dummy = jnp.zeros((1, *exp.feature_shape), jnp.float32)

  @functools.partial(jax.jit, out_shardings=exp.replicated)
  def init(key, encoder_params):
    params = exp.decoder.init(key, dummy)["params"]
    if trains_encoder(exp.config):
      # The autoencoder starts from the configured encoder weights (trained,
      # ported, or random for one trained from scratch).
      params = {"decoder": params, "encoder": encoder_params}
    return TrainState.create(apply_fn=exp.decoder.apply, params=params, tx=tx)

  return init(jax.random.key(seed), exp.encoder_params)


def make_train_step(exp: Experiment):
  """(state, encoder_params, images) -> (state, loss); state is donated."""

  def loss_fn(params, encoder_params, images_):
    params, encoder_params = split_params(exp, params, encoder_params)
    feats = features(exp, encoder_params, images_)
    recon = exp.decoder.apply({"params": params}, feats)
    return jnp.mean(jnp.square(recon - targets_for(images_, exp.output_size)))

  def step(state, encoder_params, images_):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, encoder_params,
                                              images_)
    return state.apply_gradients(grads=grads), loss

  return jax.jit(step, donate_argnums=0,
                 in_shardings=(exp.replicated, exp.replicated,
                               exp.data_sharding),
                 out_shardings=(exp.replicated, exp.replicated))


def make_eval_step(exp: Experiment):
  """(params, encoder_params, images, mask) -> (error sums, recons, targets)."""

  def step(params, encoder_params, images_, mask):
    params, encoder_params = split_params(exp, params, encoder_params)
    recon = exp.decoder.apply({"params": params},
                              features(exp, encoder_params, images_))
    target = targets_for(images_, exp.output_size)
    return evaluation.batch_sums(target, recon, mask), recon, target

  return jax.jit(step, in_shardings=(exp.replicated, exp.replicated,
                                     exp.data_sharding, exp.data_sharding))


def global_batch(exp: Experiment, local: np.ndarray) -> jax.Array:
  return jax.make_array_from_process_local_data(exp.data_sharding, local)


def _local_batch_size(global_size: int) -> int:
  return global_size // jax.process_count()


def evaluate_state(exp: Experiment, params: Any, step: int,
                   workdir: epath.Path, writer=None,
                   eval_step=None) -> dict[str, Any]:
  """Evaluates on the eval split; writes eval/metrics.json and PNG grids.

  Pass the `make_eval_step(exp)` of an earlier call to skip recompiling.
  """
  config = exp.config
  eval_step = eval_step or make_eval_step(exp)
  batches = data_lib.eval_iterator(
      config.data, local_batch_size=_local_batch_size(config.eval_batch_size),
      process_index=jax.process_index(), process_count=jax.process_count())
  num_batches = data_lib.eval_num_batches(
      config.data, local_batch_size=_local_batch_size(config.eval_batch_size),
      process_count=jax.process_count())
  acc = evaluation.ErrorAccumulator()
  shown_t, shown_r = [], []
  start = time.monotonic()
  for i, batch in enumerate(batches):
    if i and i % 50 == 0:
      logging.info("eval batch %d/%d, %.1f images/s", i, num_batches,
                   i * config.eval_batch_size / (time.monotonic() - start))
    sums, recon, target = eval_step(
        params, exp.encoder_params, global_batch(exp, batch["image"]),
        global_batch(exp, batch["mask"]))
    acc.add(sums)
    if sum(len(t) for t in shown_t) < config.num_grid_images:
      mask = multihost_utils.process_allgather(
          global_batch(exp, batch["mask"]), tiled=True)
      shown_t.append(np.asarray(multihost_utils.process_allgather(
          target, tiled=True))[mask])
      shown_r.append(np.asarray(multihost_utils.process_allgather(
          recon, tiled=True))[mask])
  metrics = dict(step=int(step), layer=config.layer, tap=exp.tap,
                 **acc.result(),
                 encoder=config.encoder.arch,
                 encoder_weights=config.encoder.weights,
                 data=config.data.source, split=config.data.eval_split,
                 output_size=exp.output_size,
                 error_space="BGR mean-subtracted 0-255 (= RGB 0-255 pixel"
                             " distances) at the decoder output size",
                 skipped_corrupt_images=data_lib.skipped_images(),
                 eval_seconds=time.monotonic() - start)
  logging.info("Eval at step %d: normalized error %.4f over %d images (%s).",
               step, metrics["normalized_error"], metrics["num_images"],
               "RANDOM encoder" if encoder_weights.is_random(
                   config.encoder.weights) else config.encoder.weights)
  n = config.num_grid_images
  grid = None
  if shown_t:
    to_rgb = functools.partial(data_lib.to_rgb_uint8, data=config.data)
    grid = images.pair_grid(to_rgb(np.concatenate(shown_t)[:n]),
                            to_rgb(np.concatenate(shown_r)[:n]))
  if jax.process_index() == 0:
    eval_dir = workdir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if grid is not None:
      images.write_png(eval_dir / f"reconstructions_step{step:08d}.png", grid)
      images.write_png(eval_dir / "reconstructions.png", grid)
  if writer is not None:
    writer.write_scalars(step, {f"eval/{k}": metrics[k] for k in (
        "normalized_error", "mean_l2_error", "rmse_per_pixel_value")})
    if grid is not None:
      writer.write_images(step, {"eval/input_vs_reconstruction": grid[None]})
  return metrics


def restore_latest(exp: Experiment, workdir: str) -> TrainState | None:
  """The newest checkpointed train state in `workdir`, or None if none."""
  return checkpointing.restore_latest(
      workdir, create_train_state(exp, exp.config.seed))


def _identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  ident = {k: config[k].to_dict() if hasattr(config[k], "to_dict")
           else config[k] for k in _IDENTITY_FIELDS}
  ident["encoder"] = encoder_weights.architecture(config.encoder) | {
      "tap": preflight.resolved_tap(config),
      "weights": config.encoder.weights}
  # How up-convolutions run does not change what they compute.
  ident["decoder"] = {k: v for k, v in ident["decoder"].items()
                      if k != "upconv_impl"}
  # An inverter of transformed features (e.g. fc8 top-5 only) is another
  # experiment; left out when empty so older workdirs still match.
  if config.get("feature_transform", ""):
    ident["feature_transform"] = config.feature_transform
  if trains_encoder(config):
    ident["train_encoder"] = True
  return json.loads(json.dumps(ident))


def check_workdir(config: ml_collections.ConfigDict, workdir: epath.Path,
                  identity: dict[str, Any] | None = None) -> None:
  """Refuses a workdir whose saved config describes another experiment.

  `identity` defaults to the inverter's; encoder training passes its own.
  """
  saved_path = workdir / "config.json"
  if not saved_path.exists():
    checkpoints = checkpointing.directory(workdir)
    if checkpoints.exists() and any(checkpoints.iterdir()):
      raise WorkdirMismatchError(
          f"{workdir} holds checkpoints but no config.json, so nothing says"
          " which experiment wrote them. Use a new --workdir.")
    return
  try:
    saved = json.loads(saved_path.read_text())
  except ValueError as e:
    raise WorkdirMismatchError(
        f"{saved_path} is not valid JSON ({e}); it cannot tell which"
        " experiment this workdir holds. Use a new --workdir.") from None
  saved_ident = saved.get("identity")
  ident = _identity(config) if identity is None else identity
  if isinstance(saved_ident, dict) and isinstance(
      saved_ident.get("encoder"), dict):
    saved_ident = saved_ident | {
        "encoder": encoders.with_field_defaults(saved_ident["encoder"])}
  if saved_ident is None or saved_ident == ident:
    return
  diffs = []
  for key in sorted(set(saved_ident) | set(ident)):
    a, b = saved_ident.get(key), ident.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += [f"{key}.{k}: workdir {a.get(k)!r}, config {b.get(k)!r}"
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    elif a != b:
      diffs.append(f"{key}: workdir {a!r}, config {b!r}")
  raise WorkdirMismatchError(
      f"{workdir} holds checkpoints of a different experiment:\n  "
      + "\n  ".join(diffs)
      + "\nUse a new --workdir, or the config that wrote this one.")


def _save_config(config, workdir: epath.Path,
                 identity: dict[str, Any] | None = None) -> None:
  if jax.process_index() != 0:
    return
  workdir.mkdir(parents=True, exist_ok=True)
  payload = dict(identity=_identity(config) if identity is None else identity,
                 config=json.loads(config.to_json_best_effort()))
  (workdir / "config.json").write_text(json.dumps(payload, indent=2))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains (or resumes) an inverter in `workdir`; returns final eval metrics."""
  workdir = epath.Path(workdir)
  preflight.check(config)
  check_workdir(config, workdir)
  exp = setup(config)
  _save_config(config, workdir)
  logging.info("Inverting %s (tap %s, features %s) with a decoder producing"
               " %dx%d images; %d devices, global batch %d.", config.layer,
               exp.tap, exp.feature_shape, exp.output_size, exp.output_size,
               jax.device_count(), config.batch_size)

  writer = training_loop.metric_writer(workdir)
  eval_step = make_eval_step(exp)
  train_step = make_train_step(exp)

  def step(state, batch):
    state, loss = train_step(state, exp.encoder_params, batch["image"])
    return state, {"loss": loss}

  task = training_loop.Task(
      train_step=step,
      summarize=lambda sums, steps: (
          {"train/loss": sums["loss"] / steps},
          f"loss {sums['loss'] / steps:.2f}"),
      evaluate=lambda state, step: evaluate_state(
          exp, state.params, step, workdir, writer, eval_step))
  try:
    state = training_loop.run(
        config, workdir, create_train_state(exp, config.seed), task,
        writer=writer, data_sharding=exp.data_sharding,
        learning_rate=learning_rate_schedule(config))
  finally:
    writer.flush()
  metrics = evaluate_state(exp, state.params, int(state.step), workdir, writer,
                           eval_step)
  writer.flush()
  return metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the latest checkpoint in `workdir` (eval-only mode)."""
  workdir = epath.Path(workdir)
  preflight.check(config)
  check_workdir(config, workdir)
  exp = setup(config)
  state = checkpointing.require_latest(workdir, create_train_state(exp, config.seed))
  writer = training_loop.metric_writer(workdir, asynchronous=False)
  metrics = evaluate_state(exp, state.params, int(state.step), workdir, writer)
  writer.flush()
  return metrics


