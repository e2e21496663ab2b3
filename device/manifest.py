"""manifest.json: the one contract between host, device and deploy.

The host writes it beside the ``.tflite`` files; the device reads it to preprocess frames
exactly as training did and to verify the model it loads; deploy reads it to verify what it
pushes. Layout (``schema`` 2; a schema-1 manifest is read unchanged, its missing fields taking
the defaults below, which are what schema 1 meant)::

    {
      "schema": 2,
      "model": {"name": str, "params": int, "keras_accuracy": float, ...},
      "labels": [class names, in output order],
      "input": {"shape": [1, H, W, C], "dtype": "float32", "range": [lo, hi]},
      "preprocess": {
        "size": [H, W],                 # model input height and width, any
        "color": "grayscale" | "rgb",   # C = 1 or 3
        "channel_order": "rgb" | "bgr", # the channel order the model wants (rgb models)
        "crop": "center" | "none" | "object",
                                        # center: the largest centred window of the model's aspect
                                        # none: the whole frame, stretched to [H, W]
                                        # object: the object's bounding box against the background,
                                        #   its longer side filling the frame, centred
                                        #   (how Fashion-MNIST itself was made)
        "resize": "area",               # box filter (integer block sums where the factor is whole)
        "contrast": "border" | "none",  # border: the frame's border is the background reference and
                                        #   the object's far end maps to the other end of the range
                                        # none: pixel values as the camera gives them
        "polarity": "light_on_dark" | "dark_on_light" | "any",
                                        # what the model was trained on; a frame of the other
                                        # polarity is inverted (any: never inverted)
        "normalize": [lo, hi]           # pixel 0 -> lo, 255 -> hi, every channel
                   | {"mean": [m...], "std": [s...]}
                                        # (pixel - mean) / std per channel, in pixel units 0..255
                                        # (TFLite metadata's NormalizationOptions convention)
      },
      "variants": {
        "int8": {"path": "model_int8.tflite", "sha256": hex, "bytes": int,
                 "accuracy": float,             # held-out test split, fraction
                 "input":  {"shape": [...], "dtype": "int8", "scale": f, "zero_point": i},
                 "output": {"shape": [1, K], "dtype": "int8", "scale": f, "zero_point": i}},
        "float32": {...}, "dynamic": {...}, "float16": {...}
      },
      "golden": {"path": "golden.npz", "sha256": hex, "count": int}
    }

Defaults for fields a manifest leaves out: size [28, 28], grayscale, channel_order rgb, crop
center, resize area, contrast border, polarity light_on_dark, normalize [0, 1].

A variant's input dtype is float32, uint8 or int8 (with scale and zero point); a device that
cannot honour a field refuses the manifest in one line naming the field, the value and what
this build supports. ``input`` at the top level is what the float variants take; a variant's
own ``input`` says where it differs. The golden ``.npz`` holds ``images`` (uint8 [N, H, W] or
[N, H, W, 3], test images as stored, in R,G,B order), ``labels`` (int64 [N]) and per variant
``raw_<variant>`` (the host interpreter's raw output tensor for each image, in the output dtype).

This module is standard library only: the deploy agent bundles it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from device.errors import ManifestError

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
VARIANTS = ("float32", "dynamic", "float16", "int8")
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

# What this build honours, field by field (the first value is the default).
COLORS = ("grayscale", "rgb")
CHANNEL_ORDERS = ("rgb", "bgr")
CROPS = ("center", "none", "object")
RESIZES = ("area",)
CONTRASTS = ("border", "none")
POLARITIES = ("light_on_dark", "dark_on_light", "any")
INPUT_DTYPES = ("float32", "uint8", "int8")


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
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: a tensor spec must be an object with 'shape' and 'dtype'. Got: {d!r}")
        try:
            shape = tuple(int(x) for x in d["shape"])
            dtype = str(d["dtype"])
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ManifestError(f"{where}: needs 'shape' (list of ints) and 'dtype'. Got: {d!r}") from e
        scale, zp = d.get("scale"), d.get("zero_point")
        try:
            return cls(shape, dtype, None if scale is None else float(scale), None if zp is None else int(zp))
        except (TypeError, ValueError, OverflowError) as e:
            raise ManifestError(f"{where}: scale must be a number and zero_point an integer. Got: {d!r}") from e


@dataclass(frozen=True)
class Normalize:
    """Pixel value (0..255, after contrast and polarity) → the model's real-valued input, per channel.

    Either a ``range`` (pixel 0 → lo, 255 → hi on every channel) or per-channel ``mean`` and
    ``std`` in pixel units ((pixel - mean) / std). Both are one multiply-add per channel.
    """

    range: Optional[tuple[float, float]] = (0.0, 1.0)
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None

    def affine(self, channels: int) -> tuple[tuple[float, float], ...]:
        """(scale, offset) per channel with real = pixel * scale + offset."""
        if self.range is not None:
            lo, hi = self.range
            return tuple(((hi - lo) / 255.0, lo) for _ in range(channels))
        mean, std = self.mean or (0.0,), self.std or (1.0,)
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        return tuple((1.0 / s, -m / s) for m, s in zip(mean, std))

    def bounds(self, channels: int) -> tuple[tuple[float, float], ...]:
        """(real value of pixel 0, real value of pixel 255) per channel."""
        return tuple((c, 255.0 * k + c) for k, c in self.affine(channels))

    def to_json(self) -> Any:
        """``[lo, hi]`` (the schema-1 form) or ``{"mean": [...], "std": [...]}``."""
        if self.range is not None:
            return [float(self.range[0]), float(self.range[1])]
        return {"mean": [float(x) for x in self.mean or ()], "std": [float(x) for x in self.std or ()]}

    @classmethod
    def from_json(cls, d: Any, where: str, channels: int) -> Normalize:
        """Parse ``[lo, hi]`` or ``{"mean", "std"}``; errors name the field and the value."""
        if isinstance(d, (list, tuple)):
            try:
                lo, hi = (float(x) for x in d)
            except (TypeError, ValueError):
                raise ManifestError(f"{where}: normalize must be [lo, hi] or {{\"mean\": [...], \"std\": [...]}}. Got: {d!r}") from None
            if not lo < hi:
                raise ManifestError(f"{where}: normalize [lo, hi] needs lo < hi. Got: {d!r}")
            return cls(range=(lo, hi))
        if isinstance(d, dict) and set(d) == {"mean", "std"}:
            try:
                mean = tuple(float(x) for x in d["mean"])
                std = tuple(float(x) for x in d["std"])
            except (TypeError, ValueError):
                raise ManifestError(f"{where}: normalize mean and std must be lists of numbers. Got: {d!r}") from None
            for name, vals in (("mean", mean), ("std", std)):
                if len(vals) not in (1, channels):
                    raise ManifestError(f"{where}: normalize.{name} needs 1 or {channels} values for this model. Got: {list(vals)}")
            if any(not x > 0 for x in std):
                raise ManifestError(f"{where}: normalize.std must be positive. Got: {list(std)}")
            return cls(range=None, mean=mean, std=std)
        raise ManifestError(f"{where}: normalize must be [lo, hi] or {{\"mean\": [...], \"std\": [...]}}. Got: {d!r}")


def _choice(pre: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    value = pre.get(key, allowed[0])
    if value not in allowed:
        raise ManifestError(
            f"{where}: preprocess.{key} is {value!r}; this device build supports {', '.join(allowed)}. "
            "Update the device package to the host's version, or re-run the host with a supported value"
        )
    return str(value)


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes the model input; must match what training saw (see the module docstring)."""

    size: tuple[int, int] = (28, 28)  # [H, W]
    color: str = "grayscale"
    channel_order: str = "rgb"
    crop: str = "center"
    resize: str = "area"
    contrast: str = "border"
    polarity: str = "light_on_dark"
    normalize: Normalize = field(default_factory=Normalize)

    @property
    def channels(self) -> int:
        """1 for grayscale, 3 for rgb."""
        return 3 if self.color == "rgb" else 1

    def input_shape(self) -> tuple[int, int, int, int]:
        """The [1, H, W, C] tensor shape this contract produces."""
        return (1, int(self.size[0]), int(self.size[1]), self.channels)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "size": [int(self.size[0]), int(self.size[1])],
            "color": self.color,
            "channel_order": self.channel_order,
            "crop": self.crop,
            "resize": self.resize,
            "contrast": self.contrast,
            "polarity": self.polarity,
            "normalize": self.normalize.to_json(),
        }

    @classmethod
    def from_json(cls, pre: Any, where: str) -> Preprocess:
        """Parse and validate; every problem is one ManifestError naming the field, value and what is supported."""
        if pre is None:
            pre = {}
        if not isinstance(pre, dict):
            raise ManifestError(f"{where}: preprocess must be an object. Got: {pre!r}")
        size = pre.get("size", [28, 28])
        try:
            h, w = (int(x) for x in size)
        except (TypeError, ValueError, OverflowError):
            raise ManifestError(f"{where}: preprocess.size must be [height, width]. Got: {size!r}") from None
        if not (1 <= h <= 4096 and 1 <= w <= 4096):
            raise ManifestError(f"{where}: preprocess.size must be between 1 and 4096 pixels per side. Got: {size!r}")
        color = _choice(pre, "color", COLORS, where)
        channels = 3 if color == "rgb" else 1
        return cls(
            size=(h, w),
            color=color,
            channel_order=_choice(pre, "channel_order", CHANNEL_ORDERS, where),
            crop=_choice(pre, "crop", CROPS, where),
            resize=_choice(pre, "resize", RESIZES, where),
            contrast=_choice(pre, "contrast", CONTRASTS, where),
            polarity=_choice(pre, "polarity", POLARITIES, where),
            normalize=Normalize.from_json(pre.get("normalize", [0.0, 1.0]), where, channels),
        )

    def check_input(self, spec: TensorSpec, where: str) -> None:
        """Refuse a model input this contract cannot feed, in one line saying what it can feed."""
        if spec.dtype not in INPUT_DTYPES:
            raise ManifestError(
                f"{where}: input dtype {spec.dtype} cannot be fed; this device build feeds {', '.join(INPUT_DTYPES)}"
            )
        if spec.dtype in ("int8", "uint8") and not spec.quantized:
            raise ManifestError(f"{where}: a {spec.dtype} input needs a scale and zero point. Got: {spec.to_json()}")
        h, w = self.size
        ok = {(1, h, w, self.channels)} | ({(1, h, w)} if self.channels == 1 else set())
        if tuple(spec.shape) not in ok:
            want = " or ".join(str(list(s)) for s in sorted(ok, key=len, reverse=True))
            raise ManifestError(
                f"{where}: input shape {list(spec.shape)} does not match preprocess (size {[h, w]}, {self.color}); "
                f"this contract feeds {want} (NHWC, batch 1)"
            )


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
            "schema": SCHEMA,  # the layout written is always this build's
            "model": self.model,
            "labels": list(self.labels),
            "input": {**self.input.to_json(), **self._input_range()},
            "preprocess": self.preprocess.to_json(),
            "variants": {k: v.to_json() for k, v in self.variants.items()},
        }
        if self.golden is not None:
            d["golden"] = asdict(self.golden)
        return d

    def _input_range(self) -> dict[str, Any]:
        n = self.preprocess.normalize
        return {"range": [float(n.range[0]), float(n.range[1])]} if n.range is not None else {}

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
    schema = data.get("schema", 1)
    if isinstance(schema, bool) or schema not in READABLE_SCHEMAS:
        newer = isinstance(schema, int) and schema > SCHEMA
        raise ManifestError(
            f"{where}: schema is {schema!r}; this device build reads schemas {', '.join(map(str, READABLE_SCHEMAS))}. "
            + ("Update the device package to the host's version" if newer else "Re-run the host pipeline")
        )
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ManifestError(f"{where}: 'labels' must be a non-empty list of strings. Got: {labels!r}")
    if "input" not in data or "variants" not in data:
        raise ManifestError(f"{where}: needs 'input' and 'variants'")
    top_input = TensorSpec.from_json(data["input"], f"{where}: input")
    preprocess = Preprocess.from_json(data.get("preprocess"), where)
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
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ManifestError(f"{vw}: needs path, sha256 and bytes. Got: {v!r}") from e
        if Path(variants[name].path).is_absolute() or ".." in Path(variants[name].path).parts:
            raise ManifestError(f"{vw}.path must be relative to the manifest's folder. Got: {variants[name].path!r}")
        preprocess.check_input(variants[name].input, vw)
        out_n = 1
        for d in variants[name].output.shape:
            out_n *= int(d)
        if out_n != len(labels):
            raise ManifestError(
                f"{vw}: the output has {out_n} values but there are {len(labels)} labels; "
                "labels and model come from different runs"
            )
    golden = None
    if data.get("golden"):
        g = data["golden"]
        try:
            golden = Golden(path=str(g["path"]), sha256=str(g["sha256"]), count=int(g["count"]))
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ManifestError(f"{where}: bad 'golden'. Got: {g!r}") from e
        if Path(golden.path).is_absolute() or ".." in Path(golden.path).parts:
            raise ManifestError(f"{where}: golden.path must be relative to the manifest's folder. Got: {golden.path!r}")
    model = data.get("model", {})
    if not isinstance(model, dict):
        raise ManifestError(f"{where}: 'model' must be an object. Got: {model!r}")
    return Manifest(
        labels=tuple(labels),
        input=top_input,
        preprocess=preprocess,
        variants=variants,
        root=root,
        model=dict(model),
        golden=golden,
        schema=int(schema),
    )


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest; ``path`` may be the file or its folder."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.exists():
        raise ManifestError(f"no manifest at {p}: run `python -m host run --out DIR` first, then pass DIR/{MANIFEST_NAME}")
    try:
        if p.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{p} is {p.stat().st_size} bytes; a manifest is a few kB. Re-create it with `python -m host run`")
        data = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8; RecursionError: nested too deep
        raise ManifestError(f"cannot read {p}: {type(e).__name__}: {str(e)[:200]}. Re-create it with `python -m host run`") from e
    return parse_manifest(data, p.parent.resolve())
