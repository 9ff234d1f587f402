"""vlm_train_head: fit the reference action head to a dataset of vlm_export.

    vlm_train_head DATASET [--out head.pt] [--hidden 256] [--chunk 1] [--seconds 60]
                   [--epochs 2000] [--seed 0]

An MLP from the features vector to the next --chunk actions (regressed Twist or JointState
columns, or a skill among the StepCommands' ones), trained for at most --epochs full passes or
--seconds, whichever ends first. Every fifth pair is held out: the table gives the training
and validation loss beside the baseline of a head blind to its features. The head file keeps
the features' source (model, layer, pooling) and the action's type and columns, which
vlm_action_head needs.
"""

import argparse
import sys

from ..bag.arguments import ArgumentParser, positive, positive_int, print_line, reported


def parse_args(argv):
    """Parse the command line."""
    parser = ArgumentParser(prog='vlm_train_head', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dataset', help='a folder vlm_export wrote (dataset.npz, manifest.json)')
    parser.add_argument('--out', default='head.pt', help='the head file (replaced)')
    parser.add_argument('--hidden', type=positive_int, default=256, help='hidden layer width')
    parser.add_argument('--chunk', type=positive_int, default=1,
                        help='actions predicted per features vector')
    parser.add_argument('--seconds', type=positive, default=60.0, help='training time bound')
    parser.add_argument('--epochs', type=positive_int, default=2000,
                        help='full passes over the training pairs, at most')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def fit(args) -> dict:
    """Train and write the head; return the training report."""
    from ..head import training  # torch: after the arguments are good

    head, report = training.train(args.dataset, args.hidden, args.chunk, args.seconds,
                                  args.epochs, args.seed)
    training.save(head, args.out)
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
