"""The numbers the paper quotes: python3 -m paper.macros, run from the top of the tree."""
