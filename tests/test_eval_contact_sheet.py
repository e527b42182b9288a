import json

import numpy as np
import pytest

from eval.__main__ import main
from eval.contact_sheet import contact_sheet
from hub.media import write_video


def _output(root, folder, method, value):
    d = root / "outputs" / folder
    d.mkdir(parents=True)
    write_video(d / "clip1.mp4", np.full((10, 32, 32, 3), value, np.uint8))
    (d / "clip1.json").write_text(json.dumps({"method": method}))


def test_one_row_per_method(tmp_path):
    _output(tmp_path, "a-123", "alpha", 40)
    _output(tmp_path, "b-456", "beta", 200)
    sheet = contact_sheet(tmp_path, "clip1", n_frames=3, size=16)
    assert sheet.shape == (2 * (16 + 14), 3 * 16, 3)
    assert abs(int(sheet[14 + 8, 8, 0]) - 40) <= 4  # first row is alpha (sorted), its frame colour
    assert abs(int(sheet[30 + 14 + 8, 8, 0]) - 200) <= 4
    assert main(["contact-sheet", str(tmp_path), "--clip", "clip1", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


def test_missing_clip_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "outputs").mkdir()
    assert main(["contact-sheet", str(tmp_path), "--clip", "nope"]) == 2
    assert "no cached outputs" in capsys.readouterr().err
