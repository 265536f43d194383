"""The front ends: the command line (:mod:`.cli`) and the gdb command
(:mod:`.gdb`). They format what the engine prepared and print it."""
