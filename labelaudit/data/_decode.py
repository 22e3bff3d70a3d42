"""Per-file work of the image cache: read headers and decode pixels.

Kept free of torch and pandas so worker processes start fast. Functions here trust their input;
:mod:`labelaudit.data.images` validates and orchestrates.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import signal
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Modes whose pixels carry one channel; a dataset made only of these is cached as grayscale.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: Set in pool workers by :func:`init_worker`: the pid of the process that started the pool.
_parent_pid: int | None = None


def init_worker(parent_pid: int) -> None:
    """Pool initializer: make this worker die with ``parent_pid``, the process that started it.

    On Linux the kernel kills the worker when its parent goes (``prctl(PR_SET_PDEATHSIG,
    SIGKILL)``; the signal follows the *thread* that forked the worker, which is the one that
    submits the work and waits for it). Everywhere, the per-file loops check that the parent is
    still there (:func:`exit_if_orphaned`): a worker whose parent was killed stops after its file.
    """
    global _parent_pid
    _parent_pid = parent_pid
    die_with_parent(parent_pid)  # no libc prctl: the loops' check still applies


def die_with_parent(parent_pid: int, prctl=None) -> None:
    """Make this process die when ``parent_pid``, the process that started it, goes.

    On Linux the kernel sends SIGKILL when the parent *thread* that forked this process ends
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere nothing is set. Exits at once when the
    parent is already gone (it may have died before prctl took effect). ``prctl`` is libc's,
    from :func:`libc_prctl`; pass it when called as a ``subprocess`` ``preexec_fn`` (between
    fork and exec nothing should be loaded): ``preexec_fn=partial(die_with_parent, os.getpid(),
    libc_prctl())``.
    """
    if prctl is None:
        prctl = libc_prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def libc_prctl():
    """libc's ``prctl`` on Linux, else None (no such call, or no libc to find it in)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def exit_if_orphaned() -> None:
    """In a pool worker, exit at once when the process that started the pool is gone."""
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)


def read_header(path: str, max_pixels: int) -> dict:
    """Hash a file and read its image header without decoding pixels.

    Returns a dict with ``width, height, mode, format, sha1`` and ``reason``/``detail`` (empty
    when the file looks usable; otherwise a code from :data:`labelaudit.data.sources.SKIP_REASONS`).
    """
    info = {"width": 0, "height": 0, "mode": "", "format": "", "sha1": "", "reason": "", "detail": ""}
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {**info, "reason": "missing", "detail": "no such file"}
    except OSError as exc:
        return {**info, "reason": "unreadable", "detail": str(exc)}
    if not data:
        return {**info, "reason": "empty", "detail": "zero bytes"}
    info["sha1"] = hashlib.sha1(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                info.update(width=img.width, height=img.height, mode=img.mode, format=img.format or "")
    except Image.DecompressionBombError as exc:
        return {**info, "reason": "too_large", "detail": str(exc).split(".")[0]}
    except UnidentifiedImageError:
        return {**info, "reason": "not_an_image", "detail": "Pillow cannot identify the format"}
    except Exception as exc:  # a damaged header raises anything from SyntaxError to struct.error
        return {**info, "reason": "corrupt", "detail": _one_line(exc)}
    if info["width"] * info["height"] > max_pixels:
        info.update(
            reason="too_large", detail=f"{info['width']}x{info['height']} exceeds {max_pixels} pixels"
        )
    elif info["width"] == 0 or info["height"] == 0:
        info.update(reason="corrupt", detail="zero width or height")
    return info


def decode_image(path: str, size: int, channels: int) -> np.ndarray:
    """Decode one image to a ``(size, size, channels)`` uint8 array.

    EXIF orientation is applied; transparency is composited over white; 16-bit and float images
    are scaled to 8 bits; the shorter side is resized to ``size`` and the centre cropped square.
    Raises ``OSError``/``ValueError`` (and others) on damaged data; see :func:`classify_error`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            # JPEG only: decode at a reduced scale that is still >= size (big speed-up on photos).
            img.draft("L" if channels == 1 else "RGB", (size, size))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = to_channels(img, channels)
            img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as 8-bit ``"L"`` (``channels == 1``) or ``"RGB"``: 16-bit and float images scaled
    to 8 bits, palettes expanded, transparency composited over white."""
    if img.mode in _WIDE_MODES:
        values = np.asarray(img)
        if img.mode == "F":
            scaled = np.clip(values * 255.0 if values.max(initial=0) <= 1.0 else values, 0, 255)
        else:  # 16-bit data (Pillow opens some 16-bit PNGs as 32-bit "I"); 65535 -> 255
            scaled = np.clip(values, 0, 65535) / 257.0
        img = Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "La", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def classify_error(exc: BaseException) -> tuple[str, str]:
    """Map a decoding exception to a ``(reason, detail)`` pair for ``skipped.csv``."""
    text = _one_line(exc)
    if isinstance(exc, Image.DecompressionBombError):
        return "too_large", text
    if isinstance(exc, UnidentifiedImageError):
        return "not_an_image", text
    if isinstance(exc, FileNotFoundError):
        return "missing", text
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated", text
    return "corrupt", text


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def header_chunk(paths: list[str], max_pixels: int) -> list[dict]:
    """Worker task: :func:`read_header` over a chunk of paths."""
    rows = []
    for path in paths:
        exit_if_orphaned()
        rows.append(read_header(path, max_pixels))
    return rows


def decode_chunk(
    pixels_file: str, positions: list[int], paths: list[str], size: int, channels: int
) -> list[tuple[int, str, str]]:
    """Worker task: decode ``paths`` into rows ``positions`` of the ``.npy`` file ``pixels_file``.

    Returns ``(position, reason, detail)`` for each image that failed; its row stays zero.
    """
    pixels = np.load(pixels_file, mmap_mode="r+")
    failures = []
    for position, path in zip(positions, paths):
        exit_if_orphaned()
        try:
            pixels[position] = decode_image(path, size, channels)
        except Exception as exc:  # any decoder failure is a per-file skip, never fatal
            failures.append((position, *classify_error(exc)))
    pixels.flush()
    del pixels
    return failures
