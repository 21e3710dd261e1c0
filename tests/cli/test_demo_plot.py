"""The demo's loss curve: a real PNG (decoded by tests/pngread.py, written from the PNG
specification) whose curve is the run's losses."""
import io

import numpy as np
import pytest

from lstmfast import demo
from pngread import SIGNATURE, pixels_of_colour, read_png

pytest.importorskip("matplotlib", reason="the loss curve needs matplotlib (pip install \".[demo]\")")

MEAN_CURVE = (0x08, 0x51, 0x9c)    # the demo's colour for the running mean of the training loss
VALIDATION = (0xe6, 0x55, 0x0d)    # and for the validation points


def _history(losses, valid=(), steps_per_epoch=None):
    steps = len(losses)
    chars = (np.arange(1, steps + 1) * 1600).tolist()
    every = steps_per_epoch or max(1, steps // max(1, len(valid)))
    return dict(step_loss=list(losses), step_chars=chars, epoch_valid=list(valid),
                epoch_chars=[chars[min(steps, every * (i + 1)) - 1] for i in range(len(valid))])


def _draw(tmp_path, history, name="loss.png", entropy=3.0):
    out = io.StringIO()
    path = tmp_path / name
    assert demo._plot(history, entropy, str(path), out)
    assert out.getvalue().strip() == f"loss curve: {path}"  # the absolute path is printed
    data = path.read_bytes()
    assert data[:8] == SIGNATURE
    return read_png(data)


def _mean_rows(pixels, colour):
    """Mean image row of ``colour`` in the left and the right fifth of the pixels of that colour
    (a smaller row is higher on the image, i.e. a larger loss)."""
    rows, columns = pixels_of_colour(pixels, colour)
    assert rows.size > 200, f"only {rows.size} pixels of the curve's colour"
    low, high = np.percentile(columns, [20, 80])
    return rows[columns <= low].mean(), rows[columns >= high].mean()


def test_the_png_is_the_runs_curve(tmp_path):
    rng = np.random.default_rng(20240611)
    falling = np.linspace(4.2, 1.6, 300) + 0.05 * rng.standard_normal(300)
    header, pixels = _draw(tmp_path, _history(falling, valid=(2.9, 2.1, 1.7)), "falling.png")
    assert (header["width"], header["height"]) == (7 * 110, 4 * 110)  # figsize x dpi
    left, right = _mean_rows(pixels, MEAN_CURVE)
    assert left < right - 100, (left, right)        # a falling loss is drawn falling
    # the validation points are drawn (with their legend entry) when the run has them
    assert pixels_of_colour(pixels, VALIDATION)[0].size > 30
    _, without = _draw(tmp_path, _history(falling), "no-validation.png")
    assert pixels_of_colour(without, VALIDATION)[0].size == 0

    # the same picture of the same run; another run, another picture, its curve rising
    _, again = _draw(tmp_path, _history(falling, valid=(2.9, 2.1, 1.7)), "again.png")
    assert np.array_equal(again, pixels)
    _, rising_pixels = _draw(tmp_path, _history(falling[::-1], valid=(1.7, 2.1, 2.9)), "rising.png")
    left, right = _mean_rows(rising_pixels, MEAN_CURVE)
    assert left > right + 100, (left, right)


def test_the_reader_agrees_with_matplotlib(tmp_path):
    """tests/pngread.py against matplotlib's own PNG reader, on one of the demo's pictures."""
    import matplotlib.image
    losses = np.linspace(3.0, 2.0, 50)
    _, pixels = _draw(tmp_path, _history(losses, valid=(2.5,)))
    theirs = matplotlib.image.imread(tmp_path / "loss.png")
    assert np.array_equal(np.round(theirs * 255).astype(np.uint8), pixels)


def test_an_unwritable_plot_path_is_an_error(tmp_path, capsys):
    out = io.StringIO()
    (tmp_path / "read-only").mkdir(mode=0o500)
    path = tmp_path / "read-only" / "loss.png"
    written = demo._plot(_history(np.linspace(3, 2, 20)), 3.0, str(path), out)
    if written:  # running as root: the directory's mode does not stop the write
        assert path.read_bytes()[:8] == SIGNATURE
        return
    assert "cannot write the loss curve" in capsys.readouterr().err
