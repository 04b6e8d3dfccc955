"""Reading a diagram's own text: every label with its box, by Tesseract 5 (through tesserocr).

A whole-page `tesseract IMG - -l rus+eng` finds about three labels in four on our starter
diagrams: its page layout analysis takes boxes, arrows and lane borders for text, an arrow
drawn through an edge label ("Yes") splits the word, and the mixed eng+rus model reads
English as Cyrillic look-alikes ("card" → "сага"). So we do the layout ourselves, which is
easy on a rendered diagram, and ask Tesseract only to read single lines:

1. grey, with the light evened out (divided by a blurred maximum of itself), then turned
   straight when it was photographed or scanned askew (the angle whose ink projections are
   sharpest);
2. ruled lines (borders, arrows) are erased: ink that stays after an opening with a line
   twice as long as a letter is tall;
3. what remains, letter-sized connected components, is smeared sideways into text lines;
   a line much taller than it is wide is a lane's name written bottom to top;
4. each line is cut out, scaled so that letters are about 20 px tall and read as one line
   (page segmentation mode 7) in the diagram's language, which is chosen once per image by
   reading its longest lines in each language;
5. lines that lie one above the other with a small gap are one label.

Measured by bench/ocr_recall.py. No torch here: the worker runs this in a thread of its own
beside the GPU (tesserocr lets go of the GIL while Tesseract reads).
"""

from __future__ import annotations

import math
import re
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps
from scipy import ndimage

TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata", "/usr/share/tessdata")
LANGUAGES = {"eng": "en", "rus": "ru"}
INK = 150  # of 255, after the light is evened out
LETTER_PX = 20  # letters are scaled to about this height before Tesseract reads them
MIN_WORD_CONFIDENCE = 40.0  # below it, a "word" is almost always an arrowhead or a border read as text
SKEW_LIMIT_DEGREES = 3.5
SKEW_STEP_DEGREES = 0.25
LANGUAGE_SAMPLE_LINES = 6

Box = tuple[int, int, int, int]  # x, y, width, height in the uploaded image's pixels

_WORD = re.compile(r"[^\W\d_]+|\d+")


class OcrUnavailable(RuntimeError):
    """Tesseract or its English/Russian models are not installed."""


def words_of(text: str) -> list[str]:
    """The words of a text as the matching compares them: case folded, ё as е, digits apart
    from letters ("в1С" and "в 1С" are the same three words); symbols such as "™" are no words."""
    symbols = "".join(" " if unicodedata.category(character).startswith("S") else character for character in text)
    return _WORD.findall(unicodedata.normalize("NFKC", symbols).casefold().replace("ё", "е"))


@dataclass(frozen=True)
class Word:
    text: str
    box: Box
    confidence: float


@dataclass(frozen=True)
class TextLabel:
    """One label of the diagram: lines that belong together, with their box."""

    text: str
    box: Box
    words: tuple[Word, ...]
    vertical: bool = False


@dataclass(frozen=True)
class Reading:
    width: int
    height: int
    language: str  # "en" or "ru": the model the image was read with
    angle: float  # degrees the image was turned to make it straight
    labels: tuple[TextLabel, ...]
    seconds: float
    engine: str = ""

    @property
    def text(self) -> str:
        return "\n".join(label.text for label in self.labels)

    def as_json(self) -> dict:
        data = asdict(self)
        for label in data["labels"]:
            label["box"] = list(label["box"])
            for word in label["words"]:
                word["box"] = list(word["box"])
        return data


# ---------------------------------------------------------------- Tesseract


def tessdata_dir(configured: str = "") -> str:
    """The folder with eng and rus .traineddata: `configured` (OCR_TESSDATA) when set, else
    where Debian's packages put them."""
    candidates = (configured,) if configured else TESSDATA_DIRS
    for candidate in candidates:
        if all((Path(candidate) / f"{model}.traineddata").is_file() for model in LANGUAGES):
            return candidate
    raise OcrUnavailable(
        "Tesseract's English and Russian models were not found (looked in "
        f"{', '.join(candidates)}). Install the Debian packages "
        "tesseract-ocr-eng and tesseract-ocr-rus (scripts/install_tesseract.sh), or set OCR_TESSDATA."
    )


_local = threading.local()


def _engines(tessdata: str) -> dict:
    """One Tesseract per language and thread: an engine must not be used by two threads at once."""
    engines = getattr(_local, "engines", None)
    if engines is None or _local.tessdata != tessdata:
        import tesserocr

        engines = {
            model: tesserocr.PyTessBaseAPI(path=tessdata, lang=model, psm=tesserocr.PSM.SINGLE_LINE, oem=tesserocr.OEM.LSTM_ONLY)
            for model in LANGUAGES
        }  # fmt: skip
        _local.engines, _local.tessdata = engines, tessdata
    return engines


