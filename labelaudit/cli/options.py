"""The options and arguments more than one command takes, as ``Annotated`` aliases.

One alias is one option: the same flags, help and checks wherever a command takes it. An option
that only reads alike in two commands (``--out`` is a run directory for scan, a predictions file
for predict) is made by a factory here with its own help. Defaults stay in the commands'
signatures, beside the parameter they belong to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.models import ArgumentInfo, OptionInfo

from ..errors import ConfigError

#: The largest --seed: numpy and torch seeds are 64-bit.
SEED_MAX = 2**63 - 1


def path_argument(help: str) -> ArgumentInfo:
    """A required path argument. Not checked by Click (``readable=False``): the library's own
    check names the problem in one line."""
    return typer.Argument(help=help, show_default=False, readable=False)


def out_option(help: str, metavar: str = "DIR") -> OptionInfo:
    """``--out``/``-o``, where a command writes; each command says what it writes there."""
    return typer.Option("--out", "-o", metavar=metavar, help=help)


def backbone_weights_option(read_from: str) -> OptionInfo:
    """``--weights FILE`` of the commands that reuse a scan's pretrained backbone; ``read_from``
    names what they read it from in the help ("models", "scans")."""
    return typer.Option(
        "--weights",
        metavar="FILE",
        help=f"Head-mode {read_from}: the backbone's weights file, when it moved since the scan (it must "
        "hold the same weights).",
    )


SourceArg = Annotated[
    Path,
    path_argument(
        "Image folder (one subfolder per class), a .parquet/.csv manifest, or a Hugging Face dataset "
        "(.parquet/.arrow with embedded images, or a save_to_disk folder)."
    ),
]
RunDirArg = Annotated[Path, path_argument("The run directory a scan wrote (its --out).")]
ModelArg = Annotated[Path, path_argument("A model.pt, or the run directory of a scan or retrain.")]

PathColumnOpt = Annotated[
    Optional[str],
    typer.Option(
        "--path-column",
        help="Manifest column with image paths [default: path, image, file_name, ...]; for a Hugging Face "
        "dataset, its image column [default: its Image feature].",
    ),
]
LabelColumnOpt = Annotated[
    Optional[str],
    typer.Option("--label-column", help="Manifest column with labels [default: label, class, target, ...]."),
]
IdColumnOpt = Annotated[
    Optional[str],
    typer.Option(
        "--id-column",
        help="Manifest column with unique sample ids [default: sample_id or id if present, else the path; "
        "Hugging Face datasets: the images' unique path texts, else row-000123].",
    ),
]
LabelNamesOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--label-names",
        metavar="FILE",
        help="Hugging Face datasets: a text file naming the integer labels, one class per line (line 1 = "
        "label 0); needed when the label column has no ClassLabel names.",
    ),
]
ImageSizeOpt = Annotated[
    Optional[int],
    typer.Option(
        "--image-size",
        min=4,
        max=1024,
        help="Side of the square images the network sees [default: median shorter side, clamped to 16..64].",
    ),
]
CacheDirOpt = Annotated[
    Optional[str],  # text, not Path: Path("") would turn an empty value into the current folder
    typer.Option(
        "--cache-dir",
        help="Where decoded images are cached [default: $LABELAUDIT_CACHE_DIR or ~/.cache/labelaudit].",
    ),
]
WorkersOpt = Annotated[
    Optional[int], typer.Option("--workers", min=1, help="Decoding processes [default: all cores].")
]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an earlier output of this command at --out (a folder holding anything else is never "
        "replaced).",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (no tables, no bars).")
]
RenamedEpochsOpt = Annotated[Optional[str], typer.Option("--epochs", hidden=True, help="Renamed --budget.")]


def refuse_renamed_epochs(command: str, epochs: Optional[str]) -> None:
    """Name the new option when an old command line still passes ``--epochs`` to ``command``
    (scan, benchmark): it became --budget, a multiple of the default schedule."""
    if epochs is not None:
        raise ConfigError(
            f"{command} --epochs was renamed --budget (a multiple of the default schedule, e.g. 0.5 = half "
            f"the epochs); got --epochs {epochs!r}: pass --budget {epochs} instead"
        )
