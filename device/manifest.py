"""manifest.json: the one contract between host, device and deploy.

The host writes it beside the ``.tflite`` files; the device reads it to preprocess frames
exactly as training did and to verify the model it loads; deploy reads it to verify what it
pushes. Layout (``schema`` 1)::

    {
      "schema": 1,
      "model": {"name": str, "params": int, "keras_accuracy": float},
      "labels": [10 class names, in output order],
      "input": {"shape": [1, 28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]},
      "preprocess": {"size": [28, 28], "color": "grayscale", "crop": "center",
                     "resize": "area", "polarity": "light_on_dark",
                     "normalize": [0.0, 1.0]},
      "variants": {
        "int8": {"path": "model_int8.tflite", "sha256": hex, "bytes": int,
                 "accuracy": float,             # official test split, fraction
                 "input":  {"shape": [...], "dtype": "int8", "scale": f, "zero_point": i},
                 "output": {"shape": [1, 10], "dtype": "int8", "scale": f, "zero_point": i}},
        "float32": {...}, "dynamic": {...}, "float16": {...}
      },
      "golden": {"path": "golden.npz", "sha256": hex, "count": int}
    }

``input`` at the top level is what every float variant takes (a float32 image in [0, 1]);
a variant's own ``input`` says where it differs (int8: its dtype, scale and zero point).
The golden ``.npz`` holds ``images`` (uint8 [N, 28, 28], official test images as stored),
``labels`` (int64 [N]) and per variant ``raw_<variant>`` (the host interpreter's raw output
tensor for each image, in the output dtype).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from device.errors import ManifestError

SCHEMA = 1
VARIANTS = ("float32", "dynamic", "float16", "int8")
MANIFEST_NAME = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and (for quantised tensors) scale and zero point of a model tensor."""

    shape: tuple[int, ...]
    dtype: str
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    @property
    def quantized(self) -> bool:
        """True when the tensor holds integers that stand for real values."""
        return self.dtype in ("int8", "uint8") and bool(self.scale)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; scale and zero point only when quantised."""
        d: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.scale is not None:
            d["scale"] = float(self.scale)
            d["zero_point"] = int(self.zero_point or 0)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> TensorSpec:
        """Parse and validate a tensor spec; ``where`` names it in errors."""
        try:
            shape = tuple(int(x) for x in d["shape"])
            dtype = str(d["dtype"])
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where}: needs 'shape' (list of ints) and 'dtype'. Got: {d!r}") from e
        scale = d.get("scale")
        zp = d.get("zero_point")
        return cls(shape, dtype, None if scale is None else float(scale), None if zp is None else int(zp))


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes the model input; must match what training saw."""

    size: tuple[int, int] = (28, 28)
    color: str = "grayscale"
    crop: str = "center"
    resize: str = "area"
    polarity: str = "light_on_dark"
    normalize: tuple[float, float] = (0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["size"] = list(self.size)
        d["normalize"] = list(self.normalize)
        return d


@dataclass(frozen=True)
class Variant:
    """One converted model: its file, hash, size, accuracy and tensor specs."""

    name: str
    path: str
    sha256: str
    bytes: int
    accuracy: Optional[float]
    input: TensorSpec
    output: TensorSpec

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (without the name, which is the key)."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "accuracy": self.accuracy,
            "input": self.input.to_json(),
            "output": self.output.to_json(),
        }