@cache
def engine_version() -> str:
    import tesserocr

    return "tesseract " + tesserocr.tesseract_version().split()[1]


def _read_line(engine, image: Image.Image, *, block: bool = False) -> list[tuple[str, Box, float]]:
    """(word, its box in `image`, confidence) for each word Tesseract reads in one line (or, with
    `block`, in a few lines: a lane's name may take two)."""
    import tesserocr

    engine.SetPageSegMode(tesserocr.PSM.SINGLE_BLOCK if block else tesserocr.PSM.SINGLE_LINE)
    engine.SetImage(image)
    engine.Recognize()
    level, words = tesserocr.RIL.WORD, []
    iterator = engine.GetIterator()
    if iterator is None:
        return words
    for result in tesserocr.iterate_level(iterator, level):
        try:
            text = result.GetUTF8Text(level)
        except RuntimeError:  # an empty word
            continue
        box = result.BoundingBox(level)
        if text and box:
            x0, y0, x1, y1 = box
            words.append((text, (x0, y0, x1 - x0, y1 - y0), result.Confidence(level)))
    return words


# ---------------------------------------------------------------- finding the lines


def _even_light(gray: Image.Image) -> np.ndarray:
    """Each pixel over the local background (a blurred maximum): shading and uneven light go."""
    small = gray.reduce(8) if min(gray.size) >= 64 else gray
    background = small.filter(ImageFilter.MaxFilter(5)).resize(gray.size, Image.BILINEAR)
    pixels = np.asarray(gray, dtype=np.float32)
    return np.clip(pixels / np.maximum(np.asarray(background, dtype=np.float32), 1) * 255, 0, 255)


