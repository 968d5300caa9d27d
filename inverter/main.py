r"""Command line: train or evaluate an inverter.

  python -m inverter.main --config=configs/fc6.py --workdir=/tmp/fc6
  python -m inverter.main --config=configs/fc6.py:demo --workdir=/tmp/demo \
      --config.num_train_steps=2000
  python -m inverter.main --config=configs/fc6.py --workdir=/tmp/fc6 --mode=eval

Rerunning with the same workdir resumes exactly from its latest checkpoint;
SIGTERM (preemption) or Ctrl-C saves one first. On several hosts, every host
runs the same command (`launch/tpu_vm.sh` does this on Cloud TPU VMs); see
inverter/distributed.py for how the processes find each other, e.g. two
local processes:

  python -m inverter.main ... --coordinator_address=localhost:1234 \
      --num_processes=2 --process_id=0   # and --process_id=1
Configs with `task='classify'` (configs/encoders/*.py) train an encoder as a
classifier instead (inverter/classify.py):

  python -m inverter.main --config=configs/encoders/cifar10.py \
      --workdir=/tmp/cifar10_encoder
"""

from absl import app, flags, logging
from ml_collections import config_flags

from inverter import classify, cli, distributed, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and images go.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train (and evaluate at the end) or evaluate the latest"
                  " checkpoint only.")
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/fc6.py or configs/fc6.py:demo.",
    lock_config=True)
flags.DEFINE_enum("distributed", "auto", list(distributed.MODES),
                  "Join a multi-process run: 'on' lets JAX detect the cluster"
                  " (TPU slices, SLURM, ...); 'auto' only with the flags"
                  " below or a scheduler with several tasks.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 (or JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None,
                     "Number of processes (or JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None,
                     "This process's index (or JAX_PROCESS_ID).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  distributed.initialize(FLAGS.distributed, distributed.settings_from(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id))
  cli.hide_accelerators_from_tensorflow()
  config = FLAGS.config
  logging.info("Config:\n%s", config)
  is_classify = config.get("task", "invert") == classify.TASK
  module = classify if is_classify else train
  run = (module.train_and_evaluate if FLAGS.mode == "train"
         else module.evaluate)
  # Errors map to exit statuses in cli: 2 for a user's mistake, 128+signal
  # for a run stopped (and saved) by SIGTERM or Ctrl-C.
  metrics = run(config, FLAGS.workdir)
  if is_classify:
    print(f"top-1 accuracy {100 * metrics['top1']:.2f}%, top-5"
          f" {100 * metrics['top5']:.2f}% (step {metrics['step']},"
          f" {metrics['num_images']} images of {config.data.eval_split});"
          f" encoder exported to {FLAGS.workdir}/{classify.ENCODER_DIR}")
    return
  print(f"normalized reconstruction error ({config.layer}, step"
        f" {metrics['step']}, {metrics['num_images']} images):"
        f" {metrics['normalized_error']:.4f}")


if __name__ == "__main__":
  cli.run(main)
