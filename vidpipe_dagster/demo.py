"""The demo projects, built offline and deterministically in code.

``launch-day`` has a manifest: an astronaut (a real public-domain NASA photo that
scikit-image ships, with a face crop), a robot, a helmet prop, a rover, two environments, and
scenes covering every shot type plus one scene that places an undeclared tag. ``legacy-teaser``
has no manifest, to show that projects without one behave as before (frames, target duration).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

DEMO_SLUGS = ("launch-day", "legacy-teaser")
FRAME_SIZE = (640, 360)


def _astronaut() -> Image.Image:
    from skimage import data  # a public-domain photo shipped with scikit-image: no download

    return Image.fromarray(data.astronaut()).convert("RGB")


def _gradient(
    size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> Image.Image:
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    rows = (1 - t) * np.array(top)[None, None, :] + t * np.array(bottom)[None, None, :]
    return Image.fromarray(np.repeat(rows, w, axis=1).astype(np.uint8), "RGB")


def _robot() -> Image.Image:
    img = _gradient((384, 512), (205, 214, 220), (150, 160, 170))
    d = ImageDraw.Draw(img)
    d.rectangle((132, 70, 252, 170), fill=(70, 130, 180), outline=(20, 40, 60), width=4)  # head
    d.ellipse((160, 100, 185, 125), fill=(255, 220, 0))
    d.ellipse((200, 100, 225, 125), fill=(255, 220, 0))
    d.rectangle((112, 180, 272, 360), fill=(60, 110, 160), outline=(20, 40, 60), width=4)  # body
    d.rectangle((80, 190, 110, 330), fill=(90, 90, 100))
    d.rectangle((274, 190, 304, 330), fill=(90, 90, 100))
    d.rectangle((130, 362, 175, 480), fill=(90, 90, 100))
    d.rectangle((209, 362, 254, 480), fill=(90, 90, 100))
    return img


def _helmet() -> Image.Image:
    img = _gradient((320, 320), (235, 235, 230), (190, 190, 185))
    d = ImageDraw.Draw(img)
    d.ellipse((50, 40, 270, 280), fill=(245, 245, 245), outline=(120, 120, 120), width=5)
    d.ellipse((90, 100, 230, 220), fill=(25, 30, 45))
    d.ellipse((110, 115, 150, 150), fill=(200, 210, 230))
    return img


def _rover() -> Image.Image:
    img = _gradient((480, 320), (230, 200, 170), (180, 140, 110))
    d = ImageDraw.Draw(img)
    d.rectangle((90, 120, 390, 200), fill=(230, 230, 235), outline=(60, 60, 60), width=4)
    d.rectangle((170, 70, 300, 120), fill=(200, 200, 210), outline=(60, 60, 60), width=3)
    for x in (110, 210, 310):
        d.ellipse((x, 190, x + 60, 250), fill=(40, 40, 40))
    return img


def _launch_pad() -> Image.Image:
    img = _gradient((768, 432), (120, 170, 230), (250, 200, 150))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 330, 768, 432), fill=(90, 90, 95))
    d.rectangle((470, 90, 520, 330), fill=(235, 235, 240), outline=(80, 80, 80), width=3)
    d.polygon([(470, 90), (495, 40), (520, 90)], fill=(200, 60, 50))
    d.rectangle((540, 120, 560, 330), fill=(150, 60, 40))
    for y in range(130, 330, 24):
        d.line((540, y, 560, y + 20), fill=(90, 40, 30), width=2)
    return img


def _mission_control() -> Image.Image:
    img = _gradient((768, 432), (30, 40, 60), (15, 20, 30))
    d = ImageDraw.Draw(img)
    for i in range(6):
        x = 40 + i * 120
        d.rectangle(
            (x, 80, x + 100, 160), fill=(20, 80 + i * 20, 120), outline=(150, 200, 255), width=2
        )
    d.rectangle((0, 300, 768, 432), fill=(60, 60, 70))
    return img


def _keyframe(
    background: Image.Image, actor: Image.Image | None, x_frac: float, scale: float
) -> Image.Image:
    frame = background.resize(FRAME_SIZE, Image.Resampling.LANCZOS)
    if actor is not None:
        w = int(FRAME_SIZE[1] * scale * actor.width / actor.height)
        h = int(FRAME_SIZE[1] * scale)
        sprite = actor.resize((w, h), Image.Resampling.LANCZOS)
        mask = Image.new("L", sprite.size, 0)
        ImageDraw.Draw(mask).ellipse((0, 0, w, h), fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(6))
        x = int((FRAME_SIZE[0] - w) * x_frac)
        frame.paste(sprite, (x, FRAME_SIZE[1] - h), mask)
    return frame


def write_demo_projects(out_dir: Path) -> list[Path]:
    """Write both demo specs with their images under ``out_dir``; returns the spec paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    astronaut = _astronaut()
    images = {
        "img/astronaut.png": astronaut,
        "img/astronaut_face.png": astronaut.crop((150, 10, 310, 200)),
        "img/robot.png": _robot(),
        "img/helmet.png": _helmet(),
        "img/rover.png": _rover(),
        "img/launch_pad.png": _launch_pad(),
        "img/mission_control.png": _mission_control(),
    }
    pad, control = images["img/launch_pad.png"], images["img/mission_control.png"]
    frames = {
        "frames/0_start.png": _keyframe(pad, None, 0.5, 0.0),
        "frames/0_end.png": _keyframe(pad, astronaut, 0.1, 0.5),
        "frames/1_start.png": _keyframe(pad, astronaut, 0.1, 0.6),
        "frames/1_end.png": _keyframe(pad, astronaut, 0.6, 0.6),
        "frames/2_start.png": _keyframe(control, images["img/robot.png"], 0.3, 0.8),
        "frames/2_end.png": _keyframe(control, images["img/robot.png"], 0.5, 0.8),
        "frames/3_start.png": _keyframe(pad, images["img/astronaut_face.png"], 0.5, 0.95),
        "frames/3_end.png": _keyframe(pad, images["img/astronaut_face.png"], 0.5, 1.0),
        "frames/4_start.png": _keyframe(control, astronaut, 0.2, 0.8),
        "frames/4_end.png": _keyframe(control, images["img/robot.png"], 0.7, 0.8),
        "frames/5_start.png": _keyframe(pad, images["img/rover.png"], 0.0, 0.4),
        "frames/5_end.png": _keyframe(pad, images["img/rover.png"], 0.8, 0.4),
        "frames/6_start.png": _keyframe(pad, images["img/astronaut_face.png"], 0.5, 1.0),
        "frames/6_end.png": _keyframe(control, images["img/astronaut_face.png"], 0.5, 1.0),
        "frames/7_start.png": _keyframe(control, images["img/robot.png"], 0.0, 0.9),
        "frames/7_end.png": _keyframe(control, images["img/robot.png"], 0.1, 0.9),
    }
    for rel, img in {**images, **frames}.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="PNG")

    def scene(index: int, prompt: str, shot: str, placements: list[dict[str, str]]) -> dict:
        return {
            "index": index,
            "prompt": prompt,
            "start_frame": f"frames/{index}_start.png",
            "end_frame": f"frames/{index}_end.png",
            "manifest": {
                "composition": {"shot_type": shot, "camera_movement": "slow_push"},
                "placements": placements,
            },
        }

    launch_day = {
        "project": {
            "slug": "launch-day",
            "name": "Launch day (demo)",
            "target_clip_duration": 6,
            "aspect_ratio": "16:9",
            "video_model": "veo-3.1-generate-001",
        },
        "manifest": {
            "name": "launch day cast",
            "assets": [
                {
                    "id": "astronaut",
                    "tag": "CHAR_01",
                    "type": "CHARACTER",
                    "name": "Commander",
                    "image": "img/astronaut.png",
                    "quality_score": 8.0,
                    "reverse_prompt": "astronaut, orange flight suit, short blond hair, warm smile",
                },
                {
                    "id": "astronaut_face",
                    "tag": "CHAR_01",
                    "type": "CHARACTER",
                    "image": "img/astronaut_face.png",
                    "face_crop_of": "astronaut",
                    "quality_score": 8.5,
                },
                {
                    "id": "robot",
                    "tag": "CHAR_02",
                    "type": "CHARACTER",
                    "name": "Unit-7",
                    "image": "img/robot.png",
                    "quality_score": 7.0,
                    "reverse_prompt": "boxy blue service robot with yellow eyes",
                },
                {
                    "id": "helmet",
                    "tag": "PROP_01",
                    "type": "PROP",
                    "image": "img/helmet.png",
                    "quality_score": 6.5,
                    "reverse_prompt": "white space helmet with dark visor",
                },
                {
                    "id": "rover",
                    "tag": "VEH_01",
                    "type": "VEHICLE",
                    "image": "img/rover.png",
                    "quality_score": 6.0,
                },
                {
                    "id": "launch_pad",
                    "tag": "ENV_01",
                    "type": "ENVIRONMENT",
                    "image": "img/launch_pad.png",
                    "quality_score": 7.5,
                },
                {
                    "id": "mission_control",
                    "tag": "ENV_02",
                    "type": "ENVIRONMENT",
                    "image": "img/mission_control.png",
                    "quality_score": 7.0,
                },
            ],
        },
        "scenes": [
            scene(
                0,
                "Dawn over the launch pad, the rocket waits",
                "establishing",
                [
                    {"asset_tag": "ENV_01", "role": "background", "position": "background"},
                    {"asset_tag": "VEH_01", "role": "interaction_target", "position": "left"},
                    {"asset_tag": "CHAR_01", "role": "subject", "position": "far left"},
                ],
            ),
            scene(
                1,
                "The commander walks toward the rocket",
                "wide_shot",
                [
                    {"asset_tag": "CHAR_01", "role": "subject", "position": "center"},
                    {"asset_tag": "PROP_01", "role": "interaction_target", "position": "in hand"},
                    {"asset_tag": "ENV_01", "role": "background", "position": "background"},
                ],
            ),
            scene(
                2,
                "Unit-7 runs the final checks in mission control",
                "medium_shot",
                [
                    {"asset_tag": "CHAR_02", "role": "subject", "position": "center"},
                    {"asset_tag": "ENV_02", "role": "background", "position": "background"},
                ],
            ),
            scene(
                3,
                "Close on the commander's face as she smiles",
                "close_up",
                [
                    {"asset_tag": "CHAR_01", "role": "subject", "position": "center"},
                    {"asset_tag": "ENV_01", "role": "background", "position": "background"},
                ],
            ),
            scene(
                4,
                "The commander and Unit-7 exchange a nod",
                "two_shot",
                [
                    {"asset_tag": "CHAR_01", "role": "subject", "position": "left"},
                    {"asset_tag": "CHAR_02", "role": "interaction_target", "position": "right"},
                    {"asset_tag": "ENV_02", "role": "background", "position": "background"},
                    {"asset_tag": "PROP_01", "role": "background", "position": "on the desk"},
                ],
            ),
            scene(
                5,
                "The rover leaves as a new flight director arrives",
                "wide_shot",
                [
                    {"asset_tag": "VEH_01", "role": "subject", "position": "center"},
                    {"asset_tag": "CHAR_03", "role": "interaction_target", "position": "right"},
                    {"asset_tag": "ENV_01", "role": "background", "position": "background"},
                ],
            ),
            scene(
                6,
                "Her eyes behind the visor as the countdown starts",
                "extreme_close_up",
                [
                    {"asset_tag": "CHAR_01", "role": "subject", "position": "center"},
                    {"asset_tag": "PROP_01", "role": "interaction_target", "position": "worn"},
                ],
            ),
            scene(
                7,
                "Over Unit-7's shoulder: the commander on the monitor",
                "over_the_shoulder",
                [
                    {"asset_tag": "CHAR_02", "role": "subject", "position": "foreground left"},
                    {"asset_tag": "CHAR_01", "role": "interaction_target", "position": "on screen"},
                    {"asset_tag": "ENV_02", "role": "background", "position": "background"},
                ],
            ),
        ],
    }
    legacy = {
        "project": {
            "slug": "legacy-teaser",
            "name": "Legacy teaser (demo, no manifest)",
            "target_clip_duration": 4,
            "aspect_ratio": "16:9",
            "video_model": "veo-3.1-generate-001",
        },
        "scenes": [
            {
                "index": 0,
                "prompt": "The launch pad at dawn",
                "start_frame": "frames/0_start.png",
                "end_frame": "frames/1_start.png",
            },
            {
                "index": 1,
                "prompt": "Mission control lights up",
                "start_frame": "frames/2_start.png",
                "end_frame": "frames/2_end.png",
            },
        ],
    }
    paths = []
    for name, spec in (("launch-day.yaml", launch_day), ("legacy-teaser.yaml", legacy)):
        path = out_dir / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths
