"""Inside the network: one image through every layer, the filters, one convolution worked out by hand, why the
network chose its class (saliency and occlusion), and, for a run that kept one checkpoint per epoch, how it grew."""

from pathlib import Path

import pandas as pd
import streamlit as st
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from lenet import explain
from lenet.checkpoint import CheckpointError
from lenet.data import CLASSES
from lenet.predict import ImageError, model_input
from lenet.runs import epoch_checkpoints
from pages import _charts, _code
from pages._code import pytorch_code, snippet
from pages._format import number, percent
from pages._glossary import words_on_this_page
from pages._i18n import N_, _, bound, class_name, engine_text, translate
from pages._images import font_for, labelled_grid, to_pil, upscale
from pages._resources import (
    ANY,
    LoadedModel,
    choose_model,
    dataset_service,
    decoded_photo,
    loaded_model,
    new_seed,
    random_batch,
    require_data,
)
from pages._router import through_router

through_router()

SOURCES = [N_("A test image"), N_("Upload a photo")]
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif"]
# Colour scales: activations are never negative (after ReLU), so dark to bright; signed values (normalized pixels,
# the occlusion's drop) run from blue through white (zero) to red.
MAGMA = ["#000004", "#3b0f70", "#8c2981", "#de4968", "#fe9f6d", "#fcfdbf"]
BLUE_WHITE_RED = ["#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b"]
ATTRIBUTION_WIDTH = 224  # the image, saliency and occlusion pictures, and their legends, each this wide
GREYS = ["#000000", "#ffffff"]
# Each stage's maps are shown at a whole multiple of their size (nearest neighbour: every value a sharp square).
TILES = {"conv1": 112, "pool1": 112, "conv2": 100, "pool2": 100}

CODE = _code.IMPORTS + "from captum.attr import Occlusion, Saliency\n\n" + _code.SEED + "\n" + _code.DATA + "\n" + _code.NET + \
    _code.LOAD_TRAINED + snippet("""
image, label = testset[0]  # $image
x = image.unsqueeze(0)  # $batch
with torch.no_grad():  # $forward
    conv1 = F.relu(net.conv1(x))  # $conv1
    pool1 = net.pool(conv1)  # 1x6x14x14
    conv2 = F.relu(net.conv2(pool1))  # 1x16x10x10
    pool2 = net.pool(conv2)  # 1x16x5x5
    fc1 = F.relu(net.fc1(torch.flatten(pool2, 1)))  # 1x120
    fc2 = F.relu(net.fc2(fc1))  # 1x84
    logits = net.fc3(fc2)  # 1x10
probabilities = logits.softmax(1)

# $by_hand
patch = x[0, :, 10:15, 12:17]
by_hand = ((patch * net.conv1.weight[0]).sum() + net.conv1.bias[0]).clamp(min=0)  # $steps
print(by_hand.item(), conv1[0, 0, 10, 12].item())  # $same

# $why
target = logits.argmax(1).item()
saliency = Saliency(net).attribute(x.clone().requires_grad_(), target=target).amax(1)[0]  # 32x32
occlusion = Occlusion(lambda batch: net(batch).softmax(1)).attribute(
    x, sliding_window_shapes=(3, 8, 8), strides=(3, 2, 2), baselines=0.0, target=target)[0, 0]  # $grey
""", image=N_("one normalized test image, 3x32x32"), batch=N_("a batch of one"), forward=N_("forward, one stage at a time"),
    conv1=N_("1x6x28x28: six feature maps"),
    by_hand=N_("One value of conv1 by hand: filter 0 at row 10, column 12 reads the 3x5x5 patch below it."),
    steps=N_("multiply, add, bias, ReLU"), same=N_("the same number"),
    why=N_("Why? The gradient of the class's logit, and the drop in its probability under a sliding grey square."),
    grey=N_("0.0 is grey here"))


def draw(where, image: Image.Image, **options) -> None:
    """st.image as PNG: Streamlit would send these as JPEG, which smears sharp pixels and colour scales."""
    where.image(image, output_format="PNG", **options)


# -- colours ---------------------------------------------------------------------------------------------------------


