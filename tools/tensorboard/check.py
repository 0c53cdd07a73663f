"""TensorBoard event files, the Python side.

  python3 tools/tensorboard/check.py fixture OUT_DIR   # scalars written by tensorboardX at fixed times (the test's fixture)
  python3 tools/tensorboard/check.py read RUN_DIR      # what TensorBoard's EventAccumulator reads from RUN_DIR/events

`fixture` needs tensorboardX; `read` needs tensorboard.
"""
import json
import sys


def fixture(out):
    from tensorboardX import SummaryWriter
    w = SummaryWriter(logdir=out, filename_suffix='.fixture')
    for step, (loss, lr) in enumerate([(4.5, 1e-4), (3.25, 2e-3), (0.015625, 1.5e-3)], start=0):
        w.add_scalar('train/loss', loss, step, walltime=1700000000.25 + step)
        w.add_scalar('train/lr', lr, step, walltime=1700000000.5 + step)
    w.close()


def read(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(run_dir, size_guidance={'scalars': 0, 'histograms': 0})
    acc.Reload()
    tags = acc.Tags()
    out = {'scalars': {}, 'histograms': {}}
    for t in tags['scalars']:
        ev = acc.Scalars(t)
        out['scalars'][t] = {'n': len(ev), 'first': [ev[0].step, ev[0].value], 'last': [ev[-1].step, ev[-1].value]}
    for t in tags['histograms']:
        ev = acc.Histograms(t)
        h = ev[-1].histogram_value
        out['histograms'][t] = {'n': len(ev), 'last_step': ev[-1].step, 'min': h.min, 'max': h.max, 'num': h.num, 'sum': h.sum, 'buckets': sum(h.bucket)}
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    {'fixture': fixture, 'read': read}[sys.argv[1]](sys.argv[2])
