"""Draw label maps, prediction panels, training curves, a prediction browser and detections.

First used in notebook 1; every notebook shows its results with these (notebook 3 its
instances, through ``annotate`` and ``show_detections``).
"""

import keras
import numpy as np

from helpers import metrics


# The conventional colours of street-scene classes (Cityscapes' palette, which street-scene
# figures use, and SegNet's CamVid colour for poles), under CamVid's class names: vegetation
# green, sky blue, road purple-grey, void black.
CLASS_COLOURS = {
    "sky": (70, 130, 180), "building": (70, 70, 70), "column/pole": (192, 192, 128),
    "road": (128, 64, 128), "side walk": (244, 35, 232), "vegetation": (107, 142, 35),
    "traffic light": (250, 170, 30), "fence": (190, 153, 153), "vehicle": (0, 0, 142),
    "pedestrian": (220, 20, 60), "bicyclist": (119, 11, 32), "void": (0, 0, 0),
}


def _n_classes(classes):
    """Return how many classes ``classes`` names: a count, or a sequence of class names."""
    return int(classes) if isinstance(classes, (int, np.integer)) else len(classes)


def palette(classes):
    """Return one RGB colour per class as a uint8 array of shape (n, 3).

    ``classes`` is a number of classes or their names. Names that all have a conventional
    colour (``CLASS_COLOURS``: CamVid's) get it; otherwise the n colours are distinct ones.
    """
    from matplotlib import colormaps

    if not isinstance(classes, (int, np.integer)):
        names = list(classes)
        if names and all(name in CLASS_COLOURS for name in names):
            return np.array([CLASS_COLOURS[name] for name in names], dtype=np.uint8)
    n_classes = _n_classes(classes)
    source = colormaps["tab20"] if n_classes <= 20 else colormaps["turbo"].resampled(n_classes)
    # tab20 pairs a strong and a pale shade; take the strong ones first.
    order = list(range(0, 20, 2)) + list(range(1, 20, 2)) if n_classes <= 20 else range(n_classes)
    colours = np.array([source(i)[:3] for i in order][:n_classes]).reshape(-1, 3)
    return np.round(colours * 255).astype(np.uint8)


def colorize(label, classes):
    """Turn an integer label map (H, W) into an RGB image (H, W, 3) with ``palette(classes)``."""
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.ndim != 2:
        raise ValueError(f"Expected a label map of shape (H, W), got {label.shape}.")
    label = metrics.check_labels(label, _n_classes(classes), "label map")
    return palette(classes)[label.astype(np.intp)]


def to_uint8(image):
    """Convert an image in 0..255 (any dtype) or 0..1 (float) to uint8 RGB for display."""
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
        image = np.repeat(image.reshape(image.shape[:2])[..., None], 3, axis=-1)  # grey -> RGB
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    if image.size and image.max() <= 1.0 and image.min() >= 0.0:
        image = image * 255.0
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def overlay(image, label, classes, alpha=0.5):
    """Blend the label map, coloured by ``palette(classes)``, over an RGB image; return uint8 (H, W, 3)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 (image only) and 1 (labels only), not {alpha}.")
    image = to_uint8(image)
    colours = colorize(label, classes)
    if image.shape != colours.shape:
        raise ValueError(f"Image {image.shape} and label {colours.shape[:2]} differ in size.")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.round(blended).astype(np.uint8)


def show_legend(class_names, ax=None, fig=None):
    """Draw the class colours with their names, each after its label value ("3 pole"); a name
    that is its own value (M2NIST's digits) is shown once.

    With ``fig`` the legend goes below that figure's panels, part of the same picture (a figure
    with ``layout="constrained"`` makes room for it); with ``ax`` into those axes; otherwise it
    is a figure of its own. Return the figure or axes that holds it.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = palette(class_names) / 255.0
    handles = [Patch(facecolor=c, edgecolor="0.6", linewidth=0.5,  # a rim: black void on white
                     label=n if n == str(i) else f"{i} {n}")
               for i, (c, n) in enumerate(zip(colours, class_names))]
    options = {"handles": handles, "ncol": min(6, len(handles)), "frameon": False, "fontsize": 9}
    if fig is not None:
        constrained = type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
        fig.legend(loc="outside lower center" if constrained else "lower center", **options)
        return fig
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.6))
    ax.axis("off")
    ax.legend(loc="center", **options)
    return ax


def _label_map(labels):
    """Return a label map as (H, W), accepting (H, W, 1) as masks often come."""
    labels = np.asarray(labels)
    return labels[..., 0] if labels.ndim == 3 and labels.shape[-1] == 1 else labels