def paint(values: torch.Tensor, low: float, high: float, colors: list[str]) -> torch.Tensor:
    """Values (any shape ... x H x W) as uint8 RGB images (... x 3 x H x W): low is the first colour, high the last."""
    palette = torch.tensor([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=torch.float32)
    position = ((values.float() - low) / max(high - low, 1e-12)).clamp(0, 1) * (len(colors) - 1)
    below = position.floor().long().clamp(max=len(colors) - 2)
    fraction = (position - below).unsqueeze(-1)
    rgb = palette[below] * (1 - fraction) + palette[below + 1] * fraction
    return rgb.round().to(torch.uint8).movedim(-1, -3)


def legend(low: float, high: float, colors: list[str], note: str, width: int = 380) -> Image.Image:
    """A colour bar from low to high with its two ends and its middle written under it, width pixels wide in all, on the
    page's own background (transparent, the text in the theme's colours: a white legend was a white block in the dark
    theme)."""
    margin = 30  # each side of the bar: room for the numbers written under its ends
    width -= 2 * margin  # the bar's
    bar = to_pil(paint(torch.linspace(low, high, width).repeat(14, 1), low, high, colors))
    canvas = Image.new("RGBA", (width + 2 * margin, 52), (0, 0, 0, 0))
    canvas.paste(bar, (margin, 2))
    text, muted = ("#fafafa", "#bbbbbb") if _charts.current_theme() == "dark" else ("black", "#555555")
    pen, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=12)
    for x, value in ((margin, low), (margin + width // 2, (low + high) / 2), (margin + width, high)):
        pen.text((x, 20), f"{value:.3g}", fill=text, font=font, anchor="ma")
    pen.text((margin + width // 2, 36), note, fill=muted, font=font_for(note, 12), anchor="ma")
    return canvas


def stage_images(maps: torch.Tensor, each_on_its_own: bool) -> tuple[torch.Tensor, float]:
    """A stage's maps (N x H x W, never negative) painted with one shared scale from 0, or each stretched; and the
    shared scale's top."""
    top = max(maps.max().item(), 1e-6)
    if not each_on_its_own:
        return paint(maps, 0.0, top, MAGMA), top
    return torch.stack([paint(m, m.min().item(), m.max().item(), MAGMA) for m in maps]), top


def each_stretched(values: torch.Tensor) -> torch.Tensor:
    """Float images N x C x H x W, each stretched to 0..255 over its own range (filters: only their pattern matters)."""
    low = values.amin(dim=(1, 2, 3), keepdim=True)
    high = values.amax(dim=(1, 2, 3), keepdim=True)
    return ((values - low) / (high - low).clamp(min=1e-8) * 255).round().to(torch.uint8)


def overlay(image: torch.Tensor, heat: torch.Tensor, side: int = 224) -> Image.Image:
    """A painted 32 x 32 map over a grey copy of the image, so it shows where on the picture the evidence is."""
    grey = image.float().mean(0, keepdim=True).expand(3, -1, -1)
    return upscale(to_pil((0.35 * grey + 0.65 * heat.float()).round().to(torch.uint8)), side)


def outlined(picture: Image.Image, row: int, col: int, size: int, scale: int) -> Image.Image:
    """A copy of picture (already scaled up by scale) with a size x size square drawn at (row, col)."""
    picture = picture.copy()
    box = (col * scale, row * scale, (col + size) * scale - 1, (row + size) * scale - 1)
    ImageDraw.Draw(picture).rectangle(box, outline="#00e5ff", width=max(2, scale // 3))
    return picture


def numbers(grid: torch.Tensor) -> pd.DataFrame:
    return pd.DataFrame(grid.numpy()).round(3)


# -- the page --------------------------------------------------------------------------------------------------------


def choose_checkpoint() -> tuple[LoadedModel | None, dict[int, Path]]:
    """The model picker, and for a run that kept one checkpoint per epoch, an epoch slider (the last by default).

    Returns the model to look inside and the run's per-epoch checkpoints (none for the pretrained model)."""
    loaded = choose_model(key="inside-model")
    if loaded is None:
        return None, {}
    epochs = epoch_checkpoints(loaded.path.parent)  # a run's checkpoint.pt sits beside its epochs/ folder
    if len(epochs) < 2:
        return loaded, epochs
    epoch = st.select_slider(_("Epoch"), list(epochs), value=max(epochs), key=f"inside-epoch-{loaded.path}",
                             help=_("This run kept its weights after every epoch: go back in time and watch the network learn"))
    try:
        return loaded_model(epochs[epoch]), epochs
    except CheckpointError as error:
        st.error(engine_text(str(error)), icon=":material/error:")
        return None, epochs


def choose_image() -> tuple[torch.Tensor, str] | None:
    """The uint8 3 x 32 x 32 image to look at and what to call it; None, after saying why, when there is none yet."""
    source = st.segmented_control(_("Picture"), SOURCES, default=SOURCES[0], required=True, format_func=bound(translate),
                                  key="inside-source")
    if source == SOURCES[1]:
        upload = st.file_uploader(_("A photo (JPEG, PNG, WebP, BMP or GIF)"), type=UPLOAD_TYPES, key="inside-upload")
        if upload is None:
            return None
        try:
            return explain.pixels(model_input(decoded_photo(upload))), _("your photo")
        except ImageError as error:
            st.error(engine_text(str(error)), icon=":material/broken_image:")
            return None
    data = require_data()
    if data is None:
        return None
    with st.container(horizontal=True, vertical_alignment="bottom"):
        chosen = st.selectbox(_("Class"), [ANY, *CLASSES], format_func=bound(class_name), key="inside-class", width=220)
        another = st.button(_("Another test image"), icon=":material/shuffle:", type="primary", key="inside-another")
    if another or st.session_state.get("inside-pick", (None, 0))[0] != chosen:
        st.session_state["inside-pick"] = (chosen, new_seed())
    picked = random_batch(data.test, chosen, 1, st.session_state["inside-pick"][1])
    return picked.images[0], _("test image: {name}").format(name=class_name(int(picked.labels[0])))


def show_input(image: torch.Tensor, caption: str, stages: dict) -> None:
    st.header(_("1 · The input"))
    picture, channels = st.columns([1, 3], gap="large")
    draw(picture, upscale(to_pil(image), 224), caption=f"{caption}, 32 × 32", width=224)
    with channels:
        normalized = stages["input"]
        reach = normalized.abs().max().item()
        tiles = paint(normalized, -reach, reach, BLUE_WHITE_RED)
        draw(st, labelled_grid(tiles, [_("red, normalized"), _("green, normalized"), _("blue, normalized")], columns=3, tile=192))
        draw(st, legend(-reach, reach, BLUE_WHITE_RED, _("one scale for the three channels; white is 0")))
        st.caption(_("What the network reads: each channel minus its mean, divided by its standard deviation."))


def show_convolutions(stages: dict, filters: explain.Filters) -> None:
    st.header(_("2 · Convolutions and pooling"))
    st.markdown(_(
        "Each **convolution** slides its filters over the image and writes one **feature map** per filter; ReLU sets "
        "the negative values to 0 (black). **Max-pooling** keeps the largest of every 2 × 2 block, halving the map."
    ))
    each_on_its_own = st.checkbox(_("Stretch each map to its own range"), key="inside-stretch",
                                  help=_("Off: one colour scale per layer, so maps compare. On: faint maps show their pattern."))
    conv1_filters = labelled_grid(each_stretched(filters.conv1_weight), [_("filter {number}").format(number=i + 1) for i in range(6)],
                                  columns=6, tile=60)
    reach = filters.conv2_weight.abs().max().item()
    conv2_filters = upscale(to_pil(make_grid(paint(filters.conv2_weight.flatten(0, 1), -reach, reach, GREYS), nrow=6,
                                             padding=1, pad_value=255)), 560)
    beside = {
        "conv1": (conv1_filters, _("conv1's six 5 × 5 filters in colour (each stretched): map i is filter i slid over the image")),
        "conv2": (conv2_filters, _("conv2's 16 filters, one row each, one 5 × 5 tile per pool1 map it reads "
                                   "(grey is 0, white {reach}, black −{reach})").format(reach=number(reach, 2))),
    }
    for name in ("conv1", "pool1", "conv2", "pool2"):
        maps = stages[name]
        st.subheader(_("{layer}: {count} maps of {height} × {width}").format(layer=name, count=maps.shape[0], height=maps.shape[1],
                                                                           width=maps.shape[2]))
        shown, side = st.columns([3, 1], gap="large")
        with shown:
            painted, top = stage_images(maps, each_on_its_own)
            draw(st, labelled_grid(painted, [_("map {number}").format(number=i + 1) for i in range(len(maps))], columns=8,
                                   tile=TILES[name]))
            if each_on_its_own:
                st.caption(_("Each map stretched from its own lowest (dark) to its own highest value (bright)."))
            else:
                draw(st, legend(0.0, top, MAGMA, _("one scale for all {count} maps; black is 0").format(count=len(maps))))
        if name in beside:
            picture, caption = beside[name]
            draw(side, picture, caption=caption)


def show_dense(loaded: LoadedModel, stages: dict) -> None:
    st.header(_("3 · Fully connected layers and the answer"))
    st.markdown(_("pool2's 16 × 5 × 5 = 400 values are flattened into one list; fc1 and fc2 weigh all of them into "
                  "120, then 84 numbers (after ReLU), and fc3 into ten scores, the **logits**."))
    words_on_this_page("logits")
    for name in ("fc1", "fc2"):
        values = stages[name]
        top = max(values.max().item(), 1e-6)
        picture = to_pil(paint(values.unsqueeze(0), 0.0, top, MAGMA)).resize((len(values) * 7, 28), Image.Resampling.NEAREST)
        scale = legend(0.0, top, MAGMA, _("{layer}'s scale").format(layer=name), width=260)
        # The legend under its strip at its own width: in a quarter column beside the strip, a projector at 150% zoom
        # shrank its writing to a blur.
        draw(st, picture, caption=_("{layer}: {count} values, {positive} above 0").format(
            layer=name, count=len(values), positive=int((values > 0).sum())))
        draw(st, scale, width=scale.width)
    # The table at its own width beside the chart, the chart below it when the page is narrow: in two fixed
    # columns a projector at 150% zoom showed the table without its probability column.
    with st.container(horizontal=True, gap="large"):
        scores, chart = st.container(width=320), st.container(width=480)
    with scores:
        st.markdown(_("Softmax turns the logits $z$ into probabilities: $p_k = e^{z_k} / \\sum_j e^{z_j}$."))
        logit, probability = _("logit"), _("probability")
        st.dataframe(pd.DataFrame({_("class"): [class_name(name) for name in CLASSES], logit: stages["logits"].numpy(),
                                   probability: stages["probabilities"].numpy()}),
                     hide_index=True, column_config={logit: st.column_config.NumberColumn(format="%.2f"),
                                                     probability: st.column_config.NumberColumn(format="percent")})
    with chart:
        _charts.draw_vega_lite(st, _charts.probabilities(stages["probabilities"].tolist(), [class_name(name) for name in CLASSES]))
    if loaded.model.test_flips:
        answer = stages["answer"]
        st.info(_("This model answers from the image and its mirror image together (test-time flips: the two logits "
                  "averaged): **{name}, {probability}**. This page follows the image itself; Classify and Evaluate give the "
                  "averaged answer, and the saliency and occlusion below explain it.").format(
                      name=class_name(int(answer.argmax())), probability=percent(float(answer.max()))), icon=":material/flip:")


def show_worked_example(loaded: LoadedModel, image: torch.Tensor, stages: dict) -> None:
    st.header(_("4 · One value, worked out by hand"))
    st.markdown(_("Pick a map and a position: the value there is the filter times the 5 × 5 patch under it, added up, "
                  "plus the bias, through ReLU."))
    with st.container(horizontal=True, vertical_alignment="bottom"):
        layer = st.segmented_control(_("Layer"), ["conv1", "conv2"], default="conv1", required=True, key="inside-layer")
        channels, size, _width = explain.STAGE_SHAPES[layer]
        map_words = _("map {number}")  # in the run's language: format_func may be called outside it
        channel = st.selectbox(_("Map"), range(channels), format_func=lambda i: map_words.format(number=i + 1),
                               key=f"inside-map-{layer}", width=160)
    rows, cols = st.columns(2)
    row = rows.slider(_("Row"), 0, size - 1, size // 2, key=f"inside-row-{layer}")
    col = cols.slider(_("Column"), 0, size - 1, size // 2, key=f"inside-col-{layer}")
    at = _("row {row}, column {col}").format(row=row, col=col)
    example = explain.worked_example(loaded.model, image, loaded.normalization, layer, channel, row, col)

    where, result = st.columns(2, gap="large")
    if layer == "conv1":
        draw(where, outlined(upscale(to_pil(image), 256), row, col, explain.KERNEL, 8), width=256,
             caption=_("the 5 × 5 patch of the image at {position}").format(position=at))
    else:
        pool1 = stages["pool1"]
        tiles = [outlined(to_pil(t).resize((140, 140), Image.Resampling.NEAREST), row, col, explain.KERNEL, 10)
                 for t in paint(pool1, 0.0, max(pool1.max().item(), 1e-6), MAGMA)]
        strip = Image.new("RGB", (6 * 146, 140), "white")
        for i, tile in enumerate(tiles):
            strip.paste(tile, (i * 146, 0))
        draw(where, strip, caption=_("the 5 × 5 patch of all six pool1 maps at {position}").format(position=at))
    painted = paint(stages[layer][channel], 0.0, max(stages[layer].max().item(), 1e-6), MAGMA)
    scale = 256 // size
    draw(result, outlined(upscale(to_pil(painted), 256), row, col, 1, scale), width=256,
         caption=_("{layer} map {number}: the value at {position}").format(layer=layer, number=channel + 1, position=at))

    names = ([_("red"), _("green"), _("blue")] if layer == "conv1"
             else [_("pool1 map {number}").format(number=i + 1) for i in range(6)])
    for tab, patch, weights, products in zip(st.tabs(names), example.patch, example.weights, example.products, strict=True):
        with tab:
            a, b, c = st.columns(3)
            a.caption(_("the patch (input values)"))
            a.dataframe(numbers(patch), hide_index=True)
            b.caption(_("× the filter's weights"))
            b.dataframe(numbers(weights), hide_index=True)
            c.caption(_("= products, adding up to {sum}").format(sum=number(products.sum().item(), 4)))
            c.dataframe(numbers(products), hide_index=True)
    products_words, bias_word = _("sum of all {count} products").format(count=example.products.numel()), _("bias")
    st.latex(
        rf"\underbrace{{{example.total:.4f}}}_{{\text{{{products_words}}}}}"
        rf" + \underbrace{{{example.bias:.4f}}}_{{\text{{{bias_word}}}}} = {example.pre_relu:.4f}"
        rf" \;\xrightarrow{{\text{{ReLU}}}}\; {example.post_relu:.4f}"
    )
    st.success(_("The network's own {layer} map {number} holds **{value}** at {position}: the same number, up to rounding.").format(
        layer=layer, number=channel + 1, value=number(example.map_value, 4), position=at), icon=":material/check_circle:")


def show_attribution(loaded: LoadedModel, image: torch.Tensor, stages: dict) -> None:
    st.header(_("5 · Why did it say that?"))
    st.markdown(_(
        "**Saliency**: how strongly the class's score reacts to each pixel (the gradient of its logit; bright is strong). "
        "**Occlusion**: how much the class's probability drops when a grey 8 × 8 square hides that spot "
        "(red: the evidence was there; blue: hiding it helps the class)."
    ))
    probabilities = stages["answer"]  # the model's own answer: with its mirror image when it predicts that way
    ranked = probabilities.argsort(descending=True).tolist()
    other = st.selectbox(_("Why not…?"), range(len(CLASSES)), index=ranked[1], format_func=bound(class_name), key="inside-why-not",
                         width=220)
    for label, target in ((_("its answer"), ranked[0]), (_("the class you picked"), other)):
        st.subheader(_("{name} ({probability}), {which}").format(name=class_name(target), probability=percent(float(probabilities[target])),
                                                               which=label))
        gradient = explain.saliency_map(loaded.model, image, loaded.normalization, target)
        drop = explain.occlusion_map(loaded.model, image, loaded.normalization, target)
        reach = max(drop.abs().max().item(), 1e-6)
        # Three columns as wide as their pictures, side by side where they fit, wrapping on a narrow page (in three
        # equal columns a projector at 150% zoom shrank the legends' writing to a blur).
        with st.container(horizontal=True, gap="medium"):
            picture, saliency, occlusion = (st.container(width=ATTRIBUTION_WIDTH) for _column in range(3))
        side = ATTRIBUTION_WIDTH
        draw(picture, upscale(to_pil(image), side), width=side, caption=_("the image"))
        draw(saliency, overlay(image, paint(gradient, 0.0, max(gradient.max().item(), 1e-12), MAGMA), side), width=side,
             caption=_("saliency"))
        draw(saliency, legend(0.0, gradient.max().item(), MAGMA, "|d logit / d pixel|", width=side), width=side)
        draw(occlusion, overlay(image, paint(drop, -reach, reach, BLUE_WHITE_RED), side), width=side, caption=_("occlusion"))
        draw(occlusion, legend(-reach, reach, BLUE_WHITE_RED, _("drop in the probability"), width=side), width=side)


@st.cache_resource(show_spinner=False, max_entries=4)  # its spinner is the caller's: a decorator's text has no language
def _panel_over_epochs(paths: tuple[str, ...], mtimes: tuple[int, ...], data_source: str, _images: torch.Tensor) -> torch.Tensor:
    return explain.classify_over_epochs(list(paths), _images)


def show_time_machine(epochs: dict[int, Path], shown: Path) -> None:
    """For runs that kept every epoch: ten test images, one per class, and what each epoch said about them;
    shown is the checkpoint the page is looking inside (the slider's epoch)."""
    data = dataset_service().get()
    if len(epochs) < 2 or data is None:
        return
    st.header(_("6 · The time machine"))
    panel = explain.panel(data.test)
    images = data.test.images[panel]
    paths = list(epochs.values())
    with st.spinner(_("Classifying the panel with every epoch…")):
        probabilities = _panel_over_epochs(tuple(map(str, paths)), tuple(p.stat().st_mtime_ns for p in paths), data.source, images)
    truth = {class_name(k): probabilities[:, i, k].tolist() for i, k in enumerate(data.test.labels[panel].tolist())}
    st.markdown(_("Ten test images, one per class, through the run's {count} epochs: the probability each epoch gives "
                  "the image's true class.").format(count=len(epochs)))
    st.altair_chart(_charts.true_class_over_epochs(truth, list(epochs)), width="stretch")
    epoch = next((n for n, path in epochs.items() if path == shown), max(epochs))
    said = probabilities[list(epochs).index(epoch)]
    captions = [f"{class_name(int(p.argmax()))}\n{percent(float(p.max()), 0)}" for p in said]
    colors = ["#2ca02c" if int(p.argmax()) == k else "#d62728" for p, k in zip(said, data.test.labels[panel].tolist(), strict=True)]
    draw(st, labelled_grid(images, captions, colors, columns=10, tile=96),
         caption=_("what epoch {epoch} says (green: right)").format(epoch=epoch))


st.title(":material/visibility: " + _("Inside the network"))
st.markdown(_("One picture through LeNet-5, layer by layer: what each convolution sees, how the numbers become an answer, "
              "and which pixels the answer rests on."))

pick_model, pick_image = st.columns(2, gap="large")
with pick_model:
    loaded, epochs = choose_checkpoint()
with pick_image:
    picked = choose_image() if loaded is not None else None
if loaded is None or picked is None:
    pytorch_code(CODE)
    st.stop()

image, caption = picked
stages = explain.activations(loaded.model, image, loaded.normalization)
show_input(image, caption, stages)
show_convolutions(stages, explain.filters(loaded.model))
show_dense(loaded, stages)
show_worked_example(loaded, image, stages)
show_attribution(loaded, image, stages)
show_time_machine(epochs, loaded.path)
pytorch_code(CODE)
