"""Where a resumed run's input stream continues (inverter.data.position)."""

import ml_collections
import numpy as np

from inverter.data import position as data_position


def data(source="folder:/photos"):
  return ml_collections.ConfigDict(dict(source=source, train_split="train"))


def saved(nexts, source="folder:/photos", seed=0):
  return dict(version=data_position.VERSION, source=source,
              train_split="train", seed=seed, step=10, global_batch_size=8,
              process_count=len(nexts), next=list(nexts))


def start(saved_, **kw):
  kw = dict(seed=0, step=10, global_batch_size=8) | kw
  return data_position.start(saved_, kw.pop("data", data()), **kw)


def test_same_process_count_continues_each_stream_where_it_stopped():
  # Process 1 skipped two corrupt files, so it is further along.
  assert [start(saved([40, 42]), process_index=i, process_count=2)
          for i in range(2)] == [40, 42]


def test_fewer_processes_continue_the_global_stream_without_skipping():
  # Two processes at stream index 40 have read global examples 0..79.
  assert start(saved([40, 40]), process_index=0, process_count=1) == 80
  # With 4 processes, example 80 goes to process 0 (index 20), 81 to 1 ...
  assert [start(saved([40, 40]), process_index=i, process_count=4)
          for i in range(4)] == [20, 20, 20, 20]
  # A laggard decides: nothing it has not read is skipped.
  assert start(saved([40, 39]), process_index=0, process_count=1) == 79


def test_a_changed_source_or_seed_starts_the_new_stream_at_the_step():
  # 10 steps of 8 examples over 2 processes: index 40 in each.
  assert start(saved([41, 43], source="folder:/other"), process_index=0,
               process_count=2) == 40
  assert start(saved([41, 43], seed=1), process_index=1,
               process_count=2) == 40


def test_old_checkpoints_without_a_position_continue_at_the_step():
  assert start(None, process_index=0, process_count=1) == 80
  assert start(None, step=0, process_index=0, process_count=1) == 0


def test_the_next_start_is_after_the_last_example_of_the_batch():
  assert data_position.next_start({"position": np.array([3, 5, 6])}) == 7


def test_payload_records_every_process_position():
  payload = data_position.payload(data(), seed=3, step=10, global_batch_size=8,
                                  local_next=80)
  assert payload["next"] == [80] and payload["process_count"] == 1
  assert payload["seed"] == 3 and payload["source"] == "folder:/photos"
  assert start(payload, seed=3, process_index=0, process_count=1) == 80
