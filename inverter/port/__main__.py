r"""Command line: convert a pretrained network file into our encoder format.

  python -m inverter.port bvlc_reference_caffenet.caffemodel
  python -m inverter.port bvlc_alexnet.npy --mean ilsvrc_2012_mean.npy
  python -m inverter.port --download bvlc_reference_caffenet.caffemodel

The format is recognised from the file (or --format). The encoder directory
goes to --out, by default where the configs look for the architecture's
weights (~/.cache/inverter/encoders/<arch>), so the default configs then just
work. The written params are read back and compared before the tool reports
success. Errors print a message and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from inverter import encoder_weights, errors, presets
from inverter.port import common, download
from inverter.port.common import PortError, Ported

# Modules imported before any conversion: each registers a Format
# (common.register) or a network inside one (caffe.register_caffe_net).
# Add new format modules here.
FORMAT_MODULES = [
    "inverter.port.caffe",
    "inverter.port.npy_dict",
    "inverter.port.torchvision",  # torchvision AlexNet, VGG-16, ResNet .pth
    "inverter.port.vgg_caffe",  # adds VGG-16 to the caffemodel format
    "inverter.port.resnet_caffe",  # adds ResNet-50 to the caffemodel format
    "inverter.port.googlenet_caffe",  # adds GoogLeNet to the caffemodel format
]


def load_formats() -> dict[str, common.Format]:
  for name in FORMAT_MODULES:
    importlib.import_module(name)
  return common.FORMATS


def build_parser() -> argparse.ArgumentParser:
  formats = ", ".join(sorted(load_formats()))
  parser = argparse.ArgumentParser(
      prog="python -m inverter.port",
      description="Convert a pretrained network (Caffe .caffemodel,"
      " bvlc_alexnet.npy, ...) into inverter's encoder weights.",
      epilog="Known downloads: " + ", ".join(sorted(download.KNOWN_FILES))
      + ". SECURITY: .npy dicts (and other pickles) can run code when loaded;"
      " convert only files from sources you trust.")
  parser.add_argument("source", nargs="?",
                      help="the network file to convert")
  parser.add_argument("--download", metavar="NAME",
                      help="download a known file (checksum-verified), then"
                      " convert it")
  parser.add_argument("--out", help="encoder directory to write (default:"
                      " ~/.cache/inverter/encoders/<arch>, what the configs"
                      " use)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing non-empty --out")
  parser.add_argument("--format", help=f"file format: {formats} (default:"
                      " recognised from the file)")
  parser.add_argument("--arch", help="architecture; must agree with the file"
                      " where the file states it")
  parser.add_argument("--mean", help="B,G,R per-channel mean (default"
                      " 104,117,123), or a mean image: .npy [3,H,W] or"
                      " .binaryproto (or the known download"
                      " ilsvrc_2012_mean.npy)")
  parser.add_argument("--input_size", type=int,
                      help="input height/width (default 227)")
  parser.add_argument("--cache_dir", help="download cache (default"
                      f" {download.DEFAULT_CACHE_DIR})")
  return parser


def _pick_format(path: str, name: str | None) -> common.Format:
  formats = load_formats()
  if name:
    if name not in formats:
      raise PortError(f"--format {name!r} is unknown; known formats:"
                      f" {', '.join(sorted(formats))}.")
    return formats[name]
  matches = [f for f in formats.values() if f.sniff(path)]
  if not matches:
    raise PortError(f"{path}: not a recognised network file (known formats:"
                    f" {', '.join(sorted(formats))}); pass --format if you"
                    " know which it is.")
  if len(matches) > 1:
    raise PortError(f"{path} could be any of"
                    f" {', '.join(f.name for f in matches)}; pass --format.")
  return matches[0]


def _refuse_existing(out: str, overwrite: bool) -> None:
  if os.path.exists(out) and not overwrite:
    if not os.path.isdir(out) or os.listdir(out):
      raise PortError(f"--out {out} exists and is not empty; pass --overwrite"
                      " to replace it, or choose another --out.")


def _model(ported: Ported):
  """The Flax module the encoder config describes."""
  from inverter.models import encoders  # pylint: disable=g-import-not-at-top
  try:
    return encoders.from_config(ported.encoder)
  except ValueError as e:
    raise PortError(f"Internal error: the converted config is invalid: {e}") \
        from None


def _check_shapes(ported: Ported, model) -> None:
  """The params must be exactly the tree the module initialises."""
  import jax  # pylint: disable=g-import-not-at-top
  target = jax.eval_shape(lambda: encoder_weights.init_params(model, 0))
  want = {jax.tree_util.keystr(k): tuple(v.shape)
          for k, v in jax.tree_util.tree_leaves_with_path(target)}
  got = {jax.tree_util.keystr(k): tuple(np.shape(v))
         for k, v in jax.tree_util.tree_leaves_with_path(ported.params)}
  if want != got:
    diffs = [f"{k}: converted {got.get(k)}, module {want.get(k)}"
             for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    raise PortError("Internal error: converted params do not fit the encoder"
                    " module: " + "; ".join(diffs))


def write(ported: Ported, out: str, overwrite: bool = False) -> None:
  """Writes the encoder directory atomically: a sibling temporary directory
  is filled, then renamed into place."""
  out = os.path.abspath(os.path.expanduser(out))
  _refuse_existing(out, overwrite)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would stay on `out`.
  try:
    preprocessing = dict(ported.preprocessing)
    encoder_weights.save(tmp, ported.params, ported.encoder,
                         preprocessing=preprocessing, source=ported.source)
    for name, array in ported.extra_files.items():
      np.save(os.path.join(tmp, name), np.asarray(array))
    if os.path.exists(out):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.",
                             dir=parent)
      os.rename(out, os.path.join(old, "x"))
      try:
        os.rename(tmp, out)
      except OSError:
        os.rename(os.path.join(old, "x"), out)  # Put the old one back.
        raise
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def _read_back(ported: Ported, out: str, model) -> None:
  """Loads the written directory as training would and compares it."""
  import jax  # pylint: disable=g-import-not-at-top
  cfg = ported.encoder.copy_and_resolve_references()
  cfg.weights = out
  loaded = encoder_weights.load(cfg, model)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(loaded),
                          jax.tree.leaves(ported.params)):
    if not np.array_equal(np.asarray(a), np.asarray(b)):
      raise PortError(f"Read-back check failed: {out} holds different values"
                      f" for {jax.tree_util.keystr(path)} than were written.")


def _flag_value(value: Any) -> str:
  """A config value as a flag value: tuples (also nested) without spaces."""
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(_flag_value(v) for v in value) + (
        "," if len(value) == 1 else "") + ")"
  return str(value)


def _config_flags(ported: Ported, out: str) -> list[str]:
  """Flags that make the arch's default config use these weights: the path
  unless it is the default, and every defining field that differs."""
  from inverter.models import encoders  # pylint: disable=g-import-not-at-top
  cfg = ported.encoder
  default = presets.encoder_config(cfg["arch"])
  flags = []
  if os.path.abspath(os.path.expanduser(default.weights)) != out:
    flags.append(f"--config.encoder.weights={out}")
  for key in encoders.ARCHITECTURE_FIELDS[cfg["arch"]]:
    value, ref = cfg[key], default[key]
    if hasattr(value, "to_dict"):  # A block: one flag per differing field.
      ref = ref.to_dict()
      flags += [f"--config.encoder.{key}.{k}={_flag_value(v)}"
                for k, v in value.to_dict().items() if v != ref.get(k)]
    elif value != ref:
      flags.append(f"--config.encoder.{key}={_flag_value(value)}")
  if cfg["input_size"] != default["input_size"]:
    flags.append(f"--config.data.crop_size={cfg['input_size']}")
  return flags


def summary(ported: Ported, out: str, model, seconds: float) -> str:
  src = ported.source
  lines = [f"Ported {src.get('file')} ({src.get('format')}, SHA-1"
           f" {src.get('sha1')}, {src.get('size')} bytes) in {seconds:.1f} s."]
  cfg = ported.encoder
  prep = ported.preprocessing
  lines.append(
      f"  architecture: {cfg['arch']}, input {prep.get('input_size')}x"
      f"{prep.get('input_size')} {prep.get('channel_order')} pixels (0-255)"
      f" x {prep.get('scale')}, minus mean {prep.get('mean')}"
      + (f", / std {prep['std']}" if any(float(v) != 1 for v in
                                          prep.get("std", [1])) else "")
      + (f" (mean image {prep['mean_image']})" if "mean_image" in prep else ""))
  from inverter.models import encoders  # pylint: disable=g-import-not-at-top
  shapes = encoders.tap_shapes(model)
  lines.append("  taps: " + ", ".join(
      f"{k} {'x'.join(map(str, shapes[k]))}"
      for k in encoders.tap_names(cfg["arch"], cfg) if k in shapes))
  count = sum(int(np.size(v)) for layer in ported.params.values()
              for v in layer.values())
  lines.append(f"  parameters: {count:,}")
  lines.append(f"  written to: {out}")
  flags = _config_flags(ported, out)
  arch_arg = "" if cfg["arch"] == "caffenet" else f":arch={cfg['arch']}"
  lines.append("  use with: python -m inverter.main"
               f" --config=configs/fc6.py{arch_arg} --workdir=DIR"
               + "".join(f" \\\n      {shlex.quote(f)}" for f in flags))
  if len(flags) > 1:
    lines.append("  or, reading all of it from the encoder directory:"
                 " python -m inverter.main"
                 f" --config=configs/fc6.py:encoder={out} --workdir=DIR")
  for warning in ported.warnings:
    lines.append(f"  note: {warning}")
  return "\n".join(lines)


def _resolve_mean(mean: str | None, cache_dir: str | None) -> str | None:
  """A known mean download named by --mean is fetched (or taken from cache)."""
  if mean and not os.path.exists(mean) and mean in download.KNOWN_FILES and (
      download.KNOWN_FILES[mean].format is None):
    return download.fetch(mean, cache_dir)
  return mean


def run(args: argparse.Namespace) -> int:
  load_formats()
  if bool(args.source) == bool(args.download):
    raise PortError("Give either a SOURCE file or --download NAME (known: "
                    f"{', '.join(sorted(download.KNOWN_FILES))}).")
  if args.out:
    _refuse_existing(os.path.abspath(os.path.expanduser(args.out)),
                     args.overwrite)
  fmt_name = args.format
  if args.download:
    path = download.fetch(args.download, args.cache_dir)
    known = download.KNOWN_FILES[args.download]
    if known.format is None:
      print(f"{args.download} is at {path}; it is not a network. Use it with"
            f" `python -m inverter.port SOURCE --mean {path}`.")
      return 0
    fmt_name = fmt_name or known.format
  else:
    path = args.source
    if not os.path.isfile(path):
      raise PortError(f"{path}: no such file.")
  fmt = _pick_format(path, fmt_name)
  options: dict[str, Any] = dict(
      arch=args.arch, mean=_resolve_mean(args.mean, args.cache_dir),
      input_size=args.input_size)
  start = time.perf_counter()
  ported = fmt.convert(path, options)
  seconds = time.perf_counter() - start
  out = os.path.abspath(os.path.expanduser(args.out or ported.encoder.weights))
  ported.encoder.weights = out
  model = _model(ported)
  _check_shapes(ported, model)
  write(ported, out, args.overwrite)
  _read_back(ported, out, model)
  print(summary(ported, out, model, seconds))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return run(args)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
