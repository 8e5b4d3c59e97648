"""The curves figure a run holds (curves.png): loss and accuracy per epoch, training then
continuing, on one axis."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any


def import_plotting() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def warm_finish() -> None:
    """Import what `finish` draws with (matplotlib, about a second) in a background thread,
    while the job's process runs: the run then closes that much sooner after the job."""
    threading.Thread(target=import_plotting, name="runner-warm-finish", daemon=True).start()


def curves_figure(history: Mapping[str, Mapping[str, list[float]]]) -> Any:
    """Loss and accuracy per epoch, training then continued, on one epoch axis."""
    import_plotting()
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    offset = 0
    for phase, curves in history.items():
        n = max((len(v) for v in curves.values()), default=0)
        epochs = list(range(offset + 1, offset + n + 1))
        for ax, name in zip(axes, ("loss", "accuracy"), strict=True):
            if curves.get(name):
                ax.plot(epochs, curves[name], marker="o", label=phase)
        offset += n
    for ax, name in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    # Fixed margins, room for 6-character tick labels: tight_layout drew the figure once more,
    # 0.15-0.35 s after every tracked job (measured).
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    plt.close(fig)
    return fig
