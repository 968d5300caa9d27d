r"""Full-size fc6 inverter train step on one NVIDIA GPU: JAX against PyTorch.

What it measures, on the GPU it runs on, in one run:
  * JAX: the inverter of configs/fc6.py (caffenet encoder at 227x227 with
    random weights, the fc6 up-convolutional decoder, L2 loss, Adam), for
    compute_dtype float32 and bfloat16, at batch 64 and 256: median step time
    over --steps steps after compilation and --warmup steps, images/s, peak
    GPU memory (`memory_stats()['peak_bytes_in_use']`), and achieved FLOP/s
    = XLA's cost-analysis FLOPs of the compiled step / step time, against the
    chip's dense peak (H100 SXM/PCIe, H200, A100; 'unknown' otherwise);
  * PyTorch: the same network and step written here (frozen Caffe AlexNet to
    the inverted tap with grouped convolutions, LRN and ceil-mode max-pooling;
    the decoder of inverter/models/decoder.py with transposed convolutions,
    for vector (fc6..prob) and map (conv1..conv5) taps, the latter's loss
    against the input resized to the decoder output; Adam on the decoder,
    L2 loss), float32 and bfloat16 autocast, with
    `cudnn.benchmark`, fused Adam, `torch.cuda.max_memory_allocated`, and
    optionally `torch.compile` (--torch_compile).
The parameter counts of the two implementations are compared (encoder up to
the tap, decoder); a mismatch fails the run. With --check (on by default with
--smoke) the JAX weights are copied into the PyTorch net on the CPU and both
reconstructions, decoder gradients and losses before and after one Adam step
are compared.

Each (framework, dtype) runs in its own process, batch sizes in rising order,
so one framework's allocator never holds memory the other needs and the peak
memory of a row is that process's peak so far (= the larger batch's).
float32 rows allow TF32 tensor-core math in both frameworks (JAX's default on
GPUs; PyTorch is set to match) and are compared with the TF32 peak;
--no_tf32 forces full float32 in both (JAX precision 'highest') and the
plain FP32 peak. FLOP/s of PyTorch rows use XLA's count for the same network,
dtype and batch (PyTorch's own FlopCounterMode count is in the JSON).

JAX builds the step with `inverter.train` (`setup`, `create_train_state`,
`make_train_step`, `global_batch`) when it imports; `inverter.train` needs
TensorFlow and clu (through the input pipeline and the metric writers), which
GPU images often lack, so without them the step is built from the same model
modules (encoders, decoder, encoder_weights, preprocessing) with the same loss
and optimizer ("standalone" in the output; --check shows both give the same
losses where both import). The rest needs jax, flax, optax, orbax, etils,
absl, ml_collections and torch.

  python benchmarks/gpu_train_step.py                     # on a GPU machine
  python benchmarks/gpu_train_step.py --torch_compile --steps 30
  python benchmarks/gpu_train_step.py --smoke             # CPU, proves it runs
  python benchmarks/gpu_train_step.py --smoke --config configs/conv2.py:demo

The network and step here (`describe_net`, `torch_modules`, `torch_train`,
`build_jax_train`, `check_worker`) also serve benchmarks/cpu_train_step.py,
the interleaved CPU comparison over the presets.

Results print as a table and one JSON line, and go to
$OUT/gpu_train_step.json when $OUT is set. Four processes, each compiling
twice, should fit a 15-minute GPU lease (an estimate: not yet run on a GPU;
--worker_timeout bounds each process). On the CPU, --smoke takes about 3
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: plain FP32 on
# CUDA cores, TF32 and BF16 on tensor cores.
PEAK_TFLOPS = {
    "H100 SXM": dict(fp32=66.9, tf32=494.7, bf16=989.4),
    "H100 PCIe": dict(fp32=51.2, tf32=378.0, bf16=756.0),
    "H200": dict(fp32=66.9, tf32=494.7, bf16=989.4),
    "A100": dict(fp32=19.5, tf32=156.0, bf16=312.0),
}

LOSS_REL_TOL = 1e-4      # loss before the first step (same weights, fp32)
STEP_REL_TOL = 1e-3      # loss after one Adam step
RECON_REL_TOL = 1e-4     # max |recon diff| / max |recon|
GRAD_REL_TOL = 1e-3      # |grad diff| / |grad| of the worst decoder tensor


def chip_of(device_kind: str) -> str | None:
  """'NVIDIA H100 80GB HBM3' -> 'H100 SXM'; None for chips not in the table."""
  kind = device_kind.lower()
  if "h200" in kind:
    return "H200"
  if "h100" in kind:
    return "H100 PCIe" if "pcie" in kind else "H100 SXM"
  if "a100" in kind:
    return "A100"
  return None


def peak_for(chip: str | None, dtype: str, tf32: bool):
  """(peak TFLOP/s, which peak) for a row, or (None, reason)."""
  if chip is None:
    return None, "unknown chip"
  key = "bf16" if dtype == "bfloat16" else "tf32" if tf32 else "fp32"
  return PEAK_TFLOPS[chip][key], f"{chip} dense {key.upper()}"


def log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
        flush=True)


# ----------------------------------------------------------- configuration


def load_config(spec: str):
  """'configs/fc6.py[:ARG]' -> the config, as --config= would load it."""
  path, _, arg = spec.partition(":")
  path = pathlib.Path(path)
  if not path.is_absolute():
    path = REPO_ROOT / path
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def make_config(spec: str, dtype: str, overrides: dict | None = None):
  """The config with random encoder weights, `dtype` compute and dotted
  `overrides` ({'encoder.input_size': 36}) applied."""
  config = load_config(spec)
  config.encoder.weights = "random"
  config.compute_dtype = dtype
  for key, value in (overrides or {}).items():
    *parents, last = key.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[last] = value
  return config


def encoder_param_names(arch: str, tap: str) -> list[str]:
  """Encoder layers with parameters that the forward pass to `tap` uses."""
  from inverter.models import encoders  # pylint: disable=g-import-not-at-top
  taps = list(encoders.tap_names(arch))
  used = taps[:taps.index(tap) + 1]
  return [n for n in used if n[:-1] in ("conv", "fc") and n[-1].isdigit()]


def count_params(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def describe_net(config) -> dict[str, Any]:
  """Everything the PyTorch mirror needs, plus JAX's parameter counts;
  computed from shapes only (no device work)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from inverter.models import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  from inverter.models import encoders, preprocessing  # pylint: disable=g-import-not-at-top

  enc = config.encoder
  if enc.arch not in ("caffenet", "alexnet"):
    raise SystemExit(f"encoder.arch={enc.arch!r}: the PyTorch mirror here is"
                     " the Caffe AlexNet only (caffenet, alexnet).")
  if config.get("feature_transform", ""):
    raise SystemExit("feature_transform must be empty for this benchmark.")
  if not preprocessing.is_caffe_space(enc.preprocessing):
    raise SystemExit("The encoder must take Caffe-space input.")
  tap = enc.tap or encoders.default_tap(enc.arch, config.layer)
  model = encoders.from_config(enc)
  feature_shape = encoders.tap_shapes(model)[tap]
  size = int(enc.input_size)
  dec = decoder_lib.resolve(config.decoder, feature_shape, size)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  enc_params = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x)["params"], x)
  decoder = decoder_lib.from_config(config.decoder, feature_shape, size)
  dec_params = jax.eval_shape(lambda: decoder.init(
      jax.random.key(0), jnp.zeros((1, *feature_shape)))["params"])
  used = encoder_param_names(enc.arch, tap)
  return dict(
      layer=config.layer, arch=enc.arch, tap=tap, input_size=size,
      conv1=[int(enc.conv1_kernel), int(enc.conv1_stride),
             int(enc.conv1_padding)],
      widths=[int(w) for w in enc.widths], groups=int(enc.groups),
      fc_width=int(enc.fc_width), num_classes=int(enc.num_classes),
      lrn=dict(enc.lrn), feature_shape=[int(s) for s in feature_shape],
      feature_size=int(feature_shape[-1]),
      decoder=dict(fc_widths=list(dec["fc_widths"]),
                   start_shape=list(dec["start_shape"]),
                   conv_channels=list(dec["conv_channels"]),
                   upconv_channels=list(dec["upconv_channels"]),
                   kernel_size=dec["kernel_size"], leak=dec["leak"],
                   crop_to=dec["crop_to"], output_size=dec["output_size"]),
      optimizer=dict(learning_rate=float(config.optimizer.learning_rate),
                     b1=float(config.optimizer.b1),
                     b2=float(config.optimizer.b2)),
      jax_params=dict(
          encoder_to_tap=count_params({k: enc_params[k] for k in used}),
          encoder_all=count_params(enc_params),
          decoder=count_params(dec_params)))


# --------------------------------------------------------------------- JAX


class JaxTrain:
  """A built inverter train step: `step(state, encoder_params, images)`."""

  def __init__(self, path: str, step, new_state: Callable[[], Any],
               encoder_params, put: Callable, forward: Callable | None = None,
               loss: Callable | None = None):
    self.path = path
    self.step = step
    self.new_state = new_state
    self.encoder_params = encoder_params
    self.put = put
    self.forward = forward  # (params, encoder_params, images) -> recon
    self.loss = loss  # (params, encoder_params, images) -> loss


def build_jax_train(config, force_standalone: bool = False) -> JaxTrain:
  """The project's train step via inverter.train, or the standalone one
  when inverter.train does not import (no TensorFlow / clu)."""
  if not force_standalone:
    try:
      from inverter import train  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      log(f"inverter.train does not import ({e}); using the standalone step.")
    else:
      exp = train.setup(config)
      return JaxTrain("inverter.train", train.make_train_step(exp),
                      lambda: train.create_train_state(exp, seed=0),
                      exp.encoder_params,
                      lambda images: train.global_batch(exp, images))
  return standalone_jax_train(config)


def standalone_jax_train(config) -> JaxTrain:
  """The train step of inverter.train, built from the model modules alone:
  frozen encoder to the tap (stop_gradient), decoder, mean squared error
  against the input images (resized to the decoder's output, antialiased
  bilinear, where a map decoder's output differs from the input size, as
  `train.targets_for` does), Adam on the decoder, state donated. The
  learning rate is the config's base rate, constant."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax.training import train_state  # pylint: disable=g-import-not-at-top

  from inverter import encoder_weights  # pylint: disable=g-import-not-at-top
  from inverter.models import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  from inverter.models import encoders, preprocessing  # pylint: disable=g-import-not-at-top

  dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
  encoder = encoders.from_config(config.encoder, dtype=dtype)
  tap = config.encoder.tap or encoders.default_tap(config.encoder.arch,
                                                   config.layer)
  feature_shape = encoders.tap_shapes(encoder)[tap]
  size = config.encoder.input_size
  output_size = decoder_lib.resolve(config.decoder, feature_shape,
                                    size)["output_size"]
  decoder = decoder_lib.from_config(config.decoder, feature_shape, size,
                                    dtype=dtype)
  encoder_params = jax.device_put(encoder_weights.load(config.encoder,
                                                       encoder))
  encoder_input = preprocessing.encoder_input_fn(config.encoder.preprocessing,
                                                 config.data)
  opt = config.optimizer
  tx = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2)

  def forward(params, enc_params, images):
    feats = encoder.apply({"params": enc_params}, encoder_input(images),
                          until=tap)[tap]
    return decoder.apply({"params": params}, jax.lax.stop_gradient(feats))

  def loss_fn(params, enc_params, images):
    targets = images
    if output_size != size:
      targets = jax.image.resize(
          images, (images.shape[0], output_size, output_size, 3), "linear",
          antialias=True)
    return jnp.mean(jnp.square(forward(params, enc_params, images) - targets))

  def step(state, enc_params, images):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, enc_params,
                                              images)
    return state.apply_gradients(grads=grads), loss

  dummy = jnp.zeros((1, *feature_shape), jnp.float32)

  @jax.jit
  def init(key):
    params = decoder.init(key, dummy)["params"]
    return train_state.TrainState.create(apply_fn=decoder.apply,
                                         params=params, tx=tx)

  return JaxTrain("standalone", jax.jit(step, donate_argnums=0),
                  lambda: init(jax.random.key(0)), encoder_params,
                  jax.device_put, jax.jit(forward), loss_fn)


def xla_flops(compiled) -> float | None:
  """FLOPs of a compiled computation by XLA's cost analysis."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return float(flops) if flops is not None else None


