"""Optimisation-based inversion (Mahendran & Vedaldi), and our hybrid.

Instead of a trained decoder, search by gradient descent for an image x whose
features match the target phi0, under hand-made image priors:

  E(x) = C ||phi(x) - phi0||^2 / ||phi0||^2
         + (1 / B^alpha) mean_p ||x_p||^alpha                  (alpha-norm)
         + (V^-beta) mean_p sum_c (dx_pc^2 + dy_pc^2)^(beta/2)  (TV)
         [+ w mean_p ||x_p - d_p||^2 / B^2]                     (hybrid)

with x in the network's input space (BGR, mean-subtracted, 0-255), x_p the
colour vector of pixel p, forward differences dx, dy (the last one 0), and
the means over the H*W pixels of the image (of the jitter canvas).

Every constant follows the authors' code of the journal version,
`aravindhm/nnpreimage` (Mahendran & Vedaldi, "Visualizing Deep Convolutional
Neural Networks Using Natural Pre-images", IJCV 2016):
  * alpha = 6, beta = 2, B = x0_sigma = 80, V = B / 6.5, the bound
    B+ = x0_max = 160 (core/get_defaults.m);
  * the alpha-norm of the per-pixel colour norm and TV averaged over pixels
    (layers/l2.m, layers/tv.m), the feature term normalised by ||phi0||^2
    (experiments/exp_inversion.m);
  * momentum 0.9 with their AdaGrad-style step
    G <- 0.9 G + g^2,  v <- 0.9 v - g / (1/lr + sqrt(G)),  x <- x + v,
    with lr = H*W * LR, LR = 0.05 B^2 / alpha for 300 jittered iterations,
    then 0.1 LR for 50 more without jitter, started afresh from the first
    stage's image (core/nnpreimage.m, get_defaults.m,
    experiments/get_preimage_opts.m);
  * after every step each pixel's colour vector is scaled to norm <= B+
    (nnpreimage.m);
  * initialisation by uniform noise scaled so its 95th percentile is
    B / sqrt(3) (nnpreimage.m);
  * jitter: a canvas (jitter - 1) pixels larger, a random crop of it fed to
    the network at every iteration, jitter = max(round(stride / 4), 1) for
    a tap of total stride `stride` (get_preimage_opts.m).
C, the feature term's weight, is the one constant their code sweeps rather
than fixes (C in {1, 20, 100, 300}, experiments/exp_all.m); `feature_weight`
sets it, per layer by default (`FEATURE_WEIGHTS`, see there).

Our hybrid starts the same optimisation from the decoder's reconstruction
instead of noise, optionally with the anchor term (weight w) that keeps it
near that reconstruction: does the learned prior plus feature matching beat
both alone? Every result is the best of the initial image and the
un-jittered iterates by E, so the hybrid can never end with a higher
objective than the decoder's output it started from.

All of it runs as one jitted program per stage (`lax.fori_loop` over the
iterations) on batches sharded over the devices like the rest of the
project, and is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from inverter import errors, feature_transforms

METHODS = ("decoder", "optimize", "hybrid")
INITS = ("noise", "mean", "image")

# C per layer, one of the values of the authors' sweep {1, 20, 100, 300}
# (nnpreimage, experiments/exp_all.m), chosen by our sweep on Tiny ImageNet
# training images for conv1, fc6, fc8 and prob (the others follow their
# neighbours); docs/optimization.md has the sweep and the rule.
FEATURE_WEIGHTS = {"conv1": 300.0, "conv2": 300.0, "conv3": 300.0,
                   "conv4": 300.0, "conv5": 100.0, "fc6": 100.0,
                   "fc7": 100.0, "fc8": 100.0, "prob": 20.0}


class OptimizationError(errors.UserError, ValueError):
  """An optimisation setting that cannot work; the message says which."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the optimisation does; defaults are M&V's (see the module doc)."""
  iterations: int = 300  # the first, jittered stage
  final_iterations: int = 50  # the second stage, no jitter, 0.1 LR
  feature_weight: float = 0.0  # C; 0 = FEATURE_WEIGHTS[layer]
  alpha: float = 6.0
  beta: float = 2.0
  pixel_scale: float = 80.0  # B
  tv_divisor: float = 6.5  # V = B / tv_divisor
  bound: float = 160.0  # B+
  momentum: float = 0.9
  learning_rate: float = 0.05 * 80.0 ** 2 / 6.0  # LR, per pixel
  final_learning_rate: float = 0.005 * 80.0 ** 2 / 6.0
  jitter: int = -1  # -1: max(round(stride / 4), 1); 0 or 1: none
  init: str = "noise"  # noise | mean | image (given, e.g. the decoder's)
  anchor_weight: float = 0.0  # w; the hybrid's pull to its start
  seed: int = 0

  @classmethod
  def from_config(cls, c: ml_collections.ConfigDict | dict) -> Settings:
    c = c.to_dict() if hasattr(c, "to_dict") else dict(c)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(c) - names)
    if unknown:
      raise OptimizationError(f"Unknown optimization option(s) {unknown};"
                              f" known: {', '.join(sorted(names))}.")
    settings = cls(**c)
    settings.check()
    return settings

  def check(self) -> None:
    problems = []
    if self.iterations < 1 or self.final_iterations < 0:
      problems.append(f"iterations={self.iterations} must be >= 1 and"
                      f" final_iterations={self.final_iterations} >= 0.")
    if self.init not in INITS:
      problems.append(f"init={self.init!r}: use one of {', '.join(INITS)}.")
    for name in ("alpha", "beta", "pixel_scale", "tv_divisor", "bound",
                 "learning_rate"):
      if getattr(self, name) <= 0:
        problems.append(f"{name}={getattr(self, name)} must be positive.")
    if self.feature_weight < 0 or self.anchor_weight < 0:
      problems.append("feature_weight and anchor_weight must be >= 0.")
    if not 0 <= self.momentum < 1:
      problems.append(f"momentum={self.momentum} must be in [0, 1).")
    if problems:
      raise OptimizationError("Optimisation settings: " + " ".join(problems))

  def weight_for(self, layer: str) -> float:
    return self.feature_weight or FEATURE_WEIGHTS.get(layer, 100.0)


