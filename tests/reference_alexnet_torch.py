"""Test helper: an independent PyTorch forward pass of Caffe's AlexNets.

It takes the weights in Caffe's own layout (conv OIHW, fc [out, in], fc6
reading pool5 flattened in C, H, W order) and computes every activation with
PyTorch's NCHW built-ins, which follow Caffe's definitions: grouped
convolution (`groups`), `local_response_norm` (alpha divided by the window
size, like Caffe's ACROSS_CHANNELS LRN), and max-pooling with `ceil_mode=True`
(Caffe rounds the pooled size up). Nothing here is shared with inverter's
Flax model or the converters, so agreement between the two is evidence that
the conversion is exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Spec:
  """An AlexNet-shaped Caffe network (defaults: bvlc_reference_caffenet)."""

  arch: str = "caffenet"
  input_size: int = 227
  conv1: tuple[int, int, int] = (11, 4, 0)  # kernel, stride, pad
  widths: tuple[int, ...] = (96, 256, 384, 384, 256)
  fc_width: int = 4096
  num_classes: int = 1000
  groups: int = 2
  lrn: tuple[int, float, float, float] = (5, 1e-4, 0.75, 1.0)  # size a b k

  def pool5_side(self) -> int:
    k, s, p = self.conv1
    side = (self.input_size + 2 * p - k) // s + 1
    for _ in range(3):
      side = int(np.ceil((side - 3) / 2)) + 1
    return side


_KERNELS = {2: 5, 3: 3, 4: 3, 5: 3}
_PADS = {2: 2, 3: 1, 4: 1, 5: 1}
_GROUPED = (2, 4, 5)


def random_caffe_weights(spec: Spec, seed: int = 0, input_scale: float = 50.0
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """He-scaled random weights in Caffe's layout.

  conv1 is divided by `input_scale` (inputs are 0-255-scale, mean
  subtracted) so activations stay O(1); fc8 is scaled down so the softmax is
  not saturated.
  """
  rng = np.random.default_rng(seed)
  weights = {}
  in_width = 3
  for i, width in enumerate(spec.widths, start=1):
    k = spec.conv1[0] if i == 1 else _KERNELS[i]
    g = spec.groups if i in _GROUPED else 1
    fan_in = in_width // g * k * k
    w = rng.standard_normal((width, in_width // g, k, k)) * np.sqrt(2 / fan_in)
    if i == 1:
      w /= input_scale
    b = rng.standard_normal(width) * 0.1
    weights[f"conv{i}"] = (w.astype(np.float32), b.astype(np.float32))
    in_width = width
  in_features = spec.widths[-1] * spec.pool5_side() ** 2
  for j, out in ((6, spec.fc_width), (7, spec.fc_width),
                 (8, spec.num_classes)):
    w = rng.standard_normal((out, in_features)) * np.sqrt(2 / in_features)
    if j == 8:
      w *= 0.3
    b = rng.standard_normal(out) * 0.1
    weights[f"fc{j}"] = (w.astype(np.float32), b.astype(np.float32))
    in_features = out
  return weights


def random_inputs(spec: Spec, batch: int = 2, seed: int = 1,
                  scale: float = 50.0) -> np.ndarray:
  """Mean-subtracted BGR images on the 0-255 scale, NHWC float32."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, spec.input_size, spec.input_size, 3)) * scale
  return x.astype(np.float32)


@torch.no_grad()
def forward(weights: dict[str, tuple[np.ndarray, np.ndarray]], spec: Spec,
            images_nhwc: np.ndarray) -> dict[str, np.ndarray]:
  """Every tap of the Caffe network, named as inverter's AlexNet names them.

  Returns NHWC arrays for conv-side taps (to compare with the Flax model) and
  [batch, features] for fc taps.
  """
  t = lambda name, i: torch.from_numpy(np.asarray(weights[name][i]))
  size, alpha, beta, k = spec.lrn
  x = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2)
  taps: dict[str, torch.Tensor] = {}

  def conv(i, h):
    kernel, stride, pad = (spec.conv1 if i == 1
                           else (_KERNELS[i], 1, _PADS[i]))
    del kernel  # Implied by the weight's shape.
    groups = spec.groups if i in _GROUPED else 1
    return F.conv2d(h, t(f"conv{i}", 0), t(f"conv{i}", 1), stride=stride,
                    padding=pad, groups=groups)

  pool = lambda h: F.max_pool2d(h, kernel_size=3, stride=2, ceil_mode=True)
  norm = lambda h: F.local_response_norm(h, size, alpha=alpha, beta=beta, k=k)
  h = x
  for i in (1, 2):
    h = taps[f"conv{i}"] = conv(i, h)
    h = taps[f"relu{i}"] = F.relu(h)
    ops = ([("pool", pool), ("norm", norm)] if spec.arch == "caffenet"
           else [("norm", norm), ("pool", pool)])
    for name, op in ops:
      h = taps[f"{name}{i}"] = op(h)
  for i in (3, 4, 5):
    h = taps[f"conv{i}"] = conv(i, h)
    h = taps[f"relu{i}"] = F.relu(h)
  h = taps["pool5"] = pool(h)
  h = torch.flatten(h, 1)  # Caffe's C, H, W order.
  for j in (6, 7):
    h = taps[f"fc{j}"] = F.linear(h, t(f"fc{j}", 0), t(f"fc{j}", 1))
    h = taps[f"relu{j}"] = F.relu(h)
  h = taps["fc8"] = F.linear(h, t("fc8", 0), t("fc8", 1))
  taps["prob"] = F.softmax(h, dim=1)
  return {name: (v.permute(0, 2, 3, 1) if v.ndim == 4 else v).numpy()
          for name, v in taps.items()}


def max_relative_errors(ours: dict[str, np.ndarray],
                        reference: dict[str, np.ndarray]) -> dict[str, float]:
  """max|ours - ref| / max|ref| per tap."""
  errors = {}
  for name, ref in reference.items():
    got = np.asarray(ours[name], np.float64)
    if got.shape != ref.shape:
      raise AssertionError(f"{name}: shape {got.shape} != reference"
                           f" {ref.shape}")
    errors[name] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
  return errors
