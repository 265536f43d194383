from qemu_vmcore.cli import main

raise SystemExit(main())
