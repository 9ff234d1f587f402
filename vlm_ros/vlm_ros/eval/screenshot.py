"""Render an HTML file to a PNG with headless Chromium: the check that a report really shows.

Parsing the HTML proves it is well formed; only a browser proves the images decode and the page
lays out into something a person can read. Debian's chromium is used (scripts/install-test-deps
installs it), started with a throw-away profile and every background service off, so a render
touches no network and leaves nothing behind.
"""

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CHROMIUM = '/usr/bin/chromium'
_QUIET = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync',
          '--hide-scrollbars')


class ScreenshotError(RuntimeError):
    """Chromium is missing, failed, hung, or wrote no picture; the text says which and why."""


def screenshot(html_path, png_path, width: int = 1280, height: int = 2000,
               timeout: float = 60.0, browser: str = CHROMIUM) -> pathlib.Path:
    """Render html_path at width x height CSS pixels into png_path; return png_path.

    Raises ScreenshotError when the browser is not installed, exits non-zero, outlives timeout
    seconds (it is killed), or exits without writing the PNG.
    """
    html_path = pathlib.Path(html_path).resolve()
    png_path = pathlib.Path(png_path).resolve()
    if not pathlib.Path(browser).is_file():
        raise ScreenshotError(f'no browser at {browser}; run scripts/install-test-deps')
    if not html_path.is_file():
        raise ScreenshotError(f'no HTML file at {html_path}')
    png_path.unlink(missing_ok=True)  # a stale picture must not pass for a fresh one
    profile = tempfile.mkdtemp(prefix='vlm-chromium-')
    command = [browser, *_QUIET, f'--user-data-dir={profile}', f'--window-size={width},{height}',
               f'--screenshot={png_path}', html_path.as_uri()]
    started = time.monotonic()
    # Its own process group: on a timeout the renderer and GPU helpers die with the browser.
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise ScreenshotError(f'{browser} did not finish rendering {html_path} within '
                              f'{timeout:.0f} s and was killed; stderr: {_tail(stderr)}') from exc
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise ScreenshotError(f'{browser} exited with {proc.returncode} after {seconds:.1f} s '
                              f'rendering {html_path}; stderr: {_tail(stderr)}')
    if not png_path.is_file() or png_path.stat().st_size == 0:
        raise ScreenshotError(f'{browser} exited 0 after {seconds:.1f} s but wrote no '
                              f'{png_path}; stderr: {_tail(stderr)}')
    return png_path


def main(argv=None) -> int:
    """Console entry: python -m vlm_ros.screenshot REPORT.html OUT.png."""
    parser = argparse.ArgumentParser(prog='python -m vlm_ros.screenshot',
                                     description='Render an HTML file to a PNG, headless.')
    parser.add_argument('html')
    parser.add_argument('png')
    args = parser.parse_args(argv)
    try:
        print(f'screenshot: {screenshot(args.html, args.png)}')
    except ScreenshotError as exc:
        print(f'screenshot: {exc}', file=sys.stderr)
        return 1
    return 0


def _tail(stderr: str, limit: int = 2000) -> str:
    """Return the end of the browser's stderr for an error message."""
    return (stderr or '').strip()[-limit:] or '(empty)'


if __name__ == '__main__':
    sys.exit(main())
