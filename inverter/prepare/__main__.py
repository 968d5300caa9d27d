r"""Command line: prepare a data set for TFDS from files you downloaded.

  python -m inverter.prepare tiny_imagenet --src=tiny-imagenet-200 \
      --data_dir=~/tensorflow_datasets [--train_per_class=300]

`tiny_imagenet`: from the unpacked official zip
(http://cs231n.stanford.edu/tiny-imagenet-200.zip); see
inverter/prepare/tiny_imagenet.py. Then train with
`--config.data.source=tiny_imagenet --config.data.data_dir=DATA_DIR`.
"""

import time

from absl import app, flags

from inverter import cli
from inverter.prepare import tiny_imagenet

FLAGS = flags.FLAGS
flags.DEFINE_string("src", None, "The downloaded data set's folder.")
flags.DEFINE_string("data_dir", None, "The TFDS data_dir to write into.")
flags.DEFINE_integer("train_per_class", tiny_imagenet.TRAIN_PER_CLASS,
                     "tiny_imagenet: training images per class (those"
                     " numbered 0..N-1).")
flags.mark_flags_as_required(["src", "data_dir"])

DATASETS = ("tiny_imagenet",)


def main(argv):
  if len(argv) != 2 or argv[1] not in DATASETS:
    raise app.UsageError(
        f"Name one data set to prepare ({', '.join(DATASETS)}), e.g."
        " python -m inverter.prepare tiny_imagenet --src=DIR --data_dir=OUT")
  start = time.monotonic()
  builder = tiny_imagenet.prepare(FLAGS.src, FLAGS.data_dir,
                                  FLAGS.train_per_class)
  splits = ", ".join(f"{name} {split.num_examples:,}"
                     for name, split in builder.info.splits.items())
  print(f"{builder.name} {builder.version} in {builder.data_dir}: {splits}"
        f" ({time.monotonic() - start:.0f}s). Use it with"
        f" --config.data.source={builder.name}"
        f" --config.data.data_dir={FLAGS.data_dir}")


if __name__ == "__main__":
  cli.run(main)
