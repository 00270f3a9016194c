"""Figures: user text (run, task and model names) drawn as plain text, and saved atomically.

matplotlib reads a string with two ``$`` as mathtext: a name such as ``a $\\frac{$ b`` then
fails to draw (after a whole training run) and ``$x^2$`` shows as x². Every place a figure
shows a name goes through these helpers, which turn mathtext off for that text only.
"""

from __future__ import annotations


def plain_legend(ax, **kwargs):
    """``ax.legend(**kwargs)`` with every label drawn literally."""
    legend = ax.legend(**kwargs)
    for text in legend.get_texts():
        text.set_parse_math(False)
    return legend


def plain_suptitle(fig, title: str, **kwargs):
    """``fig.suptitle(title)`` drawn literally."""
    return fig.suptitle(title, parse_math=False, **kwargs)


def save_figure(fig, path, **savefig_options):
    """Save ``fig`` as a temporary file renamed over ``path`` (format from the suffix): a full disk keeps
    the previous image."""
    import io
    from pathlib import Path

    from nbtools import atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    savefig_options.setdefault("format", path.suffix.lstrip(".") or "png")
    fig.savefig(buffer, **savefig_options)
    return atomic.write_bytes(path, buffer.getvalue())
