"""The Colab notebook's code runs against a tiny checkpoint trained here.

Its code cells run in order in one namespace, as in Colab, with
INVERTER_CHECKPOINT pointing at the tiny fc8 inverter. Shell lines (`!pip
install ...`) are Colab-only and left out; matplotlib is replaced by a
recorder (it is not a dependency of the library), so the test checks what the
notebook plots rather than how matplotlib draws it.
"""

import json
import sys
import types
from unittest import mock

import numpy as np

from conftest import REPO_ROOT
import tiny_inverters

NOTEBOOK = REPO_ROOT / "notebooks" / "inverter_colab.ipynb"


def code_cells():
  notebook = json.loads(NOTEBOOK.read_text())
  assert notebook["nbformat"] == 4
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      lines = "".join(cell["source"]).splitlines()
      yield "\n".join(l for l in lines if not l.lstrip().startswith(("!", "%")))


def recording_pyplot():
  """A stand-in for matplotlib.pyplot that records the images shown."""
  shown = []

  def subplots(rows, cols, **kwargs):
    assert kwargs.get("squeeze") is False  # the notebook indexes axes[r, c]
    axes = np.empty((rows, cols), dtype=object)
    for index in np.ndindex(rows, cols):
      axes[index] = mock.MagicMock()
      axes[index].imshow.side_effect = lambda image, *a, **k: shown.append(
          np.asarray(image))
    return mock.MagicMock(), axes

  pyplot = types.ModuleType("matplotlib.pyplot")
  pyplot.subplots = subplots
  pyplot.show = mock.MagicMock()
  return pyplot, shown


def test_notebook_runs_on_a_tiny_checkpoint(tmp_path_factory, monkeypatch):
  tiny = tiny_inverters.trained(tmp_path_factory)
  monkeypatch.setenv("INVERTER_CHECKPOINT", tiny["fc8"])
  pyplot, shown = recording_pyplot()
  matplotlib = types.ModuleType("matplotlib")
  matplotlib.pyplot = pyplot
  monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
  monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)

  namespace = {"__name__": "__main__"}
  for source in code_cells():
    # pylint: disable-next=exec-used
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)

  inv, images, specs = namespace["inv"], namespace["images"], namespace["specs"]
  assert inv.path == tiny["fc8"]
  assert {"none", "binarize", "dropout:0.5"} <= set(specs)
  # The unperturbed row is exactly what reconstruct() gives.
  np.testing.assert_array_equal(namespace["outputs"]["none"],
                                inv.reconstruct(images))
  errors = namespace["errors"]
  assert all(np.isfinite(errors[s]) and errors[s] > 0 for s in specs)
  # Inputs and reconstructions, then every perturbation of every image.
  sizes = {(n, n, 3) for n in (inv.input_size, inv.output_size)}
  assert len(shown) == 2 * len(images) + len(specs) * len(images)
  assert all(s.dtype == np.uint8 and s.shape in sizes for s in shown)
  assert pyplot.show.call_count == 3
