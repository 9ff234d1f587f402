"""The vlm_eval HTML report: self-contained, escaped, and really drawn by a browser.

The browser test renders a report in headless Chromium and looks at the pixels: a page that
parses but shows nothing (a broken data URL, a style hiding everything) fails here.
"""

import pathlib

import numpy as np
import pytest
from report_samples import COLOURS, make_report
from vlm_ros.eval.screenshot import CHROMIUM, screenshot


@pytest.mark.skipif(not pathlib.Path(CHROMIUM).is_file(),
                    reason=f'no {CHROMIUM}: run scripts/install-test-deps to install chromium')
def test_browser_draws_the_report(tmp_path):
    from PIL import Image

    png = screenshot(make_report(tmp_path), tmp_path / 'shot.png', width=1280, height=1800)
    pixels = np.asarray(Image.open(png).convert('RGB')).reshape(-1, 3).astype(np.int16)
    assert len(pixels) == 1280 * 1800
    distinct = len(np.unique(pixels, axis=0))
    assert distinct > 500, f'only {distinct} colours: the page is nearly blank'
    ink = np.any(np.abs(pixels - 255) > 24, axis=1).mean()
    assert ink > 0.04, f'only {ink:.1%} of the page differs from the white background'
    for name, colour in COLOURS.items():
        near = np.all(np.abs(pixels - colour) <= 12, axis=1).sum()
        assert near > 800, f'the {name} thumbnail is missing: {near} pixels of its colour'
