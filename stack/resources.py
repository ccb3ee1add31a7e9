"""Where the image and Compose definitions live.

stack/_data/{images,compose} link to the top-level folders in a checkout, and are
copied into the wheel, so one path works for editable and regular installs.
"""

from pathlib import Path

DATA = Path(__file__).resolve().parent / "_data"


def images_dir() -> Path:
    return DATA / "images"


def compose_file(name: str = "compose.yaml") -> Path:
    return DATA / "compose" / name
