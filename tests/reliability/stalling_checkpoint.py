"""``student-trainer`` whose checkpoint write of one step stalls halfway, so a test can kill -9 it mid-write.

Environment: ``STALL_CHECKPOINT_STEP`` (the step whose write stalls) and ``STALL_CHECKPOINT_MARK`` (a file
written once half of that checkpoint's bytes are in its temp file). Only for tests, as a subprocess.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import torch

from student_trainer.cli import main

_real_save = torch.save


def _stalling_save(obj, f, *args, **kwargs):
    if not (isinstance(obj, dict) and obj.get("step") == int(os.environ["STALL_CHECKPOINT_STEP"])):
        return _real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    Path(os.environ["STALL_CHECKPOINT_MARK"]).write_text(f"{f.name}\n")
    time.sleep(3600)  # the test kills the process here
    return None


if __name__ == "__main__":
    torch.save = _stalling_save
    sys.exit(main())
