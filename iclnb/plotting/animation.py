"""A GIF copy of a plotly animation: each frame rendered to PNG (one browser session, ``export_pngs``), then joined
with Pillow. Without a browser the GIF is skipped with one printed line; the HTML animation is unaffected."""

from __future__ import annotations

import tempfile
from pathlib import Path

import plotly.graph_objects as go

__all__ = ["frame_figures", "save_gif"]


def frame_figures(fig: go.Figure) -> list[tuple[str, go.Figure]]:
    """One static figure per animation frame: the frame's traces in the animation's layout, without the slider and
    buttons, the frame's name added to the title."""
    out = []
    title = fig.layout.title.text or ""
    for frame in fig.frames:
        static = go.Figure(data=frame.data, layout=fig.layout)
        static.update_layout(sliders=[], updatemenus=[], title=f"{title}<br><sup>frame {frame.name}</sup>")
        out.append((str(frame.name), static))
    return out


def save_gif(fig: go.Figure, path, duration_ms: int = 800, scale: float = 1.0) -> Path | None:
    """Write ``path`` (a .gif) from ``fig``'s frames, each shown ``duration_ms`` (the last one three times as long),
    looping. Returns the path, or None (with one printed line saying why) when the frames cannot be rendered."""
    from PIL import Image

    from iclnb.plotting.save import export_pngs, find_browser

    path = Path(path)
    frames = frame_figures(fig)
    if not frames:
        print(f"GIF {path.name} skipped: the figure has no animation frames")
        return None
    if find_browser() is None:
        print(f"GIF {path.name} skipped: rendering frames needs Chrome or Chromium (kaleido); the HTML animation "
              f"is written")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(f, Path(tmp) / f"frame_{i:03d}.png") for i, (_, f) in enumerate(frames)]
        written = export_pngs(jobs, scale=scale)
        if len(written) != len(jobs):
            print(f"GIF {path.name} skipped: {len(jobs) - len(written)} of {len(jobs)} frames could not be rendered; "
                  f"the HTML animation is written")
            return None
        images = [Image.open(p).convert("RGB") for p in written]
        palette = [im.quantize(colors=255, method=Image.Quantize.MEDIANCUT) for im in images]
        durations = [duration_ms] * (len(images) - 1) + [3 * duration_ms]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_gif = path.with_name(f".{path.stem}.tmp.gif")
        palette[0].save(tmp_gif, save_all=True, append_images=palette[1:], duration=durations, loop=0,
                        optimize=True)
        tmp_gif.replace(path)
    return path
