"""`python -m inverter.port`: one command from a published file to encoder
weights the configs load, downloads verified by checksum, and every error a
message with exit status 2.
"""

import ast
import functools
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import caffe_proto_writer as writer
import reference_alexnet_torch as reference
from inverter import encoder_weights, presets
from inverter.models import alexnet
from inverter.port import __main__ as cli
from inverter.port import caffemodel, download
from test_port_caffe import SMALL, assert_taps_match, write_caffemodel

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_caffemodel(tmp_path, arch="caffenet", name="net.caffemodel"):
  spec = reference.Spec(arch=arch, **SMALL)
  weights = reference.random_caffe_weights(spec)
  path = write_caffemodel(tmp_path / name, spec, weights, legacy=True,
                          legacy_dims=True)
  return path, spec, weights


def printed_flags(stdout):
  """The `--config.X=V` flags of the summary's 'use with' line."""
  return re.findall(r"(?<!:)'?--config\.([^\s=]+)=([^'\s]+)'?", stdout)


def apply_flags(cfg, flags):
  for key, text in flags:
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
      node = node[p]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    node[leaf] = value
  return cfg


def test_full_size_caffenet_default_config_just_works(tmp_path, monkeypatch,
                                                      capsys):
  """bvlc_reference_caffenet's shapes at 227x227 (V1 layers, legacy blob
  dims, like the published file): ported to the default location, the
  paper's default config finds and loads it, and every tap of the loaded
  encoder matches the PyTorch reference."""
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  spec = reference.Spec()
  weights = reference.random_caffe_weights(spec, seed=7)
  path = write_caffemodel(tmp_path / "bvlc_reference_caffenet.caffemodel",
                          spec, weights, legacy=True, legacy_dims=True)
  start = time.perf_counter()
  caffemodel.read_net(path)
  read_s = time.perf_counter() - start
  start = time.perf_counter()
  assert cli.main([str(path)]) == 0
  port_s = time.perf_counter() - start
  stdout = capsys.readouterr().out
  with capsys.disabled():
    print(f"\n  full-size caffemodel ({path.stat().st_size / 1e6:.0f} MB):"
          f" read {read_s:.2f} s; whole CLI port {port_s:.1f} s")
  cfg = presets.get_config("fc6")
  out = os.path.expanduser(cfg.encoder.weights)
  assert out.startswith(str(tmp_path / "home"))
  assert f"written to: {out}" in stdout
  assert printed_flags(stdout) == []  # Nothing to change in the config.
  assert "conv1 55x55x96" in stdout and "pool5 6x6x256" in stdout
  assert "60,965,224" in stdout  # bvlc_reference_caffenet's parameter count.
  assert encoder_weights.check(cfg.encoder) == []
  model = alexnet.from_config(cfg.encoder)
  loaded = encoder_weights.load(cfg.encoder, model)
  meta = json.loads(open(os.path.join(out, "metadata.json")).read())
  assert meta["source"]["sha1"] == hashlib.sha1(path.read_bytes()).hexdigest()
  assert meta["preprocessing"]["channel_order"] == "BGR"
  assert meta["preprocessing"]["input_size"] == 227
  assert_taps_match(cfg.encoder, loaded, spec, weights, batch=1)


def test_printed_flags_make_the_config_load_a_reduced_network(tmp_path,
                                                              capsys):
  path, spec, weights = small_caffemodel(tmp_path, arch="alexnet")
  out = tmp_path / "enc"
  assert cli.main([str(path), "--out", str(out), "--input_size", "48",
                   "--mean", "100,110,120.5"]) == 0
  stdout = capsys.readouterr().out
  assert "configs/fc6.py:arch=alexnet" in stdout
  cfg = apply_flags(presets.get_config("fc6", "arch=alexnet"),
                    printed_flags(stdout))
  assert cfg.encoder.weights == str(out)
  assert tuple(cfg.encoder.preprocessing.mean) == (100.0, 110.0, 120.5)
  assert encoder_weights.check(cfg.encoder) == []
  loaded = encoder_weights.load(cfg.encoder, alexnet.from_config(cfg.encoder))
  assert_taps_match(cfg.encoder, loaded, spec, weights)


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
  first, _, _ = small_caffemodel(tmp_path, name="a.caffemodel")
  second, _, _ = small_caffemodel(tmp_path, arch="alexnet",
                                  name="b.caffemodel")
  out = tmp_path / "enc"
  args = ["--out", str(out), "--input_size", "48"]
  assert cli.main([str(first)] + args) == 0
  assert cli.main([str(second)] + args) == 2
  assert "--overwrite" in capsys.readouterr().err
  meta = lambda: json.loads((out / "metadata.json").read_text())
  assert meta()["source"]["file"] == "a.caffemodel"
  assert cli.main([str(second), "--overwrite"] + args) == 0
  assert meta()["source"]["file"] == "b.caffemodel"
  assert meta()["architecture"]["arch"] == "alexnet"
  assert sorted(os.listdir(tmp_path)) == ["a.caffemodel", "b.caffemodel",
                                          "enc"]  # No temporary leftovers.


