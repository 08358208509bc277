"""Captions of the cartoon faces of training/faces.py, and the word-level tokenizer that reads them.

Every attribute the generator draws that a caption can name is named: the mouth (smiling or frowning), the glasses
(with or without), the hair (its colour, or bald), the skin tone and the background colour, e.g. "a smiling cartoon
face with glasses, brown hair and fair skin on a blue background". Position and size are left unsaid: the model
draws them at random. The words of each template come in random orders, so that the text encoder learns the
words rather than their places.

The tokenizer is a CLIPTokenizer (byte-level BPE, as Stable Diffusion's) whose vocabulary holds every caption word
whole: each word w is the token "w</w>", reached from its characters by merges that write_tokenizer derives, so a
caption of n words is n ids between <|startoftext|> and <|endoftext|>.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from training import faces

MOUTHS = ("frowning", "smiling")  # index = curvature > 0
MOUTH_NOUNS = ("a frown", "a smile")
SKIN_NAMES = ("pale", "fair", "medium", "tan", "dark")  # faces.SKINS, light to dark
HAIR_NAMES = ("black", "brown", "blond", "red")  # faces.HAIRS
BACKGROUND_NAMES = ("blue", "green", "purple", "grey", "teal")  # faces.BACKGROUNDS
START, END = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77  # Stable Diffusion's text length: captions are padded with END to it

VOCAB = (",", "a", "and", "background", "bald", "cartoon", "face", "glasses", "hair", "no", "on", "skin", "with",
         "without", *MOUTHS, "frown", "smile", *SKIN_NAMES, *HAIR_NAMES, *BACKGROUND_NAMES)


def palette_index(color: torch.Tensor, palette: tuple) -> int:
    """The index of the palette colour nearest to color (3,) in RGB."""
    return int((torch.tensor(palette) - color).norm(dim=1).argmin())


def attributes(face: faces.Faces, i: int) -> dict[str, str]:
    """The named attributes of face i of a batch: mouth, glasses ("glasses" or "no glasses"), hair (a colour or
    "bald"), skin and background."""
    return dict(
        mouth=MOUTHS[int(face.curvature[i] > 0)],
        glasses="glasses" if face.glasses[i] else "no glasses",
        hair=HAIR_NAMES[palette_index(face.hair_color[i], faces.HAIRS)] if face.hair[i] else "bald",
        skin=SKIN_NAMES[palette_index(face.skin[i], faces.SKINS)],
        background=BACKGROUND_NAMES[palette_index(face.background[i], faces.BACKGROUNDS)],
    )


def phrases(named: dict[str, str], no_glasses: str) -> dict[str, str]:
    """Each attribute as a noun phrase that can follow "with" or stand in a list: "glasses" / no_glasses,
    "brown hair" / "no hair", "fair skin", "a smile" / "a frown", "blue background"."""
    return dict(
        mouth=MOUTH_NOUNS[MOUTHS.index(named["mouth"])],
        glasses="glasses" if named["glasses"] == "glasses" else no_glasses,
        hair="no hair" if named["hair"] == "bald" else f"{named['hair']} hair",
        skin=f"{named['skin']} skin",
        background=f"{named['background']} background",
    )


def listed(items: list[str], rng: random.Random) -> str:
    """Items joined as "x, y and z" or "x, y, z"."""
    if len(items) > 1 and rng.random() < 0.5:
        return ", ".join(items[:-1]) + " and " + items[-1]
    return ", ".join(items)


def caption(named: dict[str, str], rng: random.Random) -> str:
    """One caption naming every attribute, in one of four templates, the attributes in a random order:
    "a smiling cartoon face with glasses, brown hair and fair skin on a blue background",
    "a frowning face, red hair, without glasses, green background, fair skin",
    "a cartoon face with a smile, fair skin and no hair on a grey background",
    "teal background, a bald frowning face with glasses and tan skin"."""
    template = rng.randrange(4)
    said = phrases(named, rng.choice(("no glasses", "without glasses")) if template == 1 else "no glasses")
    face = rng.choice(("cartoon face", "face"))
    bald = named["hair"] == "bald"
    if template == 0:  # the mouth as an adjective, the rest after "with", the background last
        adjective, keys = named["mouth"], ["glasses", "hair", "skin"]
    elif template == 1:  # a list of everything after the face
        adjective, keys = named["mouth"], ["glasses", "hair", "skin", "background"]
    elif template == 2:  # the mouth as a noun, the background last
        adjective, keys = "", ["mouth", "glasses", "hair", "skin"]
    else:  # the background first, baldness as an adjective
        adjective, keys = ("bald " if bald else "") + named["mouth"], ["glasses", "skin"] + ([] if bald else ["hair"])
    items = [said[k] for k in keys]
    rng.shuffle(items)
    subject = " ".join(w for w in ("a", adjective, face) if w)
    if template == 1:
        return f"{subject}, {', '.join(items)}"
    if template == 3:
        return f"{said['background']}, {subject} with {listed(items, rng)}"
    return f"{subject} with {listed(items, rng)} on a {said['background']}"


def captions(batch: faces.Faces, rng: random.Random) -> list[str]:
    """One caption per face of a batch."""
    return [caption(attributes(batch, i), rng) for i in range(len(batch.curvature))]


def symbols(word: str) -> tuple[str, ...]:
    """A word as the BPE starts it: its characters, the last one marked as a word's end."""
    return (*word[:-1], word[-1] + "</w>")