# ------------------------------------------------------------- the priors


def alpha_norm(x: jax.Array, alpha: float) -> jax.Array:
  """Per image [N]: mean over pixels of ||x_p||^alpha (colour-vector norm),
  M&V's alpha-norm prior before its 1 / B^alpha weight."""
  squared = jnp.sum(jnp.square(x), axis=-1)
  return jnp.mean(squared ** (alpha / 2), axis=(1, 2))


def total_variation(x: jax.Array, beta: float) -> jax.Array:
  """Per image [N]: sum over channels, mean over pixels, of
  (dx^2 + dy^2)^(beta/2), forward differences with the last one 0: M&V's TV
  prior before its V^-beta weight."""
  dy = jnp.concatenate([x[:, 1:] - x[:, :-1], jnp.zeros_like(x[:, :1])], 1)
  dx = jnp.concatenate([x[:, :, 1:] - x[:, :, :-1],
                        jnp.zeros_like(x[:, :, :1])], 2)
  squared = jnp.square(dx) + jnp.square(dy)
  # beta = 2 needs no root; other betas get a floor against d/ds s^(b/2) at 0.
  power = squared if beta == 2 else (squared + 1e-8) ** (beta / 2)
  return jnp.mean(jnp.sum(power, axis=-1), axis=(1, 2))


def relative_feature_error(features: jax.Array,
                           target: jax.Array) -> jax.Array:
  """Per image [N]: ||phi(x_hat) - phi0|| / ||phi0||."""
  axes = tuple(range(1, target.ndim))
  diff = jnp.sqrt(jnp.sum(jnp.square(features - target), axis=axes))
  return diff / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(target), axis=axes)),
                            1e-12)


# ------------------------------------------------------------ the problem


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
  """What to match: the encoder up to the inverted tap, its input size, the
  tap's total stride (for the jitter) and the layer (for C)."""
  features: Callable[[Any, jax.Array], jax.Array]  # (params, x) -> phi(x)
  encoder_params: Any
  input_size: int
  stride: int
  layer: str
  mesh: jax.sharding.Mesh


