"""
Command line: build one tiny checkpoint, e.g. `python -m vlm_ros.models llava /tmp/llava`.

Lets a developer point the node or the benchmark at a test checkpoint without writing Python.
"""

import argparse

from .families import FAMILIES, build_tiny


def main(argv=None) -> None:
    """Parse FAMILY OUT_DIR [--seed N], build the checkpoint and print where it went."""
    parser = argparse.ArgumentParser(prog='python -m vlm_ros.models',
                                     description='Build a tiny random-weight VLM checkpoint.')
    parser.add_argument('family', choices=sorted(FAMILIES))
    parser.add_argument('out_dir')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights')
    args = parser.parse_args(argv)
    print(build_tiny(args.family, args.out_dir, seed=args.seed))


if __name__ == '__main__':
    main()