def apply_merges(word: str, ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """CLIP's BPE on one word: merge the best-ranked adjacent pair everywhere, until no pair has a rank."""
    parts = symbols(word)
    while len(parts) > 1:
        pairs = [p for p in zip(parts, parts[1:]) if p in ranks]
        if not pairs:
            break
        first, second = min(pairs, key=ranks.get)
        merged, i = [], 0
        while i < len(parts):
            if parts[i:i + 2] == (first, second):
                merged.append(first + second)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = tuple(merged)
    return parts


def derive_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Merges under which every word is one symbol: for each word in turn, while the merges so far leave it in
    pieces, join its first two pieces (a new merge ranks last, so it never changes a word already whole)."""
    merges: list[tuple[str, str]] = []
    for word in words:
        while len(parts := apply_merges(word, {m: k for k, m in enumerate(merges)})) > 1:
            merges.append(parts[:2])
    return merges


def write_tokenizer(folder: Path) -> Path:
    """vocab.json (the specials, every character, every merge's result; the words are "word</w>") and merges.txt,
    then the CLIPTokenizer's own files (tokenizer_config.json, special_tokens_map.json) beside them."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = derive_merges(VOCAB)
    characters = sorted({s for word in VOCAB for s in symbols(word)} | {c for word in VOCAB for c in word})
    tokens = [START, END, *characters, *dict.fromkeys("".join(m) for m in merges)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(dict.fromkeys(tokens))}, indent=1))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_LENGTH, pad_token=END).save_pretrained(folder)
    return folder


def hair_color(image: torch.Tensor, seen: faces.Measurement) -> torch.Tensor:
    """The commonest of the colours furthest from the skin in the top of the measured face (v < -HAIR_LINE[0],
    pixels wholly inside the disc), as measure picks the hair's: not the hair line's mixtures, (3,H,W) -> (3,)."""
    size = image.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    u, v = (xs - seen.center[0]) / seen.radius, (ys - seen.center[1]) / seen.radius
    off_skin = (image - torch.tensor(seen.skin)[:, None, None]).norm(dim=0)
    top = (v < -faces.HAIR_LINE[0]) & ((u**2 + v**2).sqrt() < 1 - 0.75 / seen.radius) & (off_skin > faces.FOREGROUND)
    if not top.any():
        return torch.tensor(seen.skin)
    return faces.commonest_color(image[:, top & (off_skin >= 0.8 * off_skin[top].max())])


def read_attributes(image: torch.Tensor) -> dict[str, str]:
    """The named attributes of an image (3,H,W) in [0,1] as training.faces.measure reads them, each colour named
    after the nearest palette colour: the counterpart of attributes() for a drawn or sampled face."""
    image = image.detach().float().cpu().clamp(0, 1)
    seen = faces.measure(image)
    hair = HAIR_NAMES[palette_index(hair_color(image, seen), faces.HAIRS)] if seen.hair else "bald"
    return dict(
        mouth=MOUTHS[int(seen.curvature > 0)],
        glasses="glasses" if seen.glasses else "no glasses",
        hair=hair,
        skin=SKIN_NAMES[palette_index(torch.tensor(seen.skin), faces.SKINS)],
        background=BACKGROUND_NAMES[palette_index(torch.tensor(seen.background), faces.BACKGROUNDS)],
    )
