"""Vision-language model families: how each one's images become model inputs and prompt tokens.

One adapter per family (`family.py` defines the interface, `families.py` the registry), shared by the vision
engine (captions) and the text engine (`vision_mode: native`), so neither has a family's preprocessing in its
batching loop.
"""

from .families import family_for, load_family
from .family import EncodedImage, VisionFamily

__all__ = ["EncodedImage", "VisionFamily", "family_for", "load_family"]
