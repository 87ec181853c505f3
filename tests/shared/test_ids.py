import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import FrameIdError
from shared.ids import FRAME_ID_RE, is_frame_id, validate_frame_id


@pytest.mark.parametrize("good", ["synth.0000042", "nyud2.img_5001", "a", "A" * 128, "x:y-z_1.2"])
def test_valid_ids(good):
    assert validate_frame_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", ".hidden", "../etc/passwd", "a/b", "a b", "A" * 129, "é", "a\n", "-x", "a\x00", None, 42, b"abc"],
)
def test_invalid_ids_name_the_value(bad):
    with pytest.raises(FrameIdError, match="invalid frame id"):
        validate_frame_id(bad)
    assert not is_frame_id(bad)


def test_long_bad_id_is_shortened_in_message():
    with pytest.raises(FrameIdError) as e:
        validate_frame_id("/" * 500)
    assert len(str(e.value)) < 200


@given(st.text(max_size=200))
def test_valid_ids_are_path_safe(text):
    # Whatever passes validation can never escape a folder when used as a file name stem.
    if is_frame_id(text):
        assert "/" not in text and "\\" not in text and not text.startswith(".")
        assert FRAME_ID_RE.match(text)
