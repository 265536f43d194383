"""What the tests share: synthetic cores and guests (:mod:`.synth`,
:mod:`.guestsynth`), readers of our output (:mod:`.kdump_reader`,
:mod:`.vmcore_compare`, :mod:`.kdumpfile_pages`), the consumers that must
open it (:mod:`.consumers`), the rig of real QEMU cores (:mod:`.rig`), and
helpers to run the CLI (:mod:`.runs`).

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml);
scripts outside pytest (bench/, scripts/demo.py, tests/rig/make_case.py) add
it themselves.
"""
