"""Offline synthetic data: find the one shape in the clutter.

Each image shows one class-defining object -- a disc, ring, square, frame, diamond, triangle,
plus or cross -- at a random place, size, small rotation and colour, over clutter that carries
no class information: a textured background, thin random lines and small blobs (distractors).
The class can only be read from the object's shape, never from colour, position or clutter, so
a model that classifies well must look at the object, and ``masks`` (the object's filled
silhouette) lets us measure whether its attention does.

The object covers 6-15% of the image and is placed so that no fixed pixel is often on it (at
most ~23% of images): a uniform, random or centre-biased attention map scores low in the
pointing game, so the game is informative. Generation is vectorised over images in chunks of
:data:`CHUNK` images, each from its own seed, so a smaller set is a prefix of a larger one with
the same seed (``make_synthetic(100)`` == the first 100 of ``make_synthetic(10000)``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._seed import mix_seed
from .base import ArrayDataset

CLASSES = ["disc", "ring", "square", "frame", "diamond", "triangle", "plus", "cross"]
#: Object silhouette area as a fraction of the image, drawn uniformly from this range (the
#: rasterised masks land within about 0.06-0.15).
AREA_FRACTION = (0.06, 0.13)
#: Per-channel statistics of the generated images (measured on 20,000 images of seed 0).
MEAN = (0.5, 0.5, 0.5)
STD = (0.246, 0.246, 0.246)
CHUNK = 256  # images rendered together; a multiple of the class count
MAX_ROTATION = math.radians(15)  # +-15 deg keeps square/diamond and plus/cross apart (45 deg)
SUPERSAMPLE = 2  # render shapes at 2x and average: anti-aliased edges, no pixel-grid cue


# Shapes in object coordinates (u, v): the object spans about [-1, 1]^2. Each returns
# (ink, silhouette); the silhouette fills holes (ring, frame) so that attention on the centre
# of a ring counts as on the object.
def _disc(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    inside = u**2 + v**2 <= 1
    return inside, inside


def _ring(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    r2 = u**2 + v**2
    return (r2 <= 1) & (r2 >= 0.5**2), r2 <= 1


def _square(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    inside = torch.maximum(u.abs(), v.abs()) <= 0.85
    return inside, inside


def _frame(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    d = torch.maximum(u.abs(), v.abs())
    return (d <= 0.85) & (d >= 0.42), d <= 0.85


def _diamond(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    inside = u.abs() + v.abs() <= 1.15
    return inside, inside


def _triangle(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    # Equilateral, apex up (v grows downwards in image rows), circumradius 1.15.
    r = 1.15
    inside = v <= r / 2
    for angle in (math.radians(30), math.radians(150)):
        # Edges facing the upper-left / upper-right: their normals point away from the centre.
        nx, ny = math.cos(angle), -math.sin(angle)
        inside = inside & (u * nx + v * ny <= r / 2)
    return inside, inside


def _plus(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    a, b = u.abs(), v.abs()
    inside = ((a <= 0.33) & (b <= 1)) | ((b <= 0.33) & (a <= 1))
    return inside, inside


def _cross(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    s = math.sqrt(0.5)  # the plus turned by 45 degrees
    return _plus((u - v) * s, (u + v) * s)


Shape = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]
_SHAPES: list[Shape] = [_disc, _ring, _square, _frame, _diamond, _triangle, _plus, _cross]
#: Silhouette area of each shape for scale 1 (so a wanted area gives the scale), and the
#: farthest silhouette point from the centre (so the object stays inside the image).
_UNIT_AREA = [math.pi, math.pi, 1.7**2, 1.7**2, 2 * 1.15**2, 3 * math.sqrt(3) / 4 * 1.15**2,
              2 * 2 * 0.66 - 0.66**2, 2 * 2 * 0.66 - 0.66**2]
_EXTENT = [1.0, 1.0, 0.85 * math.sqrt(2), 0.85 * math.sqrt(2), 1.15, 1.15, 1.06, 1.06]


def make_synthetic(num_images: int, image_size: int = 32, seed: int = 0) -> ArrayDataset:
    """Generate ``num_images`` images of the shapes task, deterministically from ``seed``.

    Args:
        num_images: number of images; every run of 8 consecutive images holds each class once,
            so classes are balanced (exactly, for a multiple of 8).
        image_size: side of the square images in pixels (the model needs a multiple of 32).
        seed: the same seed gives the same images on any machine (for a given torch version).

    Returns:
        An :class:`ArrayDataset` named ``"synthetic"`` with ``masks`` set.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    images, labels, masks = [], [], []
    for start in range(0, num_images, CHUNK):
        generator = torch.Generator().manual_seed(mix_seed(seed, start // CHUNK))
        # Always draw a whole chunk, then cut: the random stream never depends on num_images.
        chunk_labels = _balanced_labels(CHUNK, len(CLASSES), generator)
        x, m = _render(chunk_labels, image_size, generator)
        n = min(CHUNK, num_images - start)
        images.append(x[:n])
        labels.append(chunk_labels[:n])
        masks.append(m[:n])
    return ArrayDataset(
        images=torch.cat(images), labels=torch.cat(labels), classes=list(CLASSES),
        mean=MEAN, std=STD, masks=torch.cat(masks), name="synthetic",
    )


def _balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """Labels in blocks of ``num_classes``, each block a random permutation of all classes.

    Any prefix whose length is a multiple of ``num_classes`` is exactly balanced.
    """
    blocks = -(-n // num_classes)
    keys = torch.rand((blocks, num_classes), generator=generator)
    return keys.argsort(dim=1).flatten()[:n]


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator
             ) -> Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def _render(labels: Tensor, size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw one chunk: background, lines, distractors, then the object on top."""
    n = labels.shape[0]
    scale = size / 32  # clutter sizes are designed at 32 px and scale with the image
    background = _uniform((n, 3, 1, 1), 0.15, 0.85, g)
    x = background + _texture(n, size, g)
    x = _draw_lines(x, size, scale, g)
    x = _draw_blobs(x, size, scale, g)
    alpha, silhouette = _object_coverage(labels, size, g)
    colour = _object_colour(background, g)
    x = x * (1 - alpha) + colour * alpha
    x = x + 0.03 * torch.randn(x.shape, generator=g)  # sensor noise over everything
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, silhouette


def _texture(n: int, size: int, g: torch.Generator) -> Tensor:
    """Smooth colour variation (a 4x4 random field, upsampled) plus finer grain."""
    coarse = 0.15 * torch.randn((n, 3, 4, 4), generator=g)
    fine = 0.06 * torch.randn((n, 3, size // 4, size // 4), generator=g)
    # Separable upsampling as two small matrix products: much faster than F.interpolate here.
    up_coarse, up_fine = _upsampler(4, size, "bicubic"), _upsampler(size // 4, size, "bilinear")
    return up_coarse @ coarse @ up_coarse.T + up_fine @ fine @ up_fine.T


def _upsampler(k: int, size: int, mode: str) -> Tensor:
    """The (size, k) matrix that F.interpolate applies along one axis."""
    basis = torch.eye(k).view(k, 1, k, 1)
    columns = F.interpolate(basis, size=(size, 1), mode=mode, align_corners=False)
    return columns.view(k, size).T.contiguous()


def _pixel_grid(size: int, factor: int = 1) -> tuple[Tensor, Tensor]:
    """Row and column coordinates of (sub)pixel centres, in pixel units, shape (1, S, S)."""
    c = (torch.arange(size * factor, dtype=torch.float32) + 0.5) / factor
    return c.view(1, -1, 1), c.view(1, 1, -1)


def _draw_lines(x: Tensor, size: int, scale: float, g: torch.Generator, count: int = 4
                ) -> Tensor:
    """Thin straight segments (1 px at 32 px) in random colours, 1-4 per image."""
    n = x.shape[0]
    rows, cols = _pixel_grid(size)
    p = _uniform((n, count, 2), 0, size, g)
    q = _uniform((n, count, 2), 0, size, g)
    d = q - p
    # Distance from each pixel centre to each segment, vectorised over (image, line).
    py, px = p[..., 0, None, None], p[..., 1, None, None]
    dy, dx = d[..., 0, None, None], d[..., 1, None, None]
    t = (((rows - py) * dy + (cols - px) * dx) / (dy**2 + dx**2 + 1e-6)).clamp(0, 1)
    dist = torch.sqrt((rows - py - t * dy) ** 2 + (cols - px - t * dx) ** 2)
    active = torch.arange(count).view(1, -1) < torch.randint(1, count + 1, (n, 1), generator=g)
    alpha = (0.5 * scale + 0.5 - dist).clamp(0, 1) * active[..., None, None] * 0.8
    colours = torch.rand((n, count, 3, 1, 1), generator=g)
    for k in range(count):  # composite one line over the next (count is tiny)
        a = alpha[:, k, None]
        x = x * (1 - a) + colours[:, k] * a
    return x


def _draw_blobs(x: Tensor, size: int, scale: float, g: torch.Generator, count: int = 5
                ) -> Tensor:
    """Small soft dots (radius 1-2 px at 32 px) in random colours, 2-5 per image.

    They are far smaller than any object and have no class-specific shape, so they add things
    to look at without making the label ambiguous.
    """
    n = x.shape[0]
    rows, cols = _pixel_grid(size)
    centre = _uniform((n, count, 2), 0, size, g)
    radius = _uniform((n, count, 1, 1), 1.0, 2.0, g) * scale
    dist = torch.sqrt((rows - centre[..., 0, None, None]) ** 2
                      + (cols - centre[..., 1, None, None]) ** 2)
    active = torch.arange(count).view(1, -1) < torch.randint(2, count + 1, (n, 1), generator=g)
    alpha = (radius + 0.5 - dist).clamp(0, 1) * active[..., None, None]
    colours = torch.rand((n, count, 3, 1, 1), generator=g)
    for k in range(count):
        a = alpha[:, k, None]
        x = x * (1 - a) + colours[:, k] * a
    return x


def _object_colour(background: Tensor, g: torch.Generator) -> Tensor:
    """A random colour, pushed away from the background so the object is always visible."""
    colour = torch.rand(background.shape, generator=g)
    too_close = (colour - background).abs().amax(dim=1, keepdim=True) < 0.35
    # Shift every channel by half the range: at least 0.35 from the background in one channel.
    return torch.where(too_close, (background + 0.5) % 1.0, colour)


def _towards_edges(u: Tensor) -> Tensor:
    """Map uniform ``u`` in [0, 1] to positions in [0, 1] that favour both ends.

    Objects are large next to a 32 px image; placed uniformly, the image centre would be on the
    object in 41% of images, a free pointing-game score for a centre-biased map. This cubic
    push towards the borders flattens the coverage: no pixel is on the object in more than
    about 23% of images (the centre in 12%).
    """
    d = 2 * u - 1
    return 0.5 + 0.5 * d.sign() * (1 - (1 - d.abs()) ** 3)


def _object_coverage(labels: Tensor, size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Anti-aliased ink coverage (N, 1, S, S) in [0, 1] and silhouette masks (N, S, S) bool."""
    n = labels.shape[0]
    area = _uniform((n,), *AREA_FRACTION, g) * size * size
    unit_area = torch.tensor(_UNIT_AREA)[labels]
    radius = torch.sqrt(area / unit_area)  # pixels per object unit
    reach = radius * torch.tensor(_EXTENT)[labels] + 1  # keep the whole object inside
    cy = reach + _towards_edges(torch.rand(n, generator=g)) * (size - 2 * reach)
    cx = reach + _towards_edges(torch.rand(n, generator=g)) * (size - 2 * reach)
    angle = _uniform((n,), -MAX_ROTATION, MAX_ROTATION, g)
    rows, cols = _pixel_grid(size, SUPERSAMPLE)
    dy = (rows - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    dx = (cols - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # rotate the grid, not the shape
    ink = torch.zeros(u.shape)
    fill = torch.zeros(u.shape)
    for k, shape in enumerate(_SHAPES):  # one vectorised call per class
        chosen = labels == k
        if chosen.any():
            i, s = shape(u[chosen], v[chosen])
            ink[chosen], fill[chosen] = i.float(), s.float()
    alpha = F.avg_pool2d(ink.unsqueeze(1), SUPERSAMPLE)
    silhouette = F.avg_pool2d(fill.unsqueeze(1), SUPERSAMPLE).squeeze(1) >= 0.5
    return alpha, silhouette
