"""userblk harness: platforms (vm, native), benchmark cells and results."""