def problem_for(exp: Any) -> Problem:
  """The `Problem` of an inverter's `train.Experiment`: its encoder, input
  adapter, tap and feature transform, with gradients reaching the image."""
  from inverter.models import encoders  # pylint: disable=g-import-not-at-top
  transform = exp.config.get("feature_transform", "")

  def features(params, x):
    taps = exp.encoder.apply({"params": params}, exp.encoder_input(x),
                             until=exp.tap)
    return feature_transforms.apply(transform, taps[exp.tap])

  size = int(exp.config.encoder.input_size)
  shapes = encoders.tap_shapes(exp.encoder)
  names = list(shapes)
  spatial = [shapes[n] for n in names[:names.index(exp.tap) + 1]
             if len(shapes[n]) == 3]
  stride = max(1, round(size / spatial[-1][0])) if spatial else 1
  return Problem(features, exp.encoder_params, size, stride,
                 exp.config.layer, exp.mesh)


def jitter_amount(settings: Settings, problem: Problem) -> int:
  if settings.jitter >= 0:
    return max(settings.jitter, 1)
  return max(int(round(problem.stride / 4)), 1)


def _energy(settings: Settings, problem: Problem, weight: float,
            params: Any, canvas: jax.Array, offset: jax.Array,
            target: jax.Array, anchor: jax.Array) -> jax.Array:
  """E per image [N] for the crop of `canvas` at `offset` (y, x)."""
  n, size = canvas.shape[0], problem.input_size
  x = jax.lax.dynamic_slice(canvas, (0, offset[0], offset[1], 0),
                            (n, size, size, 3))
  feats = problem.features(params, x)
  axes = tuple(range(1, target.ndim))
  feature_term = weight * jnp.sum(jnp.square(feats - target), axis=axes) / (
      jnp.maximum(jnp.sum(jnp.square(target), axis=axes), 1e-12))
  b = settings.pixel_scale
  energy = (feature_term
            + alpha_norm(canvas, settings.alpha) / b ** settings.alpha
            + total_variation(canvas, settings.beta)
            * (settings.tv_divisor / b) ** settings.beta)
  if settings.anchor_weight:
    energy += settings.anchor_weight * jnp.mean(
        jnp.sum(jnp.square(x - anchor), axis=-1), axis=(1, 2)) / b ** 2
  return energy


