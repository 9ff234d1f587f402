"""vlm_train_head: fit the reference action head to a dataset of vlm_export.

    vlm_train_head DATASET [--out head.pt] [--hidden 256] [--chunk 1] [--seconds 60]
                   [--epochs 2000] [--seed 0]

An MLP from the features vector to the next --chunk actions (regressed Twist or JointState
columns, or a skill among the StepCommands' ones), trained for at most --epochs full passes or
--seconds, whichever ends first. Every fifth pair is held out: the table gives the training
and validation loss beside the baseline of a head blind to its features. The head file keeps
the features' source (model, layer, pooling) and the action's type and columns, which
vlm_action_head needs. --hidden is at most 8192 (a hidden-by-hidden layer of 256 MiB, four
times that with its gradients and AdamW's moments) and --chunk at most 1024 (a VLA's chunks
are tens to a few hundred actions); --out, a file whose folder exists, is checked before
training.
"""

import argparse
import os
import pathlib
import sys
from functools import partial

from ..bag.arguments import ArgumentParser, positive, positive_int, print_line, reported, whole
from ..engine import VlmError

MOST_HIDDEN = 8192
MOST_CHUNK = 1024


def parse_args(argv):
    """Parse the command line."""
    parser = ArgumentParser(prog='vlm_train_head', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dataset', help='a folder vlm_export wrote (dataset.npz, manifest.json)')
    parser.add_argument('--out', default='head.pt', help='the head file (replaced)')
    parser.add_argument('--hidden', type=partial(whole, low=1, high=MOST_HIDDEN), default=256,
                        help=f'hidden layer width, at most {MOST_HIDDEN}')
    parser.add_argument('--chunk', type=partial(whole, low=1, high=MOST_CHUNK), default=1,
                        help=f'actions predicted per features vector, at most {MOST_CHUNK}')
    parser.add_argument('--seconds', type=positive, default=60.0, help='training time bound')
    parser.add_argument('--epochs', type=positive_int, default=2000,
                        help='full passes over the training pairs, at most')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def head_file(text: str) -> pathlib.Path:
    """Return --out as an absolute path; VlmError where no head file can be written there.

    Checked before training, so a typing error costs no minutes of it.
    """
    out = pathlib.Path(text).resolve()  # '.' and '/tmp/..' are folders with a name resolved
    if out.is_dir() or text.endswith(os.sep):
        raise VlmError('bad_input', f'--out {text} names a folder; name the head file (as '
                       f'{pathlib.Path(text) / "head.pt"})')
    if not out.parent.is_dir():
        raise VlmError('bad_input', f'--out {text}: {out.parent} is not a folder')
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise VlmError('bad_input', f'--out {text}: {out.parent} cannot be written')
    return out


def fit(args) -> dict:
    """Train and write the head; return the training report."""
    out = head_file(args.out)
    from ..head import training  # torch: after the arguments are good

    head, report = training.train(args.dataset, args.hidden, args.chunk, args.seconds,
                                  args.epochs, args.seed)
    training.save(head, out)
    return report


def main(argv=None) -> int:
    """Console script vlm_train_head: exit 0 with the head written, else the reason."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    code, report = reported('vlm_train_head', lambda: fit(args))
    if code:
        return code
    values = (f'{v:.4g}' if isinstance(v, float) else str(v) for v in report.values())
    print_line('\n'.join(('| ' + ' | '.join(report) + ' |', '|' + '---|' * len(report),
                          '| ' + ' | '.join(values) + ' |', f'wrote {args.out}')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
