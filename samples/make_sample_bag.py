#!/usr/bin/env python3
"""
Regenerate the tabletop sample recording and its reference answers (samples/tabletop/).

With --cameras, the several-camera sample instead (samples/tabletop_cameras/bag): the same scene
and instructions with a wrist camera, the head camera's aligned depth and its camera_info; its
reference answers are samples/tabletop/references.yaml.

The committed output must equal what this script writes (test_tabletop.py checks it message by
message), so change the scene in vlm_ros/vlm_ros/demo/tabletop.py, rerun this with --force, and
commit both. Run it inside the environment: scripts/with-env python samples/make_sample_bag.py
"""

import argparse
import pathlib
import shutil
import sys

from vlm_ros.demo.sample import CAMERA_TOPICS, write_recording, write_references

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / 'tabletop'
CAMERAS_OUT = DEFAULT_OUT.with_name('tabletop_cameras')


def _size(path: pathlib.Path) -> int:
    files = path.rglob('*') if path.is_dir() else [path]
    return sum(file.stat().st_size for file in files if file.is_file())


def main(argv=None) -> int:
    """Write <out>/bag and <out>/references.yaml; refuse to replace them without --force."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('out', nargs='?', type=pathlib.Path,
                        help=f'output directory (default {DEFAULT_OUT}; with --cameras '
                        f'{CAMERAS_OUT})')
    parser.add_argument('--cameras', action='store_true',
                        help='the several-camera sample: wrist camera, depth and camera_info '
                        'beside the head camera; the bag only')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--seconds', type=float, default=4.0, help='length (default 4.0)')
    parser.add_argument('--rate', type=float, default=10.0, help='frames per second (10.0)')
    parser.add_argument('--force', action='store_true',
                        help='replace an existing bag/ and references.yaml in the output')
    args = parser.parse_args(argv)
    out = args.out or (CAMERAS_OUT if args.cameras else DEFAULT_OUT)
    bag, refs = out / 'bag', out / 'references.yaml'
    written = (bag,) if args.cameras else (bag, refs)
    existing = [path for path in written if path.exists()]
    if existing and not args.force:
        parser.error(f'{", ".join(map(str, existing))} exist(s); pass --force to replace')
    for path in existing:
        print(f'removing {path}')
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    counts = write_recording(bag, args.storage, seconds=args.seconds, rate_hz=args.rate,
                             topics=CAMERA_TOPICS if args.cameras else None)
    for topic, count in counts.items():
        print(f'{topic}: {count} messages')
    for path in sorted(bag.iterdir()):
        print(f'{path}: {path.stat().st_size:,} bytes')
    print(f'{bag}: {_size(bag):,} bytes in all')
    if not args.cameras:
        entries = write_references(refs, seconds=args.seconds, rate_hz=args.rate)
        print(f'{refs}: {len(entries)} entries, {_size(refs):,} bytes')
    return 0


if __name__ == '__main__':
    sys.exit(main())
