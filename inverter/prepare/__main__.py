r"""Command line: prepare a data set for TFDS, once, from files you have.

  python -m inverter.prepare tiny_imagenet --src=tiny-imagenet-200 \
      --data_dir=~/tensorflow_datasets [--train_per_class=300]
  python -m inverter.prepare imagenet2012_warped \
      --data_dir=~/tensorflow_datasets [--source_data_dir=DIR]

`tiny_imagenet`: from the unpacked official zip
(http://cs231n.stanford.edu/tiny-imagenet-200.zip); see tiny_imagenet.py.
`<source>_warped` (e.g. imagenet2012_warped): the prepared TFDS data set
<source> with every image warped to 256x256, as Caffe's training LMDB had
them; see warped.py. Then train with `--config.data.source=NAME
--config.data.data_dir=DATA_DIR`.
"""

import time

from absl import app, flags

from inverter import cli
from inverter.prepare import tiny_imagenet, warped

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "The TFDS data_dir to write into.")
flags.DEFINE_string("src", None, "tiny_imagenet: the unpacked"
                    " tiny-imagenet-200 folder.")
flags.DEFINE_integer("train_per_class", tiny_imagenet.TRAIN_PER_CLASS,
                     "tiny_imagenet: training images per class (those"
                     " numbered 0..N-1).")
flags.DEFINE_string("source_data_dir", None, "<source>_warped: where the"
                    " source data set is prepared (default: --data_dir).")
flags.DEFINE_list("splits", ["train", "validation"],
                  "<source>_warped: the splits to write.")
flags.DEFINE_integer("size", warped.SIZE, "<source>_warped: the side of the"
                     " warped images.")
flags.mark_flags_as_required(["data_dir"])

USAGE = ("Name one data set to prepare: tiny_imagenet, or <source>_warped"
         " such as imagenet2012_warped.")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(USAGE)
  name = argv[1]
  start = time.monotonic()
  if name == "tiny_imagenet":
    if not FLAGS.src:
      raise app.UsageError("tiny_imagenet needs --src=DIR, the unpacked"
                           " tiny-imagenet-200 folder.")
    builder = tiny_imagenet.prepare(FLAGS.src, FLAGS.data_dir,
                                    FLAGS.train_per_class)
  elif name.endswith("_warped") and len(name) > len("_warped"):
    builder = warped.prepare(
        FLAGS.data_dir, source=name[:-len("_warped")],
        source_data_dir=FLAGS.source_data_dir or FLAGS.data_dir,
        splits=tuple(FLAGS.splits), size=FLAGS.size)
  else:
    raise app.UsageError(f"Unknown data set {name!r}. {USAGE}")
  splits = ", ".join(f"{split} {info.num_examples:,}"
                     for split, info in builder.info.splits.items())
  print(f"{builder.name} {builder.version} in {builder.data_dir}: {splits}"
        f" ({time.monotonic() - start:.0f}s). Use it with"
        f" --config.data.source={builder.name}"
        f" --config.data.data_dir={FLAGS.data_dir}")


if __name__ == "__main__":
  cli.run(main)
