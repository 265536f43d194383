from qemu_vmcore.frontends.cli import main

raise SystemExit(main())
