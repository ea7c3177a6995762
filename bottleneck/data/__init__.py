"""Image sources: layouts, manifest (ids, labels, splits, content hashes), decoding to RGB uint8 and resizing.

Submodules: ``manifest`` (Item, Manifest, val split), ``decode`` (files and array rows to RGB, resize),
``files`` (class folders, CSV), ``array_sources`` (.h5, .npz, .npy, IDX), ``source`` (detection, open_source, reading).
No TensorFlow here: the cache-hit path imports this package.
"""

from bottleneck.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, decode_image, resize_image
from bottleneck.data.manifest import SPLIT_ORDER, Item, Manifest
from bottleneck.data.reads import load_image
from bottleneck.data.source import Source, find_bad_images, open_source

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_ORDER",
    "ImageDecodeError",
    "Item",
    "Manifest",
    "Source",
    "decode_image",
    "find_bad_images",
    "load_image",
    "open_source",
    "resize_image",
]