def _project(x: jax.Array, bound: float) -> jax.Array:
  """Each pixel's colour vector scaled to norm <= bound."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x * jnp.minimum(bound / jnp.maximum(norm, 1e-12), 1.0)


def _stage(settings: Settings, problem: Problem, weight: float,
           iterations: int, learning_rate: float, jitter: int,
           params: Any, start: jax.Array, target: jax.Array,
           anchor: jax.Array, key: jax.Array, best: jax.Array,
           best_energy: jax.Array):
  """`iterations` M&V steps from `start` (the visible image); returns the
  final image, and the best (image, E) of the un-jittered iterates."""
  pad = jitter - 1
  margin = pad // 2
  canvas = jnp.pad(start, ((0, 0), (margin, pad - margin),
                           (margin, pad - margin), (0, 0)), mode="edge")
  lr = canvas.shape[1] * canvas.shape[2] * learning_rate
  energy = functools.partial(_energy, settings, problem, weight, params)
  def total(canvas, offset):
    per_image = energy(canvas, offset, target, anchor)
    return jnp.sum(per_image), per_image

  grad = jax.grad(total, has_aux=True)
  centre = jnp.array([margin, margin])

  def body(t, carry):
    canvas, velocity, accum, best, best_energy = carry
    offset = (jax.random.randint(jax.random.fold_in(key, t), (2,), 0, jitter)
              if jitter > 1 else centre)
    g, current = grad(canvas, offset)
    if jitter == 1:  # E of this very iterate: keep the best so far.
      better = current < best_energy
      best = jnp.where(better[:, None, None, None], canvas, best)
      best_energy = jnp.minimum(current, best_energy)
    accum = settings.momentum * accum + jnp.square(g)
    velocity = settings.momentum * velocity - g / (1 / lr + jnp.sqrt(accum))
    canvas = _project(canvas + velocity, settings.bound)
    return canvas, velocity, accum, best, best_energy

  zeros = jnp.zeros_like(canvas)
  canvas, _, _, best, best_energy = jax.lax.fori_loop(
      0, iterations, body, (canvas, zeros, zeros, best, best_energy))
  size = problem.input_size
  final = canvas[:, margin:margin + size, margin:margin + size]
  final_energy = energy(final, jnp.array([0, 0]), target, anchor)
  better = final_energy < best_energy
  best = jnp.where(better[:, None, None, None], final, best)
  return final, best, jnp.minimum(final_energy, best_energy)


@functools.lru_cache(maxsize=32)
def _program(settings: Settings, problem: Problem):
  """The jitted optimisation for one problem: (params, target, start,
  anchor, key) -> (image, E, relative feature error), all per image."""
  weight = settings.weight_for(problem.layer)
  jitter = jitter_amount(settings, problem)
  data = NamedSharding(problem.mesh, P("data"))
  rep = NamedSharding(problem.mesh, P())

  def run(params, target, start, anchor, key):
    energy = functools.partial(_energy, settings, problem, weight, params)
    origin = jnp.array([0, 0])
    best_energy = energy(start, origin, target, anchor)
    best = start
    image, best, best_energy = _stage(
        settings, problem, weight, settings.iterations,
        settings.learning_rate, jitter, params, start, target, anchor,
        jax.random.fold_in(key, 0), best, best_energy)
    if settings.final_iterations:
      _, best, best_energy = _stage(
          settings, problem, weight, settings.final_iterations,
          settings.final_learning_rate, 1, params, image, target, anchor,
          jax.random.fold_in(key, 1), best, best_energy)
    error = relative_feature_error(problem.features(params, best), target)
    return best, best_energy, error

  return jax.jit(run, in_shardings=(rep, data, data, data, rep),
                 out_shardings=(data, data, data))


def energy(settings: Settings, problem: Problem, images: np.ndarray,
           target: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
  """E per image [N] of `images` [N, S, S, 3] (no jitter): what `invert`
  minimises."""
  images = jnp.asarray(images, jnp.float32)
  anchor = images if anchor is None else jnp.asarray(anchor, jnp.float32)
  return np.asarray(_energy(settings, problem,
                            settings.weight_for(problem.layer),
                            problem.encoder_params, images, jnp.array([0, 0]),
                            jnp.asarray(target, jnp.float32), anchor))


@functools.lru_cache(maxsize=32)
def compiled(settings: Settings, problem: Problem, target_shape: tuple[int, ...]):
  """The optimisation compiled ahead of time for targets of `target_shape`
  (cached): call it first to keep compilation out of a timing."""
  data = NamedSharding(problem.mesh, P("data"))
  rep = NamedSharding(problem.mesh, P())
  size = problem.input_size
  images = jax.ShapeDtypeStruct((target_shape[0], size, size, 3),
                                jnp.float32, sharding=data)
  abstract = (
      jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                  sharding=rep),
                   problem.encoder_params),
      jax.ShapeDtypeStruct(target_shape, jnp.float32, sharding=data),
      images, images,
      jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep))
  return _program(settings, problem).lower(*abstract).compile()


def initial_images(settings: Settings, shape: tuple[int, ...],
                   key: jax.Array) -> jax.Array:
  """M&V's start: uniform noise whose 95th percentile is B / sqrt(3)
  ('noise'), or the mean image, 0 in the input space ('mean')."""
  if settings.init == "mean":
    return jnp.zeros(shape, jnp.float32)
  noise = jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
  return noise / jnp.quantile(noise, 0.95) * settings.pixel_scale / np.sqrt(3)


def invert(settings: Settings, problem: Problem, target: np.ndarray,
           start: np.ndarray | None = None,
           anchor: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Images [N, S, S, 3] whose features match `target` [N, ...].

  `start`: the initial images for `settings.init == 'image'` (the hybrid
  passes the decoder's reconstructions, resized to the input size);
  `anchor`: what the anchor term pulls towards (default: `start`). N must be
  a multiple of the device count (callers pad). Returns `image`, `energy`
  (E, per image) and `feature_error` (||phi(x) - phi0|| / ||phi0||).
  """
  size = problem.input_size
  shape = (len(target), size, size, 3)
  key = jax.random.key(settings.seed)
  if settings.init == "image":
    if start is None or tuple(start.shape) != shape:
      raise OptimizationError(
          f"init='image' needs start images of shape {shape}, got"
          f" {None if start is None else tuple(start.shape)}.")
    start = jnp.asarray(start, jnp.float32)
  else:
    start = initial_images(settings, shape, jax.random.fold_in(key, 7))
  anchor = start if anchor is None else jnp.asarray(anchor, jnp.float32)
  program = compiled(settings, problem, tuple(target.shape))
  image, energy, error = program(
      problem.encoder_params, jnp.asarray(target, jnp.float32), start,
      anchor, key)
  return dict(image=np.asarray(image), energy=np.asarray(energy),
              feature_error=np.asarray(error))