def test_mean_image_npy_and_binaryproto(tmp_path, capsys):
  path, _, _ = small_caffemodel(tmp_path)
  image = np.random.default_rng(0).uniform(90, 130, (3, 16, 16))
  np.save(tmp_path / "mean.npy", image)
  (tmp_path / "mean.binaryproto").write_bytes(
      writer.blob_bytes(image[None], legacy_dims=True))
  means = []
  for name in ("mean.npy", "mean.binaryproto"):
    out = tmp_path / f"enc_{name}"
    assert cli.main([str(path), "--out", str(out), "--input_size", "48",
                     "--mean", str(tmp_path / name)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    stored = np.load(out / meta["preprocessing"]["mean_image"])
    # Stored in the layout data.mean_file reads: [3, H, W] BGR.
    np.testing.assert_allclose(stored, image, rtol=1e-6)
    expected = np.round(image.reshape(3, -1).mean(1), 3)
    np.testing.assert_allclose(meta["preprocessing"]["mean"], expected)
    assert meta["architecture"]["preprocessing"]["mean"] == \
        meta["preprocessing"]["mean"]
    means.append(meta["preprocessing"]["mean"])
  assert means[0] == means[1]
  capsys.readouterr()
  assert cli.main([str(path), "--out", str(tmp_path / "x"), "--input_size",
                   "48", "--mean", "1,2"]) == 2
  assert "B,G,R" in capsys.readouterr().err


def test_errors_exit_2_without_traceback(tmp_path):
  bad = tmp_path / "bvlc_alexnet.caffemodel"
  good, _, _ = small_caffemodel(tmp_path)
  bad.write_bytes(good.read_bytes()[:5000])  # A truncated download.
  result = subprocess.run(
      [sys.executable, "-m", "inverter.port", str(bad), "--out",
       str(tmp_path / "enc")], capture_output=True, text=True, cwd=REPO_ROOT,
      timeout=120)
  assert result.returncode == 2
  assert result.stderr.startswith("error: ") and "Traceback" not in \
      result.stderr
  assert "truncated" in result.stderr and "SHA-1" in result.stderr
  assert not (tmp_path / "enc").exists()


# --- Downloads ---------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
  """An HTTP server on 127.0.0.1 serving tmp_path/served."""
  root = tmp_path / "served"
  root.mkdir()

  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass

  httpd = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()


def known(monkeypatch, name, **kwargs):
  table = dict(download.KNOWN_FILES)
  table[name] = download.KnownFile(**kwargs)
  monkeypatch.setattr(download, "KNOWN_FILES", table)


def test_download_verifies_then_ports(tmp_path, server, monkeypatch, capsys):
  root, url = server
  path, _, _ = small_caffemodel(root, name="tiny.caffemodel")
  sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
  known(monkeypatch, "tiny.caffemodel", url=f"{url}/tiny.caffemodel",
        format="caffemodel", sha1=sha1)
  cache, out = tmp_path / "cache", tmp_path / "enc"
  assert cli.main(["--download", "tiny.caffemodel", "--cache_dir", str(cache),
                   "--out", str(out), "--input_size", "48"]) == 0
  assert os.listdir(cache) == ["tiny.caffemodel"]
  meta = json.loads((out / "metadata.json").read_text())
  assert meta["source"]["sha1"] == sha1
  path.unlink()  # A second run uses the verified cached copy.
  assert cli.main(["--download", "tiny.caffemodel", "--cache_dir", str(cache),
                   "--out", str(out), "--input_size", "48",
                   "--overwrite"]) == 0
  assert "Using cached" in capsys.readouterr().err


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, server,
                                                    monkeypatch, capsys):
  root, url = server
  path, _, _ = small_caffemodel(root, name="tiny.caffemodel")
  sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
  known(monkeypatch, "tiny.caffemodel", url=f"{url}/tiny.caffemodel",
        format="caffemodel", sha1="0" * 40)
  cache = tmp_path / "cache"
  assert cli.main(["--download", "tiny.caffemodel", "--cache_dir", str(cache),
                   "--out", str(tmp_path / "enc")]) == 2
  err = capsys.readouterr().err
  assert f"expected SHA-1 {'0' * 40}, got {sha1}" in err
  assert os.listdir(cache) == []
  assert not (tmp_path / "enc").exists()


def test_offline_download_fails_at_once_with_url_and_checksum(
    tmp_path, monkeypatch, capsys):
  with socket.socket() as s:  # A port nothing listens on.
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{port}/m")
  name = "bvlc_reference_caffenet.caffemodel"
  start = time.perf_counter()
  assert cli.main(["--download", name, "--cache_dir",
                   str(tmp_path / "cache")]) == 2
  assert time.perf_counter() - start < 10
  err = capsys.readouterr().err
  assert f"http://127.0.0.1:{port}/m/{name}" in err
  assert download.KNOWN_FILES[name].sha1 in err
  assert f"python -m inverter.port {name}" in err
  assert os.listdir(tmp_path / "cache") == []


def test_mean_file_download_for_mean_option(tmp_path, server, monkeypatch,
                                            capsys):
  root, url = server
  image = np.full((3, 8, 8), 100.0) + np.arange(3)[:, None, None]
  np.save(root / "ilsvrc_2012_mean.npy", image)
  known(monkeypatch, "ilsvrc_2012_mean.npy",
        url=f"{url}/ilsvrc_2012_mean.npy", format=None)
  cache = tmp_path / "cache"
  assert cli.main(["--download", "ilsvrc_2012_mean.npy", "--cache_dir",
                   str(cache)]) == 0
  captured = capsys.readouterr()
  assert "--mean" in captured.out and "no checksum" in captured.err
  path, _, _ = small_caffemodel(tmp_path)
  out = tmp_path / "enc"
  assert cli.main([str(path), "--out", str(out), "--input_size", "48",
                   "--cache_dir", str(cache), "--mean",
                   "ilsvrc_2012_mean.npy"]) == 0
  meta = json.loads((out / "metadata.json").read_text())
  assert meta["preprocessing"]["mean"] == [100.0, 101.0, 102.0]
