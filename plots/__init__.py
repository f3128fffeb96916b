"""The figures of the paper, one module each: python3 -m plots.NAME [RESULTS] [--out DIR],
run from the top of the tree (make figures). Helpers are the modules whose names start with _."""