@dataclass(frozen=True)
class Golden:
    """A small labelled set with the host interpreter's outputs, for parity checks."""

    path: str
    sha256: str
    count: int


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest; ``root`` is the folder that relative paths start from."""

    labels: tuple[str, ...]
    input: TensorSpec
    preprocess: Preprocess
    variants: dict[str, Variant]
    root: Path = Path(".")
    model: dict[str, Any] = field(default_factory=dict)
    golden: Optional[Golden] = None
    schema: int = SCHEMA

    def variant(self, name: str) -> Variant:
        """The named variant, or a ManifestError listing those present."""
        try:
            return self.variants[name]
        except KeyError:
            raise ManifestError(
                f"variant {name!r} is not in the manifest at {self.root}; "
                f"it has: {', '.join(self.variants) or 'none'}"
            ) from None

    def model_path(self, name: str) -> Path:
        """Absolute path of a variant's .tflite file."""
        return self.root / self.variant(name).path

    def golden_path(self) -> Path:
        """Absolute path of the golden .npz, or a ManifestError if there is none."""
        if self.golden is None:
            raise ManifestError(f"the manifest at {self.root} names no golden set; re-run `python -m host run`")
        return self.root / self.golden.path

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict in the documented layout."""
        d: dict[str, Any] = {
            "schema": self.schema,
            "model": self.model,
            "labels": list(self.labels),
            "input": {**self.input.to_json(), "range": list(self.preprocess.normalize)},
            "preprocess": self.preprocess.to_json(),
            "variants": {k: v.to_json() for k, v in self.variants.items()},
        }
        if self.golden is not None:
            d["golden"] = asdict(self.golden)
        return d

    def write(self, folder: Path) -> Path:
        """Write manifest.json into ``folder`` and return its path."""
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def parse_manifest(data: dict[str, Any], root: Path) -> Manifest:
    """Validate a manifest dict; every problem is a ManifestError naming the field."""
    where = str(root / MANIFEST_NAME)
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object. Got: {type(data).__name__}")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise ManifestError(f"{where}: schema {schema} is not supported (this kit reads {SCHEMA}); re-run the host pipeline")
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ManifestError(f"{where}: 'labels' must be a non-empty list of strings. Got: {labels!r}")
    if "input" not in data or "variants" not in data:
        raise ManifestError(f"{where}: needs 'input' and 'variants'")
    top_input = TensorSpec.from_json(data["input"], f"{where}: input")
    pre = data.get("preprocess", {})
    try:
        preprocess = Preprocess(
            size=tuple(int(x) for x in pre.get("size", (28, 28))),  # type: ignore[arg-type]
            color=str(pre.get("color", "grayscale")),
            crop=str(pre.get("crop", "center")),
            resize=str(pre.get("resize", "area")),
            polarity=str(pre.get("polarity", "light_on_dark")),
            normalize=tuple(float(x) for x in pre.get("normalize", (0.0, 1.0))),  # type: ignore[arg-type]
        )
    except (TypeError, ValueError) as e:
        raise ManifestError(f"{where}: bad 'preprocess'. Got: {pre!r}") from e
    if preprocess.polarity not in ("light_on_dark", "dark_on_light"):
        raise ManifestError(f"{where}: preprocess.polarity must be light_on_dark or dark_on_light. Got: {preprocess.polarity!r}")
    variants: dict[str, Variant] = {}
    raw_variants = data["variants"]
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise ManifestError(f"{where}: 'variants' must be a non-empty object")
    for name, v in raw_variants.items():
        vw = f"{where}: variants.{name}"
        try:
            variants[name] = Variant(
                name=name,
                path=str(v["path"]),
                sha256=str(v["sha256"]),
                bytes=int(v["bytes"]),
                accuracy=None if v.get("accuracy") is None else float(v["accuracy"]),
                input=TensorSpec.from_json(v.get("input", data["input"]), f"{vw}.input"),
                output=TensorSpec.from_json(v.get("output", {"shape": [1, len(labels)], "dtype": "float32"}), f"{vw}.output"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{vw}: needs path, sha256 and bytes. Got: {v!r}") from e
        if Path(variants[name].path).is_absolute() or ".." in Path(variants[name].path).parts:
            raise ManifestError(f"{vw}.path must be relative to the manifest's folder. Got: {variants[name].path!r}")
    golden = None
    if data.get("golden"):
        g = data["golden"]
        try:
            golden = Golden(path=str(g["path"]), sha256=str(g["sha256"]), count=int(g["count"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where}: bad 'golden'. Got: {g!r}") from e
    return Manifest(
        labels=tuple(labels),
        input=top_input,
        preprocess=preprocess,
        variants=variants,
        root=root,
        model=dict(data.get("model", {})),
        golden=golden,
        schema=SCHEMA,
    )


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest; ``path`` may be the file or its folder."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.exists():
        raise ManifestError(f"no manifest at {p}: run `python -m host run --out DIR` first, then pass DIR/{MANIFEST_NAME}")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"cannot read {p}: {e}. Re-create it with `python -m host run`") from e
    return parse_manifest(data, p.parent.resolve())
