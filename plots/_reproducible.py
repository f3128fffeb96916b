"""Shared by the figure scripts: a headless backend and byte-identical output.

Two runs on the same data give the same bytes: no dates or tool versions in the files' metadata
(PNG Software, PDF CreationDate/ModDate/Producer), a fixed SVG hash salt, SOURCE_DATE_EPOCH fixed
for anything else that stamps a time. Import this before pyplot.
"""

import os

os.environ["SOURCE_DATE_EPOCH"] = "0"

import matplotlib  # noqa: E402

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "userblk"
matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType: text stays text in the PDF

# A figure script whose input is missing exits with this (make figures skips it).
EXIT_NO_INPUT = 77


def save(fig, out_dir, name):
    """Writes out_dir/name.png and out_dir/name.pdf; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, name + ".png")
    pdf = os.path.join(out_dir, name + ".pdf")
    fig.savefig(png, dpi=150, metadata={"Software": None})
    fig.savefig(pdf, metadata={"Creator": "userblk plots", "Producer": None,
                               "CreationDate": None, "ModDate": None})
    return png, pdf