def panels_figure(image, truth, prediction, class_names, title=None, ignore_class=None,
                  legend=False):
    """Draw image | ground truth | prediction with this image's mean IoU and Dice; return (figure, scores).

    Every figure of the course takes them in that order: the image, what is true, what the
    model said. With ``prediction=None`` (looking at the data, before there is a model) it draws
    image | ground truth and returns no scores. Pixels whose truth is ``ignore_class`` (CamVid's
    void) are drawn but not scored. With ``legend`` the class colours are named below the panels.
    """
    import matplotlib.pyplot as plt

    truth = _label_map(truth)
    panels = [("image", to_uint8(image)), ("ground truth", colorize(truth, class_names))]
    if prediction is not None:
        prediction = _label_map(prediction)
        panels.append(("prediction", colorize(prediction, class_names)))
    # Sized to the pictures, in inches, so no blank band opens above or below them.
    width, gap, side = 3.6, 0.2, 0.1
    height = width * truth.shape[0] / truth.shape[1]
    top = 0.65 if title or prediction is not None else 0.35  # the figure's title, the panels'
    footer = 0.3 if prediction is not None else 0.05
    rows = -(-len(class_names) // 6) if legend else 0
    bottom = footer + 0.22 * rows + (0.08 if legend else 0)
    fig_width = len(panels) * width + (len(panels) - 1) * gap + 2 * side
    fig_height = top + height + bottom
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_width, fig_height))
    fig.subplots_adjust(left=side / fig_width, right=1 - side / fig_width, wspace=gap / width,
                        top=1 - top / fig_height, bottom=bottom / fig_height)
    for ax, (name, picture) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(name)
        ax.axis("off")
    if legend:
        show_legend(class_names, fig=fig)
    if prediction is None:
        if title:
            fig.suptitle(title, y=1 - 0.05 / fig_height, va="top")
        return fig, None
    scores = metrics.segmentation_scores(truth, prediction, len(class_names), ignore_class)
    heading = f"mean IoU {scores.mean_iou:.3f}, mean Dice {scores.mean_dice:.3f}"
    fig.suptitle(f"{title}: {heading}" if title else heading, y=1 - 0.05 / fig_height, va="top")
    # "name: IoU", so that a class named by a number (M2NIST's "2") reads apart from its score.
    worst = [f"{class_names[c]}: {scores.iou[c]:.2f}" for c in np.argsort(scores.iou)
             if np.isfinite(scores.iou[c])][:3]
    fig.text(0.5, (bottom - footer / 2) / fig_height, "lowest IoU: " + ", ".join(worst),
             ha="center", va="center", fontsize=9)
    return fig, scores


def show_panels(image, truth, prediction, class_names, title=None, ignore_class=None,
                legend=False):
    """Show image | ground truth | prediction, titled with this image's mean IoU and Dice (see ``panels_figure``)."""
    import matplotlib.pyplot as plt

    _, scores = panels_figure(image, truth, prediction, class_names, title, ignore_class, legend)
    plt.show()
    return scores


def figure_png(fig):
    """Render a matplotlib figure to PNG bytes and close it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def instance_colours(n):
    """Return n distinct RGB uint8 colours, one per detected instance.

    Matplotlib's tab10 without its grey (instances are drawn over a greyed image), then
    tab20's paler shades, repeated when there are more instances than colours.
    """
    from matplotlib import colormaps

    strong = [colormaps["tab10"](i)[:3] for i in range(10) if i != 7]
    pale = [colormaps["tab20"](i)[:3] for i in range(1, 20, 2) if i != 15]
    colours = np.array((strong + pale) * (n // 18 + 1))[:n].reshape(-1, 3)
    return np.round(colours * 255).astype(np.uint8)


def _greyed(image):
    """The image's brightness as a light grey RGB image, so colours drawn over it stand out."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat((96 + 0.6 * grey)[..., None], 3, axis=-1)


def annotate(image, detections, alpha=0.5, thickness=None, grey=False, boxes=True):
    """Return a uint8 copy of the image with coloured, semi-transparent masks and box outlines.

    ``detections`` is a ``detection.Detections``: full-image masks, boxes, names and scores.
    With ``grey=True`` the image is greyed first, so that a mask's colour is never mixed
    with an object's own; ``boxes=False`` leaves the box outlines out.
    """
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    image = to_uint8(image)
    if image.shape[:2] != detections.masks.shape[1:]:
        raise ValueError(f"The image {image.shape[:2]} and the masks {detections.masks.shape[1:]} "
                         "differ in size.")
    height, width = image.shape[:2]
    thickness = thickness or max(1, round(min(height, width) / 250))
    out = _greyed(image) if grey else image.astype(np.float32)
    colours = instance_colours(len(detections)).astype(np.float32)
    for mask, colour in zip(detections.masks, colours):
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    for (top, left, bottom, right), colour in zip(detections.pixel_boxes() if boxes else [], colours):
        top, bottom = np.clip([top, bottom], 0, height - 1)
        left, right = np.clip([left, right], 0, width - 1)
        t = thickness
        out[top:min(top + t, bottom + 1), left:right + 1] = colour
        out[max(bottom - t + 1, top):bottom + 1, left:right + 1] = colour
        out[top:bottom + 1, left:min(left + t, right + 1)] = colour
        out[top:bottom + 1, max(right - t + 1, left):right + 1] = colour
    return np.round(out).astype(np.uint8)


def show_detections(image, detections, label_map=None, ax=None, title=None, alpha=0.4):
    """Draw each detection over the greyed image; return the axes.

    Each instance gets its own colour: its mask filled (``alpha``) and outlined, its box
    dashed, and a label with its class name and score. The image is shown in grey so that
    a mask's extent reads the same over any object's colour.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 7))
    ax.imshow(annotate(image, detections, alpha, grey=True, boxes=False))
    colours = instance_colours(len(detections)) / 255.0
    width = max(1.0, min(detections.masks.shape[1:]) / 200)  # thicker lines on bigger images
    for name, score, mask, (top, left, bottom, right), colour in zip(
            detections.names(label_map), detections.scores, detections.masks,
            detections.pixel_boxes(), colours):
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.8 * width)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                               edgecolor=colour, linewidth=width, linestyle=(0, (4, 2))))
        ax.text(left - 0.5, top - 0.5, f"{name} {score:.0%}", fontsize=9, color="white", va="bottom",
                bbox={"facecolor": colour, "alpha": 0.85, "pad": 1, "edgecolor": "none"})
    ax.set_title(title or f"{len(detections)} detection(s)")
    ax.axis("off")
    return ax


# What Keras logs a metric as -> the title of its curves.
HISTORY_TITLES = {"loss": "loss", "accuracy": "pixel accuracy", "mean_iou": "mean IoU"}


def plot_history(history, metric_names=("loss", "accuracy")):
    """Plot training and validation curves from a Keras History (or its ``.history`` dict)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    logs = getattr(history, "history", history)
    names = [n for n in metric_names if n in logs]
    if not names:
        raise ValueError(f"None of {list(metric_names)} was logged; the history has {list(logs)}.")
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False,
                             layout="constrained")
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(logs[name]) + 1)
        ax.plot(epochs, logs[name], "o-", label="training")
        if f"val_{name}" in logs:
            ax.plot(epochs, logs[f"val_{name}"], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_title(HISTORY_TITLES.get(name, name.replace("_", " ")))  # words, not code names
        ax.legend()
    plt.show()


def prediction_browser(images, truths, predictions, class_names, ignore_class=None, legend=False):
    """Return a slider widget that shows the panels of the chosen image (see ``panels_figure``)."""
    import ipywidgets as widgets

    if not len(images) == len(predictions) == len(truths) > 0:
        raise ValueError(f"Need as many predictions and truths as images, at least one; got "
                         f"{len(images)} images, {len(predictions)} predictions, "
                         f"{len(truths)} truths.")
    slider = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image",
                               continuous_update=False)
    # The panels go into an Image widget rather than through plt.show() inside an
    # interactive Output: headless runs (papermill, nbclient) hang on that with large figures.
    picture = widgets.Image(format="png")

    def update(_=None):
        index = slider.value
        fig, _ = panels_figure(images[index], truths[index], predictions[index], class_names,
                               title=f"test image {index}", ignore_class=ignore_class,
                               legend=legend)
        picture.value = figure_png(fig)

    slider.observe(update, "value")
    update()
    return widgets.VBox([slider, picture])


def _class_legend(fig, class_names):
    """Put the class colours with their names in one row below a figure's panels."""
    from matplotlib.patches import Patch

    colours = palette(len(class_names)) / 255.0
    handles = [Patch(color=c, label=n) for c, n in zip(colours, class_names)]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(6, len(handles)), frameon=False)