def skew_angle(gray: Image.Image) -> float:
    """The turn (degrees, anticlockwise) that makes the drawing straight: where the ink's row and
    column sums are sharpest. 0 unless some angle is clearly (5 %) sharper than none."""
    ink = Image.fromarray(((_even_light(gray.reduce(max(1, gray.width // 1000))) < INK) * 255).astype(np.uint8))

    def sharpness(angle: float) -> float:
        turned = np.asarray(ink.rotate(angle, resample=Image.NEAREST, expand=True), dtype=np.float32)
        return float((turned.sum(axis=1) ** 2).sum() + (turned.sum(axis=0) ** 2).sum())

    straight = sharpness(0.0)
    angles = np.arange(-SKEW_LIMIT_DEGREES, SKEW_LIMIT_DEGREES + 1e-9, SKEW_STEP_DEGREES)
    best, angle = max((sharpness(float(a)), float(a)) for a in angles)
    return angle if best > straight * 1.05 else 0.0


def _letter_height(heights: np.ndarray, widths: np.ndarray) -> float:
    plausible = (heights >= 6) & (heights <= 80) & (widths <= 80)
    return float(np.median(heights[plausible])) if plausible.any() else 12.0


def _ruled(ink: np.ndarray, length: int) -> np.ndarray:
    """Ink on a straight horizontal or vertical run at least `length` long: borders and arrows."""
    ink8 = ink.view(np.uint8)
    runs = []
    for axis in (0, 1):
        runs.append(ndimage.maximum_filter1d(ndimage.minimum_filter1d(ink8, length, axis=axis), length, axis=axis))
    return (runs[0] | runs[1]).astype(bool)


def _components(ink: np.ndarray) -> tuple[np.ndarray, list]:
    labelled, _ = ndimage.label(ink, structure=np.ones((3, 3)))
    return labelled, ndimage.find_objects(labelled)


def _sizes(objects: list) -> tuple[np.ndarray, np.ndarray]:
    heights = np.array([o[0].stop - o[0].start for o in objects] or [0])
    widths = np.array([o[1].stop - o[1].start for o in objects] or [0])
    return heights, widths


def find_lines(pixels: np.ndarray) -> tuple[list[tuple[Box, bool]], int]:
    """Boxes of the text lines in an evened-out grey image (ruled lines erased from `pixels` in
    place), each with whether it is written vertically; and the letter height."""
    ink = pixels < INK
    heights, widths = _sizes(_components(ink)[1])
    letter = _letter_height(heights, widths)
    ruled = _ruled(ink, max(int(2 * letter), 8))
    ink &= ~ruled
    pixels[ruled] = 255
    labelled, objects = _components(ink)
    heights, widths = _sizes(objects)
    flat = (heights <= max(2, 0.3 * letter)) & (widths > 0.8 * letter)  # dashes left of a broken line
    upright = (widths <= max(2, 0.3 * letter)) & (heights > 1.6 * letter)
    letters = (heights >= 2) & (heights <= 2.5 * letter) & (widths <= 3 * letter) & ~flat & ~upright
    mask = np.isin(labelled, np.flatnonzero(letters) + 1)
    reach, thin = max(3, round(1.5 * letter)), max(1, int(letter) // 4)
    rows = [box for box in _boxes(ndimage.binary_dilation(mask, structure=np.ones((thin, reach)))) if min(box[2], box[3]) >= 5]
    # A lane's name is a column of turned letters: smeared sideways it falls apart into pieces
    # a letter or two wide, smeared downwards it is tall and narrow.
    tall = [box for box in _boxes(ndimage.binary_dilation(mask, structure=np.ones((reach, thin))))
            if box[3] > 2.5 * box[2] and box[3] >= 3 * letter and box[2] < 3.5 * letter]  # fmt: skip
    columns = []
    for column in _side_by_side(tall, letter):  # a lane's name in two turned lines is one column
        pieces = [row for row in rows if _inside(row, column)]
        if len(pieces) >= 2 and all(row[2] <= column[2] + reach for row in pieces):
            columns.append(column)
    lines = [(box, True) for box in columns]
    lines += [(box, False) for box in rows if not any(_inside(box, column) for column in columns)]
    return lines, int(letter)


def _boxes(mask: np.ndarray) -> list[Box]:
    return [(c.start, r.start, c.stop - c.start, r.stop - r.start) for r, c in ndimage.find_objects(ndimage.label(mask)[0])]


def _side_by_side(columns: list[Box], letter: float) -> list[Box]:
    """Two columns less than a letter apart that mostly share their height, each about a line
    tall (≤ 2.2 letters wide), merged: a lane's name in two turned lines. Never more than two
    (the letters of upright text stand side by side too), nor wider ones (the halves of an
    event's circle); what is not merged is judged alone."""
    merged: list[list] = []  # [box, how many columns it holds]
    for x, y, w, h in sorted(columns):
        for entry in merged:
            (mx, my, mw, mh), count = entry
            shared = min(my + mh, y + h) - max(my, y)
            narrow = count == 1 and mw <= 2.2 * letter and w <= 2.2 * letter
            if narrow and 0 <= x - (mx + mw) < letter and shared > 0.5 * min(mh, h):
                left, top = min(mx, x), min(my, y)
                entry[0], entry[1] = (left, top, max(mx + mw, x + w) - left, max(my + mh, y + h) - top), count + 1
                break
        else:
            merged.append([(x, y, w, h), 1])
    return [box for box, _ in merged]


def _inside(box: Box, outer: Box) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return outer[0] <= cx <= outer[0] + outer[2] and outer[1] <= cy <= outer[1] + outer[3]


# ---------------------------------------------------------------- reading


@dataclass
class _Line:
    box: Box  # in the straightened image
    vertical: bool
    image: Image.Image  # cut out, scaled (and turned upright when vertical)
    scale: float
    words: list = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(word for word, _, _ in self.words)


def _cut(page: Image.Image, box: Box, vertical: bool, letter: int) -> _Line:
    x, y, w, h = box
    pad = max(4, letter // 2)
    crop = page.crop((max(0, x - pad), max(0, y - pad), x + w + pad, y + h + pad))
    if vertical:
        crop = crop.rotate(-90, expand=True)  # a lane's name reads bottom to top
    scale = LETTER_PX / max(letter, 1)
    if scale > 1.2:
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.LANCZOS)
    else:
        scale = 1.0
    return _Line(box, vertical, crop, scale)


def _mean_confidence(words: list) -> float:
    return sum(confidence for _, _, confidence in words) / len(words) if words else 0.0


def _choose_model(engines: dict, lines: list[_Line]) -> str:
    """The model whose reading of the longest lines is the more confident (upright ones when there
    are: a turned lane name is read less surely, and tipped one image of 60 into English)."""
    upright = [line for line in lines if not line.vertical] or lines
    sample = sorted(upright, key=lambda line: -line.box[2])[:LANGUAGE_SAMPLE_LINES]
    votes = {model: sum(_mean_confidence(_read_line(engine, line.image)) for line in sample) for model, engine in engines.items()}
    return max(votes, key=votes.get)


def _readable(word: str, confidence: float) -> bool:
    return confidence >= MIN_WORD_CONFIDENCE and any(character.isalnum() for character in word)


def _words(engine, line: _Line) -> list:
    return [word for word in _read_line(engine, line.image, block=line.vertical) if _readable(word[0], word[2])]


def read_image(image: Image.Image, *, tessdata: str = "", model: str = "") -> Reading:
    """Every label in `image` with its box; `model` ("eng", "rus") skips choosing the language."""
    started = time.perf_counter()
    engines = _engines(tessdata_dir(tessdata))
    gray = ImageOps.grayscale(image)
    angle = skew_angle(gray)
    straight = gray.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=255) if angle else gray
    pixels = _even_light(straight)
    boxes, letter = find_lines(pixels)
    page = Image.fromarray(pixels.astype(np.uint8))
    lines = [_cut(page, box, vertical, letter) for box, vertical in boxes]
    model = model or (_choose_model(engines, lines) if lines else "eng")
    for line in lines:
        line.words = _words(engines[model], line)
        if line.vertical and not line.words:  # or written top to bottom
            line.image = line.image.rotate(180)
            line.words = _words(engines[model], line)
    frame = _Frame(image.size, straight.size, angle)
    labels = _labels([line for line in lines if line.words], frame, letter)
    return Reading(image.width, image.height, LANGUAGES[model], angle, labels, round(time.perf_counter() - started, 3), engine_version())


class _Frame:
    """From the straightened image's pixels back to the uploaded image's."""

    def __init__(self, original: tuple[int, int], straight: tuple[int, int], angle: float) -> None:
        self.original, self.straight = original, straight
        self.cos, self.sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def box(self, box: Box) -> Box:
        if self.cos == 1.0:
            return box
        x, y, w, h = box
        (ow, oh), (sw, sh) = self.original, self.straight
        points = []
        for px, py in ((x, y), (x + w, y), (x, y + h), (x + w, y + h)):
            dx, dy = px - sw / 2, py - sh / 2  # PIL turned the image anticlockwise: turn back
            points.append((ow / 2 + dx * self.cos - dy * self.sin, oh / 2 + dx * self.sin + dy * self.cos))
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        left, top = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
        return left, top, min(ow, math.ceil(max(xs))) - left, min(oh, math.ceil(max(ys))) - top


def _word_box(line: _Line, box: Box, letter: int) -> Box:
    """A word's box in the straightened image, from its box in the line's cut-out."""
    if line.vertical:
        return line.box
    pad = max(4, letter // 2)
    x, y, w, h = (round(value / line.scale) for value in box)
    return max(0, line.box[0] - pad + x), max(0, line.box[1] - pad + y), w, h


def _labels(lines: list[_Line], frame: _Frame, letter: int) -> tuple[TextLabel, ...]:
    """Lines one under the other, overlapping sideways, less than a line apart: one label."""
    groups: list[list[_Line]] = []
    for line in sorted(lines, key=lambda line: (line.box[1], line.box[0])):
        home = next((group for group in groups if _continues(group[-1], line, letter)), None)
        if home is None:
            groups.append([line])
        else:
            home.append(line)
    labels = []
    for group in groups:
        words = tuple(
            Word(text, frame.box(_word_box(line, box, letter)), round(confidence, 1))
            for line in group for text, box, confidence in line.words
        )  # fmt: skip
        left = min(line.box[0] for line in group)
        top = min(line.box[1] for line in group)
        right = max(line.box[0] + line.box[2] for line in group)
        bottom = max(line.box[1] + line.box[3] for line in group)
        text = " ".join(line.text for line in group)
        labels.append(TextLabel(text, frame.box((left, top, right - left, bottom - top)), words, group[0].vertical))
    return tuple(sorted(labels, key=lambda label: (label.box[1], label.box[0])))


def _continues(above: _Line, below: _Line, letter: int) -> bool:
    if above.vertical or below.vertical:
        return False
    ax, ay, aw, ah = above.box
    bx, by, bw, bh = below.box
    gap = by - (ay + ah)
    overlap = min(ax + aw, bx + bw) - max(ax, bx)
    centres = abs((ax + aw / 2) - (bx + bw / 2))
    return -letter / 2 <= gap <= max(letter, 0.9 * max(ah, bh)) and overlap > 0 and centres <= max(aw, bw) / 2


def read_file(path: str, *, tessdata: str = "", max_pixels: int = 12_000_000, language: str = "") -> Reading:
    """read_image on an uploaded file (already checked by describer.images); one larger than
    `max_pixels` is read scaled down, its boxes given in the file's own pixels. `language`
    ("en", "ru", "" for either) picks the model."""
    with Image.open(path) as opened:  # stored upright: describer.images applied EXIF at upload
        image = opened.convert("RGB")
    factor = min(1.0, math.sqrt(max_pixels / (image.width * image.height)))
    scaled = image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS) if factor < 1 else image
    model = {code: model for model, code in LANGUAGES.items()}.get(language, "")
    reading = read_image(scaled, tessdata=tessdata, model=model)
    return _rescaled(reading, image.size, 1 / factor) if factor < 1 else reading


def _rescaled(reading: Reading, size: tuple[int, int], factor: float) -> Reading:
    def box(b: Box) -> Box:
        return tuple(round(value * factor) for value in b)

    labels = tuple(
        TextLabel(label.text, box(label.box), tuple(Word(w.text, box(w.box), w.confidence) for w in label.words), label.vertical)
        for label in reading.labels
    )  # fmt: skip
    return Reading(size[0], size[1], reading.language, reading.angle, labels, reading.seconds, reading.engine)
