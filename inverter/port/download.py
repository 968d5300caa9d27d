"""Downloading the published pretrained files, checksum-verified.

`KNOWN_FILES` names each file the porting tool can fetch with its URL and
checksum. `fetch(name)` downloads into a cache directory (default
~/.cache/inverter/downloads) through a temporary file that is renamed only
after its checksum matched, so a partial or wrong download never looks like
a good one. Without a network it fails at once with the URL and checksum, so
the file can be fetched elsewhere and ported with `python -m inverter.port
FILE`.

Set INVERTER_DOWNLOAD_MIRROR=URL to fetch every file as URL/<name> instead
(a mirror or a local copy served over HTTP); checksums are still verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO

from inverter.port.common import PortError

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "inverter", "downloads")
MIRROR_ENV = "INVERTER_DOWNLOAD_MIRROR"
TIMEOUT_S = 15


@dataclasses.dataclass(frozen=True)
class KnownFile:
  """A downloadable file.

  format: the porting Format to use, or None for a file that is not a
    network (e.g. a mean image for --mean).
  sha1: full hex SHA-1, or None if unknown.
  sha256_prefix: leading hex digits of the SHA-256 (torchvision file names
    carry one), or None.
  size: bytes, or None if unknown.
  """

  url: str
  format: str | None
  sha1: str | None = None
  sha256_prefix: str | None = None
  size: int | None = None
  note: str = ""

  def checksum_text(self) -> str:
    parts = []
    if self.sha1:
      parts.append(f"SHA-1 {self.sha1}")
    if self.sha256_prefix:
      parts.append(f"SHA-256 starting {self.sha256_prefix}")
    return ", ".join(parts) or "checksum unknown (not published)"


KNOWN_FILES: dict[str, KnownFile] = {
    "bvlc_reference_caffenet.caffemodel": KnownFile(
        url="http://dl.caffe.berkeleyvision.org/"
        "bvlc_reference_caffenet.caffemodel",
        format="caffemodel",
        sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
        note="CaffeNet, the network the paper inverts (232 MB)."),
    "bvlc_alexnet.caffemodel": KnownFile(
        url="http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
        format="caffemodel",
        sha1="9116a64c0fbe4459d18f4bb6b56d647b63920377",
        note="BVLC AlexNet, norm before pool (232 MB)."),
    "ilsvrc_2012_mean.npy": KnownFile(
        url="https://raw.githubusercontent.com/BVLC/caffe/master/python/"
        "caffe/imagenet/ilsvrc_2012_mean.npy",
        format=None,
        note="Caffe's ILSVRC 2012 mean image ([3, 256, 256] BGR) for --mean;"
        " no checksum is published for it."),
    # Torchvision files are added below this line.
    # torchvision names its files <name>-<first 8 hex of the SHA-256>.pth.
    "alexnet-owt-7be5be79.pth": KnownFile(
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        format="torchvision",
        sha256_prefix="7be5be79",
        note="torchvision AlexNet (arch torchvision_alexnet, 224 RGB)."),
    "vgg16-397923af.pth": KnownFile(
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        format="torchvision",
        sha256_prefix="397923af",
        note="torchvision VGG-16 (arch torchvision_vgg16, 224 RGB)."),
    "googlenet-1378be20.pth": KnownFile(
        url="https://download.pytorch.org/models/googlenet-1378be20.pth",
        format="torchvision",
        sha256_prefix="1378be20",
        note="torchvision GoogLeNet (arch torchvision_googlenet, 224 RGB);"
        " its auxiliary classifiers are skipped."),
    "resnet50-0676ba61.pth": KnownFile(
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        format="torchvision",
        sha256_prefix="0676ba61",
        note="torchvision ResNet-50, IMAGENET1K_V1 (arch resnet50, 224 RGB)."),
    "resnet50-11ad3fa6.pth": KnownFile(
        url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        format="torchvision",
        sha256_prefix="11ad3fa6",
        note="torchvision ResNet-50, IMAGENET1K_V2 (arch resnet50, 224 RGB;"
        " torchvision evaluates it after resizing to 232)."),
    "bvlc_googlenet.caffemodel": KnownFile(
        url="http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
        format="caffemodel",
        sha1="405fc5acd08a3bb12de8ee5e23a96bec22f08204",
        note="BVLC GoogLeNet (arch googlenet, 224 BGR, 54 MB)."),
    "VGG_ILSVRC_16_layers.caffemodel": KnownFile(
        url="http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
        "VGG_ILSVRC_16_layers.caffemodel",
        format="caffemodel",
        note="The VGG authors' VGG-16 (arch vgg16, 224 BGR); no checksum is"
        " published for it."),
}


def url_for(name: str) -> str:
  mirror = os.environ.get(MIRROR_ENV)
  if mirror:
    return f"{mirror.rstrip('/')}/{name}"
  return KNOWN_FILES[name].url


def _known(name: str) -> KnownFile:
  if name not in KNOWN_FILES:
    raise PortError(f"Unknown download {name!r}; known files: "
                    f"{', '.join(sorted(KNOWN_FILES))}.")
  return KNOWN_FILES[name]


def verify(name: str, sha1: str, sha256: str) -> str | None:
  """None if the digests match `name`'s checksums, else what differs."""
  known = _known(name)
  if known.sha1 and sha1 != known.sha1:
    return f"expected SHA-1 {known.sha1}, got {sha1}"
  if known.sha256_prefix and not sha256.startswith(known.sha256_prefix):
    return (f"expected SHA-256 starting {known.sha256_prefix}, got"
            f" {sha256}")
  return None


