#!/usr/bin/env python3
"""Record which QEMU names extract, info and dmesg read on rig cases, and
print them as the declaration src/qemu_vmcore/qemu/profile_names.py holds.

Usage: record_profile_names.py [NAME ...]   (default: every cached standard case)
       record_profile_names.py --write      (merge into profile_names.py)

A name the code reads only on some path no rig case takes is added by hand;
the test tests/e2e/test_e2e_profiles.py holds the declaration to the code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the support package

from support import rig
from support.profiles import record

from qemu_vmcore.debugger.profile_format import Names
from qemu_vmcore.qemu import profile_names

DECLARATION = Path(profile_names.__file__)


def render(names: Names) -> str:
    def strings(items: object, indent: str = "    ") -> str:
        return "".join(f"{indent}{item!r},\n" for item in sorted(items))  # type: ignore[call-overload]

    members = "".join(
        f"        {key!r}: {{\n{strings(sorted(v), ' ' * 12)}        }},\n"
        for key, v in sorted(names.members.items())
    )
    return (
        f"'''{profile_names.HEADER}'''\n\nfrom qemu_vmcore.debugger.profile_format import Names\n\n"
        f"HEADER = __doc__\n\n"
        f"DECLARED = Names(\n    variables={{\n{strings(names.variables, ' ' * 8)}    }},\n"
        f"    types={{\n{strings(names.types, ' ' * 8)}    }},\n"
        f"    static_locals={{\n{strings(names.static_locals, ' ' * 8)}    }},\n"
        f"    constants={{\n{strings(names.constants, ' ' * 8)}    }},\n"
        f"    members={{\n{members}    }},\n)\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--write", action="store_true", help="merge into profile_names.py")
    args = ap.parse_args()
    cases = args.names or [n for n in rig.DWARF_CASES if (rig.case_dir(n) / "core").exists()]
    seen = Names()
    for name in cases:
        got = record(rig.case_dir(name) / "core")
        print(f"{name}: {len(got.outside(profile_names.DECLARED))} new", file=sys.stderr)
        seen.update(got)
    if args.write:
        seen.update(profile_names.DECLARED)
        DECLARATION.write_text(render(seen))
    else:
        sys.stdout.write(render(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