def prediction_grid(images, truths, predictions, class_names, row_titles=None):
    """Draw one row per image: image | ground truth | each model's prediction, with a legend.

    ``predictions`` maps a model's name to its label maps, one per image. Each prediction is
    titled with that image's mean IoU. A static figure, so it shows wherever the notebook is
    read (GitHub, nbviewer, a PDF), unlike ``prediction_browser``'s slider. Used in notebook 2
    (its test predictions, then cross-entropy against the Dice loss). Return the figure.
    """
    import matplotlib.pyplot as plt

    n_classes = len(class_names)
    if not len(images) == len(truths) > 0 or any(len(p) != len(images) for p in predictions.values()):
        raise ValueError(f"Need at least one image, and a truth and a prediction of every model for "
                         f"each: got {len(images)} images, {len(truths)} truths, "
                         f"{ {name: len(p) for name, p in predictions.items()} } predictions.")
    columns = 2 + len(predictions)
    fig, axes = plt.subplots(len(images), columns, figsize=(2.6 * columns, 2.7 * len(images)),
                             squeeze=False)
    for row, (image, truth) in enumerate(zip(images, truths)):
        truth = _label_map(truth)
        panels = [("image", to_uint8(image)), ("ground truth", colorize(truth, n_classes))]
        for name, labels in predictions.items():
            score = metrics.segmentation_scores(truth, _label_map(labels[row]), n_classes).mean_iou
            panels.append((f"{name}\nmean IoU {score:.2f}", colorize(labels[row], n_classes)))
        for ax, (title, picture) in zip(axes[row], panels):
            ax.imshow(picture)
            ax.set_title(title, fontsize=10)
            ax.axis("off")
        if row_titles is not None:
            axes[row, 0].text(-0.08, 0.5, row_titles[row], transform=axes[row, 0].transAxes,
                              rotation=90, ha="right", va="center", fontsize=10)
    fig.tight_layout()
    _class_legend(fig, class_names)
    return fig


def epoch_predictions(image, truth, class_names, folder=None, show=True):
    """Return a Keras callback that draws the model's prediction of one image after every epoch.

    Taught in notebook 2 ("watch it learn"), as the TensorFlow segmentation tutorial does: the
    same validation image each epoch, drawn as image | prediction | ground truth (its mean IoU
    in the title, the classes in a legend), so a static render of the notebook keeps every
    epoch's picture. With ``folder`` each epoch's figure is also written to
    ``folder/epoch_NN.png``. The callback keeps each epoch's label map in ``.predictions``, its
    ``metrics.Scores`` in ``.scores`` and the files written in ``.paths``.
    """
    from pathlib import Path

    import matplotlib.pyplot as plt

    image, truth = np.asarray(image), _label_map(truth)
    if image.ndim != 3 or image.shape[:2] != truth.shape:
        raise ValueError(f"Need one image (H, W, channels) and its label map (H, W); got image "
                         f"{image.shape} and label map {truth.shape}.")
    metrics.check_labels(truth, len(class_names), "label map")
    folder = None if folder is None else Path(folder)

    class EpochPredictions(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.predictions, self.scores, self.paths = [], [], []

        def on_epoch_end(self, epoch, logs=None):
            prediction = metrics.predict_labels(self.model, image[None])[0]
            fig, scores = panels_figure(image, truth, prediction, class_names,
                                        title=f"after epoch {epoch + 1}")
            _class_legend(fig, class_names)
            self.predictions.append(prediction)
            self.scores.append(scores)
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                self.paths.append(folder / f"epoch_{epoch + 1:02d}.png")
                fig.savefig(self.paths[-1], bbox_inches="tight")
            if show:
                plt.show()
            plt.close(fig)

    return EpochPredictions()
def crops_figure(image, truth, predictions, class_names, box, title=None):
    """Draw a frame with a box on it, then that crop of the truth and of each prediction; return the figure.

    ``predictions`` maps a model's name to its label map of the whole frame; ``box`` is
    (top, left, height, width). Crops are drawn pixel for pixel (no smoothing), so the blocks
    a coarse upsampling leaves stay visible; the legend names the colours. First used in
    notebook 1, to compare FCN-32s, FCN-16s and FCN-8s on one boundary.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    top, left, height, width = (int(v) for v in box)
    truth = _label_map(truth)
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > truth.shape[0] \
            or left + width > truth.shape[1]:
        raise ValueError(f"The box {tuple(box)} (top, left, height, width) does not fit in the "
                         f"{truth.shape[0]}x{truth.shape[1]} frame.")
    crop = (slice(top, top + height), slice(left, left + width))
    panels = [("ground truth", truth)] + [(name, _label_map(p)) for name, p in predictions.items()]
    fig = plt.figure(figsize=(3.2 * (len(panels) + 1), 3.2))
    grid = fig.add_gridspec(2, len(panels) + 1, height_ratios=[4, 1], hspace=0.05, wspace=0.05)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(to_uint8(image))
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor="white",
                           linewidth=2))
    ax.set_title("frame (box: the crop)")
    ax.axis("off")
    for column, (name, labels) in enumerate(panels, start=1):
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(colorize(labels, class_names)[crop], interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    show_legend(class_names, ax=fig.add_subplot(grid[1, :]))
    if title:
        fig.suptitle(title, y=1.04)  # above the panels' own titles
    return fig


def show_crops(image, truth, predictions, class_names, box, title=None):
    """Show a frame, its box, and that crop of the truth and of each prediction (see ``crops_figure``)."""
    import matplotlib.pyplot as plt

    crops_figure(image, truth, predictions, class_names, box, title)
    plt.show()