def time_steps(once: Callable[[], Any], warmup: int, steps: int):
  """(first step s, [timed step s]); `once` runs one synchronised step."""
  start = time.perf_counter()
  once()
  first = time.perf_counter() - start
  for _ in range(max(0, warmup - 1)):
    once()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    once()
    times.append(time.perf_counter() - start)
  return first, times


def jax_stepper(bench: JaxTrain, images, state=None):
  """(once, compiled step, compile s, holder): `once()` runs one
  synchronised step on `images` (host NHWC) from `state` (default a new
  one), keeping the state and the step's loss in holder['state'/'loss']."""
  state = bench.new_state() if state is None else state
  images = bench.put(images)
  start = time.perf_counter()
  compiled = bench.step.lower(state, bench.encoder_params, images).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def once():
    holder["state"], loss = compiled(holder["state"], bench.encoder_params,
                                     images)
    loss.block_until_ready()
    holder["loss"] = loss
    return loss

  return once, compiled, compile_s, holder


def time_jax(bench: JaxTrain, spec: dict, batch: int, size: int,
             device) -> dict:
  """Compiles and times one batch size; its arrays die with the call."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  once, compiled, compile_s, holder = jax_stepper(
      bench, np.random.default_rng(0).normal(
          0, 60, (batch, size, size, 3)).astype(np.float32))
  first, times = time_steps(once, spec["warmup"], spec["steps"])
  stats = device.memory_stats() or {}
  median = statistics.median(times)
  return dict(compile_s=compile_s, flops_per_step=xla_flops(compiled),
              first_step_s=first, median_s=median, min_s=min(times),
              max_s=max(times), steps=len(times),
              images_per_s=batch / median,
              peak_bytes=stats.get("peak_bytes_in_use"),
              loss=float(holder["loss"]))


def jax_worker(spec: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  if not spec["smoke"] and backend != "gpu":
    raise SystemExit(f"JAX sees no GPU (backend {backend!r}, devices"
                     f" {jax.devices()}); install a CUDA build of jax"
                     " (jax[cuda12] / jax[cuda13]) or use --smoke.")
  if not spec["tf32"]:
    jax.config.update("jax_default_matmul_precision", "highest")
  device = jax.devices()[0]
  config = make_config(spec["config"], spec["dtype"])
  bench = build_jax_train(config)
  size = config.encoder.input_size
  rows = []
  for batch in spec["batch_sizes"]:
    row = dict(framework="jax", dtype=spec["dtype"], batch=batch,
               path=bench.path)
    try:
      row.update(time_jax(bench, spec, batch, size, device))
    except Exception as e:  # pylint: disable=broad-except
      row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    log(f"jax {spec['dtype']} batch {batch}: "
        + (f"{row['images_per_s']:.1f} images/s" if "images_per_s" in row
           else row["error"]))
    rows.append(row)
  return dict(device_kind=device.device_kind, backend=backend,
              jax_version=jax.__version__, rows=rows)


# ----------------------------------------------------------------- PyTorch


def torch_modules(net: dict):
  """(encoder, decoder) torch.nn.Modules mirroring the JAX inverter.

  Encoder: Caffe's AlexNet (NCHW) up to `net['tap']`; fc6 reads pool5
  flattened in H, W, C order, as the Flax model does, so weights map
  one-to-one. Decoder of a vector tap (fc6, fc7, fc8, prob): fc layers with
  leaky ReLU, reshape to the start map (H, W, C order), stride-2 transposed
  convolutions with leaky ReLU between them, centre crop to the input size.
  Decoder of a map tap (conv1..conv5): 3x3 'same' convolutions with leaky
  ReLU at the feature resolution, then the same transposed convolutions, no
  crop (the loss compares with the resized input, see `torch_train`). The
  Flax UpConv is a correlation of the 2x zero-upsampled input, padded
  (k//2, k - k//2), with a [k, k, in, out] kernel: that is
  ConvTranspose2d(stride 2, padding k - 1 - k//2, output_padding
  k - 2 (k//2)) with the kernel flipped spatially.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  k1, s1, p1 = net["conv1"]
  w = net["widths"]
  g = net["groups"]
  lrn = net["lrn"]
  tap = net["tap"]
  order = {"caffenet": ("pool", "norm"), "alexnet": ("norm", "pool")}[
      net["arch"]]

  class Encoder(nn.Module):

    def __init__(self):
      super().__init__()
      self.layers = nn.ModuleDict()
      stages = []

      def conv(name, cin, cout, k, s, p, groups):
        self.layers[name] = nn.Conv2d(cin, cout, k, s, p, groups=groups)
        stages.append((name, self.layers[name]))

      def add(name, fn):
        stages.append((name, fn))

      pool = lambda h: F.max_pool2d(h, 3, 2, ceil_mode=True)
      norm = lambda h: F.local_response_norm(h, int(lrn["size"]),
                                             alpha=lrn["alpha"],
                                             beta=lrn["beta"], k=lrn["k"])
      conv("conv1", 3, w[0], k1, s1, p1, 1)
      add("relu1", F.relu)
      for op in order:
        add(f"{op}1", pool if op == "pool" else norm)
      conv("conv2", w[0], w[1], 5, 1, 2, g)
      add("relu2", F.relu)
      for op in order:
        add(f"{op}2", pool if op == "pool" else norm)
      conv("conv3", w[1], w[2], 3, 1, 1, 1)
      add("relu3", F.relu)
      conv("conv4", w[2], w[3], 3, 1, 1, g)
      add("relu4", F.relu)
      conv("conv5", w[3], w[4], 3, 1, 1, g)
      add("relu5", F.relu)
      add("pool5", pool)
      side = net["input_size"]
      side = (side + 2 * p1 - k1) // s1 + 1
      for _ in range(3):
        side = -(-(side - 3) // 2) + 1
      flat = w[4] * side * side
      fc = {"fc6": (flat, net["fc_width"]),
            "fc7": (net["fc_width"], net["fc_width"]),
            "fc8": (net["fc_width"], net["num_classes"])}
      for i in (6, 7, 8):
        self.layers[f"fc{i}"] = nn.Linear(*fc[f"fc{i}"])
        layer = self.layers[f"fc{i}"]
        if i == 6:
          add("fc6", lambda h, fc=layer: fc(h.permute(0, 2, 3, 1).flatten(1)))
        else:
          add(f"fc{i}", layer)
        if i < 8:
          add(f"relu{i}", F.relu)
      add("prob", lambda h: torch.softmax(h.float(), dim=-1))
      names = [n for n, _ in stages]
      self.stages = stages[:names.index(tap) + 1]
      # Drop layers past the tap, so the parameter count is the used part.
      for name in list(self.layers):
        if name not in names[:names.index(tap) + 1]:
          del self.layers[name]

    def forward(self, x):
      for _, op in self.stages:
        x = op(x)
      return x

  d = net["decoder"]

  class Decoder(nn.Module):

    def __init__(self):
      super().__init__()
      self.is_map = len(net["feature_shape"]) == 3
      widths = [net["feature_size"], *d["fc_widths"]]
      self.fcs = nn.ModuleList(nn.Linear(a, b)
                               for a, b in zip(widths, widths[1:]))
      convs = [net["feature_size"], *d["conv_channels"]] if self.is_map else []
      self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1)
                                 for a, b in zip(convs, convs[1:]))
      k = d["kernel_size"]
      chans = [convs[-1] if self.is_map else d["start_shape"][-1],
               *d["upconv_channels"]]
      self.upconvs = nn.ModuleList(
          nn.ConvTranspose2d(a, b, k, stride=2, padding=k - 1 - k // 2,
                             output_padding=k - 2 * (k // 2))
          for a, b in zip(chans, chans[1:]))

    def forward(self, h):
      act = lambda v: F.leaky_relu(v, d["leak"])
      if not self.is_map:
        for fc in self.fcs:
          h = act(fc(h))
        hh, ww, cc = d["start_shape"]
        h = h.reshape(h.shape[0], hh, ww, cc).permute(0, 3, 1, 2)
      for conv in self.convs:
        h = act(conv(h))
      for i, up in enumerate(self.upconvs):
        h = up(h)
        if i < len(self.upconvs) - 1:
          h = act(h)
      h = h.float()
      crop = d["crop_to"]
      if crop is not None and h.shape[2] > crop:
        top, left = (h.shape[2] - crop) // 2, (h.shape[3] - crop) // 2
        h = h[:, :, top:top + crop, left:left + crop]
      return h

  return Encoder(), Decoder()


def copy_jax_params(encoder, decoder, enc_params, dec_params) -> None:
  """Loads Flax params (host arrays) into the PyTorch mirror."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  def put(param, value):
    value = np.array(value, np.float32)  # A writable copy.
    assert tuple(param.shape) == value.shape, (param.shape, value.shape)
    with torch.no_grad():
      param.copy_(torch.from_numpy(value))

  for name, layer in encoder.layers.items():
    p = enc_params[name]
    kernel = np.asarray(p["kernel"])
    put(layer.weight, kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4
        else kernel.T)
    put(layer.bias, p["bias"])
  for name, (jax_key, kind) in decoder_param_keys(decoder).items():
    param = decoder.get_parameter(name)
    put(param, torch_param_layout(np.asarray(dec_params[jax_key][kind]),
                                  param.ndim, jax_key.startswith("upconv")))


def decoder_param_keys(decoder) -> dict[str, tuple[str, str]]:
  """PyTorch decoder parameter name -> (Flax layer name, kernel/bias)."""
  keys = {}
  for i in range(len(decoder.fcs)):
    keys[f"fcs.{i}.weight"] = (f"fc{i + 1}", "kernel")
    keys[f"fcs.{i}.bias"] = (f"fc{i + 1}", "bias")
  for i in range(len(decoder.convs)):
    keys[f"convs.{i}.weight"] = (f"conv{i + 1}", "kernel")
    keys[f"convs.{i}.bias"] = (f"conv{i + 1}", "bias")
  for i in range(len(decoder.upconvs)):
    keys[f"upconvs.{i}.weight"] = (f"upconv{i + 1}", "kernel")
    keys[f"upconvs.{i}.bias"] = (f"upconv{i + 1}", "bias")
  return keys


def torch_param_layout(value, ndim: int, upconv: bool = True):
  """A Flax decoder array in the PyTorch layout: Dense [in, out] -> [out,
  in]; UpConv [k, k, in, out] -> ConvTranspose2d [in, out, k, k], flipped
  spatially (a transposed convolution correlates with the flipped kernel);
  Conv (`upconv=False`) [k, k, in, out] -> Conv2d [out, in, k, k]."""
  if ndim == 2:
    return value.T
  if ndim == 4 and not upconv:
    return value.transpose(3, 2, 0, 1)
  if ndim == 4:
    return value[::-1, ::-1].transpose(2, 3, 0, 1)
  return value


def torch_train(net: dict, batch: int, dtype: str, device: str,
                channels_last: bool, compile_: bool, images=None):
  """(encoder, decoder, optimizer, images, step, eager loss fn)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  encoder, decoder = torch_modules(net)
  encoder.to(device).eval()
  encoder.requires_grad_(False)
  decoder.to(device).train()
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  encoder.to(memory_format=fmt)
  decoder.to(memory_format=fmt)
  opt = net["optimizer"]
  optimizer = torch.optim.Adam(
      decoder.parameters(), lr=opt["learning_rate"],
      betas=(opt["b1"], opt["b2"]), eps=1e-8,
      fused=device == "cuda" or None)
  size = net["input_size"]
  if images is None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen) * 60
  images = images.to(device).contiguous(memory_format=fmt)
  amp = dtype == "bfloat16"
  out_size = net["decoder"]["output_size"]

  def loss_fn(x):
    with torch.no_grad(), torch.autocast(device, torch.bfloat16,
                                         enabled=amp):
      feats = encoder(x)
    with torch.autocast(device, torch.bfloat16, enabled=amp):
      recon = decoder(feats)
    target = x
    if out_size != size:  # A map decoder's output: the resized input, as
      # train.targets_for (antialiased bilinear; the same as jax.image.resize
      # to ~1e-6 relative).
      target = F.interpolate(x, size=(out_size, out_size), mode="bilinear",
                             antialias=True, align_corners=False)
    return torch.mean(torch.square(recon.float() - target))

  run_loss = torch.compile(loss_fn) if compile_ else loss_fn

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = run_loss(images)
    loss.backward()
    optimizer.step()
    return loss

  return encoder, decoder, optimizer, images, step, loss_fn


def time_torch(spec: dict, batch: int, device: str):
  """(timings, parameter counts) of one batch size; its models and tensors
  die with the call, before the next batch size's peak is measured."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  net = spec["net"]
  encoder, decoder, _, _, step, _ = torch_train(
      net, batch, spec["dtype"], device, spec["channels_last"],
      spec["compile"])
  params = dict(encoder_to_tap=sum(p.numel() for p in encoder.parameters()),
                decoder=sum(p.numel() for p in decoder.parameters()))
  holder = {}

  def once():
    holder["loss"] = step().detach()
    sync()

  first, times = time_steps(once, spec["warmup"], spec["steps"])
  median = statistics.median(times)
  row = dict(first_step_s=first, median_s=median, min_s=min(times),
             max_s=max(times), steps=len(times), images_per_s=batch / median,
             loss=float(holder["loss"]),
             peak_bytes=(torch.cuda.max_memory_allocated()
                         if device == "cuda" else None))
  if spec["compile"]:  # The counter sees eager ops only.
    _, _, _, _, step, _ = torch_train(
        net, batch, spec["dtype"], device, spec["channels_last"], False)
  counter = FlopCounterMode(display=False)
  with counter:  # One more step, outside the timing.
    step()
  row["torch_flop_counter"] = float(counter.get_total_flops())
  return row, params


def torch_worker(spec: dict) -> dict:
  import torch  # pylint: disable=g-import-not-at-top

  device = "cpu" if spec["smoke"] else "cuda"
  if device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("PyTorch sees no CUDA GPU (torch.cuda.is_available() is"
                     " False); use --smoke for a CPU run.")
  torch.backends.cudnn.benchmark = True
  torch.backends.cuda.matmul.allow_tf32 = spec["tf32"]
  torch.backends.cudnn.allow_tf32 = spec["tf32"]
  name = "torch+compile" if spec["compile"] else "torch"
  rows, params = [], None
  for batch in spec["batch_sizes"]:
    row = dict(framework=name, dtype=spec["dtype"], batch=batch,
               channels_last=spec["channels_last"])
    try:
      if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
      measured, params = time_torch(spec, batch, device)
      row.update(measured)
    except Exception as e:  # pylint: disable=broad-except
      row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    log(f"{name} {spec['dtype']} batch {batch}: "
        + (f"{row['images_per_s']:.1f} images/s" if "images_per_s" in row
           else row["error"]))
    rows.append(row)
  kind = (torch.cuda.get_device_name(0) if device == "cuda" else "cpu")
  return dict(device_kind=kind, torch_version=torch.__version__, rows=rows,
              params=params)


# ------------------------------------------------------- equivalence check


def check_worker(spec: dict) -> dict:
  """On the CPU in float32: JAX weights copied into the PyTorch mirror give
  the same reconstruction, decoder gradients and loss before and after one
  Adam step; the standalone JAX step agrees with inverter.train's where
  that imports (unless spec['compare_train'] is False). The config's
  learning-rate schedule is made constant here (the standalone step and
  PyTorch use the base rate; a preset's warm-up would start at 0)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  torch.backends.cudnn.allow_tf32 = False
  torch.backends.cuda.matmul.allow_tf32 = False
  net = spec["net"]
  config = make_config(spec["config"], "float32", spec.get("overrides"))
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = 0
  size = net["input_size"]
  batch = int(spec.get("check_batch", 2))
  images = np.random.default_rng(3).normal(
      0, 60, (batch, size, size, 3)).astype(np.float32)

  def two_losses(bench: JaxTrain):
    state = bench.new_state()
    params0 = jax.device_get(state.params)
    x = bench.put(images)
    state, loss0 = bench.step(state, bench.encoder_params, x)
    state, loss1 = bench.step(state, bench.encoder_params, x)
    return params0, float(loss0), float(loss1)

  standalone = build_jax_train(config, force_standalone=True)
  dec0, loss0, loss1 = two_losses(standalone)
  enc_params = jax.device_get(standalone.encoder_params)
  recon_jax = np.asarray(standalone.forward(dec0, standalone.encoder_params,
                                            images))
  grads_jax = jax.device_get(jax.jit(jax.grad(standalone.loss))(
      dec0, standalone.encoder_params, images))
  out = dict(jax_loss0=loss0, jax_loss1=loss1)
  real = (build_jax_train(config) if spec.get("compare_train", True)
          else None)
  if real is not None and real.path == "inverter.train":
    _, r0, r1 = two_losses(real)
    out.update(train_loss0=r0, train_loss1=r1,
               train_vs_standalone_rel=max(abs(r0 - loss0) / abs(loss0),
                                           abs(r1 - loss1) / abs(loss1)))
  else:
    out["train_vs_standalone_rel"] = None

  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  encoder, decoder, optimizer, _, step, loss_fn = torch_train(
      net, batch, "float32", "cpu", False, False, images=x)
  copy_jax_params(encoder, decoder, enc_params, dec0)
  with torch.no_grad():
    recon_torch = decoder(encoder(x)).numpy().transpose(0, 2, 3, 1)
  t0 = float(step().detach())
  # After the step .grad still holds the gradients at the initial weights.
  grad_rel = 0.0
  for name, (jax_key, kind) in decoder_param_keys(decoder).items():
    param = decoder.get_parameter(name)
    g = torch_param_layout(np.asarray(grads_jax[jax_key][kind]), param.ndim,
                           jax_key.startswith("upconv"))
    diff = np.linalg.norm(param.grad.numpy() - g) / np.linalg.norm(g)
    grad_rel = max(grad_rel, float(diff))
  with torch.no_grad():
    t1 = float(loss_fn(x))
  recon_rel = float(np.abs(recon_torch - recon_jax).max()
                    / np.abs(recon_jax).max())
  out.update(torch_loss0=t0, torch_loss1=t1, recon_rel=recon_rel,
             grad_rel=grad_rel,
             loss0_rel=abs(t0 - loss0) / abs(loss0),
             loss1_rel=abs(t1 - loss1) / abs(loss1))
  tv = out["train_vs_standalone_rel"]
  out["ok"] = bool(recon_rel < RECON_REL_TOL and grad_rel < GRAD_REL_TOL
                   and out["loss0_rel"] < LOSS_REL_TOL
                   and out["loss1_rel"] < STEP_REL_TOL
                   and (tv is None or tv < STEP_REL_TOL))
  return out


# ------------------------------------------------------------------ parent


def find_gpu() -> str | None:
  """The first NVIDIA GPU's name, or None, without starting JAX on it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    if torch.cuda.is_available():
      return torch.cuda.get_device_name(0)
  except ImportError:
    pass
  if shutil.which("nvidia-smi"):
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                          text=True, check=False)
    if proc.returncode == 0 and "GPU" in proc.stdout:
      return proc.stdout.splitlines()[0]
  return None


# The environment the script started with (the parent then sets
# JAX_PLATFORMS=cpu for itself).
_START_ENV = dict(os.environ)


def run_worker(kind: str, spec: dict, smoke: bool, timeout: float) -> dict:
  env = dict(_START_ENV)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
  if smoke or kind in ("torch", "check"):
    # PyTorch workers use JAX (if at all) on the CPU, leaving the GPU free.
    env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, __file__, "--worker", kind, "--spec",
         json.dumps(spec)]
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return dict(error=f"{kind} worker timed out after {timeout:.0f} s")
  lines = [line for line in proc.stdout.splitlines()
           if line.startswith("{")]
  if proc.returncode or not lines:
    return dict(error=f"{kind} worker exited {proc.returncode} (see its"
                " messages above)")
  result = json.loads(lines[-1])
  result["wall_s"] = time.perf_counter() - start
  return result


def fmt(value, spec: str, missing: str = "-") -> str:
  return missing if value is None else format(value, spec)


def summarize(rows: list[dict], chip: str | None, tf32: bool) -> list[dict]:
  """Adds TFLOP/s and % of peak; PyTorch rows use XLA's FLOPs of the same
  dtype and batch."""
  xla = {(r["dtype"], r["batch"]): r.get("flops_per_step") for r in rows
         if r["framework"] == "jax"}
  for r in rows:
    if "median_s" not in r:
      continue
    flops = xla.get((r["dtype"], r["batch"]))
    source = "xla"
    if flops is None and r.get("torch_flop_counter"):
      flops, source = r["torch_flop_counter"], "torch counter"
    peak, peak_name = peak_for(chip, r["dtype"], tf32)
    r["flops_source"] = source if flops else None
    r["tflops"] = flops / r["median_s"] / 1e12 if flops else None
    r["peak_tflops"], r["peak_name"] = peak, peak_name
    r["pct_peak"] = (100 * r["tflops"] / peak
                     if peak and r["tflops"] else None)
  return rows


def table(rows: list[dict]) -> str:
  out = ["| framework | dtype | batch | median step (ms) | images/s |"
         " TFLOP/s | % of peak | peak memory (GiB) | first step (s) |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if "median_s" not in r:
      out.append(f"| {r['framework']} | {r['dtype']} | {r['batch']} |"
                 f" failed: {r.get('error', '?')[:120]} | | | | | |")
      continue
    first = r["first_step_s"] + r.get("compile_s", 0.0)
    out.append(
        f"| {r['framework']} | {r['dtype']} | {r['batch']} |"
        f" {r['median_s'] * 1e3:.1f} | {r['images_per_s']:.1f} |"
        f" {fmt(r['tflops'], '.3g')} | {fmt(r['pct_peak'], '.1f')} |"
        f" {fmt(r['peak_bytes'] and r['peak_bytes'] / 2**30, '.2f')} |"
        f" {first:.1f} |")
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/fc6.py",
                      help="inverter config (caffenet/alexnet, any layer)")
  parser.add_argument("--batch_sizes", default="64,256")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--frameworks", default="jax,torch",
                      help="comma-separated: jax, torch")
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--warmup", type=int, default=5,
                      help="untimed steps, the compiling one included")
  parser.add_argument("--torch_compile", action="store_true",
                      help="also time PyTorch with torch.compile")
  parser.add_argument("--channels_last", action="store_true",
                      help="PyTorch in channels_last memory format")
  parser.add_argument("--no_tf32", dest="tf32", action="store_false",
                      help="full float32 math (no TF32) in both frameworks")
  parser.add_argument("--check", action="store_true",
                      help="compare JAX and PyTorch numerically on the CPU"
                      " first (default with --smoke)")
  parser.add_argument("--smoke", action="store_true",
                      help="CPU run: batch 2, 2 steps, both frameworks")
  parser.add_argument("--worker_timeout", type=float, default=300.0,
                      help="seconds per (framework, dtype) process")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.worker:
    spec = json.loads(args.spec)
    fn = dict(jax=jax_worker, torch=torch_worker, check=check_worker)[
        args.worker]
    print(json.dumps(fn(spec)), flush=True)
    return

  start = time.perf_counter()
  missing = [m for m in ("jax", "flax", "optax", "orbax.checkpoint", "etils",
                         "absl", "ml_collections", "torch")
             if importlib.util.find_spec(m.split(".")[0]) is None]
  if missing:
    raise SystemExit(
        f"Missing Python packages: {', '.join(missing)}. Install them (all"
        " but jax/torch are pure Python; ml_collections is the one GPU images"
        " tend to lack), e.g. pip install ml_collections, or put their wheels"
        " on PYTHONPATH.")
  if args.smoke:
    batch_sizes, steps, warmup = [2], 2, 1
    gpu = None
  else:
    batch_sizes = sorted(int(b) for b in args.batch_sizes.split(","))
    steps, warmup = args.steps, args.warmup
    gpu = find_gpu()
    if gpu is None:
      raise SystemExit(
          "No NVIDIA GPU found (PyTorch sees no CUDA device and nvidia-smi"
          " lists none). Run this on a GPU machine, or add --smoke for a"
          " short CPU run that checks the script works.")
  # The parent only reads shapes; keep its JAX off the GPU.
  os.environ["JAX_PLATFORMS"] = "cpu"
  dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  bad = (set(dtypes) - {"float32", "bfloat16"}) | (
      set(frameworks) - {"jax", "torch"})
  if bad:
    parser.error(f"unknown dtype/framework {sorted(bad)}")
  net = describe_net(make_config(args.config, "float32"))
  log(f"{'smoke run on the CPU' if args.smoke else gpu}: {args.config}"
      f" (layer {net['layer']}, tap {net['tap']}, input {net['input_size']},"
      f" decoder upconvs {net['decoder']['upconv_channels']}), batches"
      f" {batch_sizes}, {warmup} warm-up + {steps} timed steps, dtypes"
      f" {dtypes}, TF32 {'on' if args.tf32 else 'off'}")
  base = dict(config=args.config, batch_sizes=batch_sizes, steps=steps,
              warmup=warmup, smoke=args.smoke, tf32=args.tf32)

  check = None
  if args.check or args.smoke:
    log("equivalence check (CPU, float32, batch 2)...")
    check = run_worker("check", dict(base, net=net), True,
                       args.worker_timeout)
    log(f"equivalence check: {json.dumps(check)}")

  rows, kinds, torch_params, versions = [], set(), None, {}
  for framework in frameworks:
    variants = [False, True] if (framework == "torch"
                                 and args.torch_compile) else [False]
    for compile_ in variants:
      for dtype in dtypes:
        spec = dict(base, dtype=dtype, net=net, compile=compile_,
                    channels_last=args.channels_last)
        log(f"{framework}{'+compile' if compile_ else ''} {dtype}...")
        result = run_worker(framework, spec, args.smoke, args.worker_timeout)
        if "error" in result:
          rows += [dict(framework=framework, dtype=dtype, batch=b,
                        error=result["error"]) for b in batch_sizes]
          continue
        kinds.add(result["device_kind"])
        versions.update({k: v for k, v in result.items()
                         if k.endswith("_version")})
        if result.get("params"):
          torch_params = result["params"]
        rows += result["rows"]

  kind = sorted(kinds)[0] if kinds else (gpu or "cpu")
  chip = chip_of(kind)
  rows = summarize(rows, chip, args.tf32)
  jp = net["jax_params"]
  params_ok = torch_params is None or (
      torch_params["encoder_to_tap"] == jp["encoder_to_tap"]
      and torch_params["decoder"] == jp["decoder"])
  ok = params_ok and (check is None or bool(check.get("ok")))
  peaks = {r["dtype"]: (r["peak_name"], r["peak_tflops"]) for r in rows
           if "peak_name" in r}

  print(f"\n### Train step of the {net['layer']} inverter ({net['arch']},"
        f" {net['input_size']}x{net['input_size']}, random encoder weights)"
        f" on {kind}\n")
  print(table(rows))
  print(f"\nMedian over {steps} steps after {warmup} warm-up steps"
        " (compilation / cuDNN autotuning in the first); first step (s)"
        " includes JAX's compile. TFLOP/s = XLA's cost-analysis FLOPs of the"
        " step / median step time (PyTorch rows: XLA's count for the same"
        " network). Peaks: " + (", ".join(
            f"{d}: {n} {fmt(p, '.1f', 'n/a')} TFLOP/s"
            for d, (n, p) in peaks.items()) or "n/a")
        + f". float32 rows: TF32 {'allowed' if args.tf32 else 'off'}."
        " Peak memory: each (framework, dtype) process's peak so far.")
  print(f"Parameters: JAX encoder to {net['tap']} {jp['encoder_to_tap']:,}"
        f" (all layers {jp['encoder_all']:,}), decoder {jp['decoder']:,};"
        + (f" PyTorch encoder {torch_params['encoder_to_tap']:,}, decoder"
           f" {torch_params['decoder']:,}: "
           + ("equal." if params_ok else "MISMATCH.")
           if torch_params else " PyTorch: not run."))
  paths = sorted({r["path"] for r in rows if r.get("path")})
  if paths:
    print("JAX step built by: " + ", ".join(paths) + (
        " (standalone: the same step from the model modules, as"
        " inverter.train does not import)." if "standalone" in paths
        else "."))
  if check:
    if "error" in check:
      print(f"Equivalence check failed to run: {check['error']}")
    else:
      print(f"Equivalence check (CPU, float32, JAX weights in PyTorch):"
            f" reconstruction max rel diff {check['recon_rel']:.2e}, decoder"
            f" gradients {check['grad_rel']:.2e}, loss"
            f" rel diff {check['loss0_rel']:.2e} before and"
            f" {check['loss1_rel']:.2e} after one Adam step;"
            f" inverter.train vs standalone step"
            f" {fmt(check['train_vs_standalone_rel'], '.2e', 'n/a')}: "
            + ("PASS." if check["ok"] else "FAIL."))
  elapsed = time.perf_counter() - start
  print(f"Total wall time {elapsed:.0f} s.")
  result = dict(benchmark="gpu_train_step", device_kind=kind, chip=chip,
                smoke=args.smoke, tf32=args.tf32,
                channels_last=args.channels_last, versions=versions,
                net={k: v for k, v in net.items() if k != "optimizer"},
                torch_params=torch_params, params_equal=params_ok,
                check=check, rows=rows, wall_s=elapsed, ok=ok)
  line = json.dumps(result)
  print(line)
  if os.environ.get("OUT"):
    path = pathlib.Path(os.environ["OUT"]) / "gpu_train_step.json"
    path.write_text(line + "\n")
    log(f"wrote {path}")
  if not ok:
    raise SystemExit(1)


if __name__ == "__main__":
  main()