def _digests(path: str) -> tuple[str, str]:
  sha1, sha256 = hashlib.sha1(), hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(1 << 20):
      sha1.update(block)
      sha256.update(block)
  return sha1.hexdigest(), sha256.hexdigest()


def _unreachable(name: str, url: str, reason: object) -> PortError:
  known = KNOWN_FILES[name]
  return PortError(
      f"Cannot download {name}: {reason}.\n"
      f"  URL:      {url}\n"
      f"  Checksum: {known.checksum_text()}\n"
      "  Fetch the file on a machine with network access, check its checksum"
      f" (e.g. `sha1sum {name}`), copy it here and run\n"
      f"    python -m inverter.port {name}")


def fetch(name: str, cache_dir: str | None = None, quiet: bool = False) -> str:
  """Path of the verified file `name`, downloading it if not cached.

  Progress and notes go to stderr unless `quiet`.
  """
  known = _known(name)
  progress = None if quiet else sys.stderr
  cache_dir = os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR)
  os.makedirs(cache_dir, exist_ok=True)
  target = os.path.join(cache_dir, name)
  if os.path.isfile(target):
    problem = verify(name, *_digests(target))
    if problem is None:
      if progress:
        print(f"Using cached {target}", file=progress)
      return target
    if progress:
      print(f"Cached {target} is bad ({problem}); downloading again.",
            file=progress)
    os.remove(target)
  url = url_for(name)
  fd, part = tempfile.mkstemp(prefix=f".{name}.", suffix=".part",
                              dir=cache_dir)
  try:
    with os.fdopen(fd, "wb") as out:
      sha1, sha256 = _download(name, url, out, known.size, progress)
    problem = verify(name, sha1, sha256)
    if problem:
      raise PortError(
          f"Downloaded {name} from {url} is not the published file:"
          f" {problem}. It was deleted; try again later or fetch it from"
          " elsewhere.")
    if not known.sha1 and not known.sha256_prefix and progress:
      print(f"Note: no checksum is published for {name}; SHA-1 of the"
            f" download: {sha1}", file=progress)
    os.replace(part, target)
  finally:
    if os.path.exists(part):
      os.remove(part)
  return target


def _download(name: str, url: str, out: IO[bytes], size: int | None,
              progress: IO[str] | None) -> tuple[str, str]:
  """Streams `url` into `out`; returns its SHA-1 and SHA-256."""
  try:
    response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
  except urllib.error.HTTPError as e:
    raise _unreachable(name, url, f"HTTP {e.code} {e.reason}") from None
  except (urllib.error.URLError, socket.timeout, OSError) as e:
    reason = getattr(e, "reason", e)
    raise _unreachable(name, url, f"no connection ({reason})") from None
  sha1, sha256 = hashlib.sha1(), hashlib.sha256()
  total = int(response.headers.get("Content-Length") or size or 0)
  done, last = 0, 0.0
  with response:
    while True:
      try:
        block = response.read(1 << 20)
      except (OSError, socket.timeout) as e:
        raise _unreachable(name, url, f"connection lost after {done} bytes"
                           f" ({e})") from None
      if not block:
        break
      out.write(block)
      sha1.update(block)
      sha256.update(block)
      done += len(block)
      now = time.monotonic()
      if progress and now - last > 0.5:
        last = now
        share = f"{100 * done / total:3.0f}% " if total else ""
        print(f"\rDownloading {name}: {share}{done / 1e6:.1f} MB",
              end="", file=progress, flush=True)
  if progress:
    print(f"\rDownloaded {name}: {done / 1e6:.1f} MB from {url}",
          file=progress)
  if total and done != total:
    raise _unreachable(name, url, f"got {done} of {total} bytes")
  return sha1.hexdigest(), sha256.hexdigest()
